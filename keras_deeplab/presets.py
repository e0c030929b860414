"""Presets: Google's published DeepLab models by name, downloaded once and imported once.

`PRESETS` holds every model of tensorflow/models research/deeplab's model zoo (g3doc/model_zoo.md, and the 8-bit
ones of g3doc/quantize.md) whose architecture the importer builds, with its file, dataset, classes and the
evaluations the page publishes; and the phone model shipped in the package (assets/published/), which needs no
download. Not presets: MobileNetV3, EdgeTPU-MobileNet and Xception-71 with the Dense Prediction Cell (backbones
and heads this project does not build), and the ImageNet-only checkpoints (backbones without a DeepLab head).

A preset's file is fetched as Keras fetches its files (`keras.utils.get_file`), into `cache_folder()`
(`$KERAS_HOME/keras_deeplab/`, `~/.keras/keras_deeplab/` by default), once; `KERAS_DEEPLAB_ZOO_URL` replaces the
zoo's address (a mirror, a local folder served over HTTP). The zoo publishes no checksums, so the file's sha256 is
recorded beside it (`NAME.tar.gz.sha256`, as `sha256sum` writes it) on first use, and a later different file is
refused. The imported model is kept beside the file (`PRESET.keras`): the next use loads it.
Nothing here imports TensorFlow until a preset is fetched, so `keras-deeplab presets` answers at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import tempfile

from keras_deeplab.files import PUBLISHED, atomic_path, make_folder, write_bytes

ZOO_URL = "http://download.tensorflow.org/models/"  # model_zoo.md's links
ZOO_URL_VARIABLE = "KERAS_DEEPLAB_ZOO_URL"
CACHE_SUBFOLDER = "keras_deeplab"
SHA256_SUFFIX = ".sha256"
MODEL_SUFFIX = ".keras"
HASH_CHUNK_BYTES = 2**20


class PresetError(ValueError):
    """A preset that is unknown, cannot be downloaded, or whose file differs from the one first recorded."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One published evaluation: output stride, scales as the page writes them ("1.0", "0.5:0.25:1.75"),
    left-right flips, mIoU in percent and the split it was measured on ("val", "test")."""

    output_stride: int
    scales: str
    flip: bool
    miou: float
    split: str


@dataclasses.dataclass(frozen=True)
class Preset:
    """A published DeepLab model.

    `file`: the name of its file under the zoo's address (a model-zoo tarball), or, `shipped`, in the package's
    assets/published/. `dataset`: the descriptor's name (descriptors.DESCRIPTORS). `num_classes`, `backbone`
    and `width_multiplier`: what the file holds (checked after the import). `output_stride`: the stride of the
    model a preset gives (the page's first evaluation; the file's own for a TFLite file); `evaluations`: the
    page's, in its order. `size`: the file's size as the page gives it. `page`: where it is published.
    """

    name: str
    file: str
    dataset: str
    num_classes: int
    backbone: str
    width_multiplier: float
    output_stride: int
    evaluations: tuple[Evaluation, ...]
    size: str
    page: str
    shipped: bool = False


MODEL_ZOO = "research/deeplab/g3doc/model_zoo.md"
QUANTIZE = "research/deeplab/g3doc/quantize.md"
SINGLE = "1.0"
VOC_SCALES = "0.5:0.25:1.75"  # also ADE20K's
CITYSCAPES_SCALES = "0.75:0.25:1.25"
VOC_CLASSES, CITYSCAPES_CLASSES = 21, 19
ADE20K_CLASSES = 151  # the official ADE20K models: the 150 classes and "other" (class 0)


def _preset(name, file, dataset, classes, backbone, width, evaluations, size, page=MODEL_ZOO) -> Preset:
    evaluations = tuple(Evaluation(*evaluation) for evaluation in evaluations)
    return Preset(name, file, dataset, classes, backbone, width, evaluations[0].output_stride, evaluations, size, page)


PRESETS = {
    preset.name: preset
    for preset in (
        _preset(
            "mobilenetv2_dm05_coco_voc_trainaug",
            "deeplabv3_mnv2_dm05_pascal_trainaug_2018_10_01.tar.gz",
            "voc",
            VOC_CLASSES,
            "mobilenetv2",
            0.5,
            [(16, SINGLE, False, 70.19, "val")],
            "7.6MB",
        ),
        _preset(
            "mobilenetv2_dm05_coco_voc_trainval",
            "deeplabv3_mnv2_dm05_pascal_trainval_2018_10_01.tar.gz",
            "voc",
            VOC_CLASSES,
            "mobilenetv2",
            0.5,
            [(8, SINGLE, False, 71.83, "test")],
            "7.6MB",
        ),
        _preset(
            "mobilenetv2_coco_voc_trainaug",
            "deeplabv3_mnv2_pascal_train_aug_2018_01_29.tar.gz",
            "voc",
            VOC_CLASSES,
            "mobilenetv2",
            1.0,
            [(16, SINGLE, False, 75.32, "val"), (8, VOC_SCALES, True, 77.33, "val")],
            "23MB",
        ),
        _preset(
            "mobilenetv2_coco_voc_trainval",
            "deeplabv3_mnv2_pascal_trainval_2018_01_29.tar.gz",
            "voc",
            VOC_CLASSES,
            "mobilenetv2",
            1.0,
            [(8, VOC_SCALES, True, 80.25, "test")],
            "23MB",
        ),
        _preset(
            "xception65_coco_voc_trainaug",
            "deeplabv3_pascal_train_aug_2018_01_04.tar.gz",
            "voc",
            VOC_CLASSES,
            "xception65",
            1.0,
            [(16, SINGLE, False, 82.20, "val"), (8, VOC_SCALES, True, 83.58, "val")],
            "439MB",
        ),
        _preset(
            "xception65_coco_voc_trainval",
            "deeplabv3_pascal_trainval_2018_01_04.tar.gz",
            "voc",
            VOC_CLASSES,
            "xception65",
            1.0,
            [(8, VOC_SCALES, True, 87.80, "test")],
            "439MB",
        ),
        _preset(
            "mobilenetv2_dm05_coco_voc_trainaug_8bit",
            "deeplabv3_mnv2_dm05_pascal_train_aug_8bit_2019_04_26.tar.gz",
            "voc",
            VOC_CLASSES,
            "mobilenetv2",
            0.5,
            [(16, SINGLE, False, 69.65, "val")],
            "8.2MB",
            QUANTIZE,
        ),
        _preset(
            "mobilenetv2_coco_voc_trainaug_8bit",
            "deeplabv3_mnv2_pascal_train_aug_8bit_2019_04_26.tar.gz",
            "voc",
            VOC_CLASSES,
            "mobilenetv2",
            1.0,
            [(16, SINGLE, False, 74.26, "val")],
            "24MB",
            QUANTIZE,
        ),
        _preset(
            "mobilenetv2_coco_cityscapes_trainfine",
            "deeplabv3_mnv2_cityscapes_train_2018_02_05.tar.gz",
            "cityscapes",
            CITYSCAPES_CLASSES,
            "mobilenetv2",
            1.0,
            [(16, SINGLE, False, 70.71, "val"), (8, CITYSCAPES_SCALES, True, 73.57, "val")],
            "23MB",
        ),
        _preset(
            "xception65_cityscapes_trainfine",
            "deeplabv3_cityscapes_train_2018_02_06.tar.gz",
            "cityscapes",
            CITYSCAPES_CLASSES,
            "xception65",
            1.0,
            [(16, SINGLE, False, 78.79, "val"), (8, CITYSCAPES_SCALES, True, 80.42, "val")],
            "439MB",
        ),
        _preset(
            "mobilenetv2_ade20k_train",
            "deeplabv3_mnv2_ade20k_train_2018_12_03.tar.gz",
            "ade20k",
            ADE20K_CLASSES,
            "mobilenetv2",
            1.0,
            [(16, SINGLE, False, 32.04, "val")],
            "24.8MB",
        ),
        _preset(
            "xception65_ade20k_train",
            "deeplabv3_xception_ade20k_train_2018_05_29.tar.gz",
            "ade20k",
            ADE20K_CLASSES,
            "xception65",
            1.0,
            [(8, VOC_SCALES, True, 45.65, "val")],
            "439MB",
        ),
        # TensorFlow's phone model, shipped in the package (assets/published/SOURCE.md): no evaluation published
        Preset(
            "deeplabv3_257_mv_gpu",
            "deeplabv3_257_mv_gpu.tflite",
            "voc",
            VOC_CLASSES,
            "mobilenetv2",
            0.5,
            8,
            (),
            "2.8MB",
            "keras_deeplab/assets/published/SOURCE.md",
            shipped=True,
        ),
    )
}


def preset(name: str) -> Preset:
    """The preset `name`; PresetError listing them for an unknown name."""
    if name not in PRESETS:
        raise PresetError(f"preset:{name}: no such preset; `keras-deeplab presets` lists them ({', '.join(PRESETS)})")
    return PRESETS[name]


def zoo_url(preset: Preset) -> str:
    """Where the preset's file is downloaded from: the zoo's address, or `KERAS_DEEPLAB_ZOO_URL`'s."""
    base = os.environ.get(ZOO_URL_VARIABLE) or ZOO_URL
    return f"{base.rstrip('/')}/{preset.file}"


def cache_folder() -> str:
    """`$KERAS_HOME/keras_deeplab` (KERAS_HOME as Keras reads it: `~/.keras` by default, `/tmp/.keras` where the
    home folder is not writable), read from the environment at each call."""
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else tempfile.gettempdir(), ".keras")
    return os.path.join(os.path.expanduser(home), CACHE_SUBFOLDER)


def source_path(preset: Preset) -> str:
    """Where the preset's published file is (or will be, once downloaded)."""
    if preset.shipped:
        return os.fspath(PUBLISHED.joinpath(preset.file))
    return os.path.join(cache_folder(), preset.file)


def model_path(preset: Preset) -> str:
    """Where the preset's imported `.keras` model is kept."""
    return os.path.join(cache_folder(), f"{preset.name}{MODEL_SUFFIX}")


def cache_state(preset: Preset) -> str:
    """What this machine holds of the preset: "shipped" or "file" (its published file), "+ .keras" (imported),
    or "no"."""
    held = "shipped" if preset.shipped else "file" if os.path.isfile(source_path(preset)) else ""
    if os.path.isfile(model_path(preset)):
        held = f"{held} + .keras" if held else ".keras"
    return held or "no"


def preset_model_file(name: str) -> str:
    """The `.keras` model of preset `name`, made on first use: its file downloaded (and its sha256 recorded),
    imported, checked against the table, rebuilt at the preset's output stride and saved beside the file."""
    chosen = preset(name)
    keras_path = model_path(chosen)
    if os.path.isfile(keras_path):
        return keras_path
    source = source_path(chosen)
    fresh = not chosen.shipped and not os.path.isfile(f"{source}{SHA256_SUFFIX}")
    if not chosen.shipped:
        fetch(chosen)
    from keras_deeplab.importing import import_weights

    try:
        model = import_weights(source)
        _check_architecture(chosen, model.build_config, source)
    except ValueError as error:
        # a file first seen now that is not the model (a mirror's error page) must not become the reference
        removed = ""
        if fresh:
            for path in (source, f"{source}{SHA256_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            removed = "; removed it and its sha256 record, so the next use downloads it again"
        reason = " ".join(str(error).split())  # one line (tarfile's errors span several)
        raise PresetError(f"preset {name}: {reason}{removed}") from error
    if model.build_config["output_stride"] != chosen.output_stride:
        model = model.with_output_stride(chosen.output_stride)
    make_folder(cache_folder())
    with atomic_path(keras_path) as temporary:
        model.save(temporary)
    print(f"preset {name}: imported {source} into {keras_path}", file=sys.stderr)
    return keras_path


def fetch(preset: Preset) -> str:
    """The preset's file in the cache folder, downloaded with `keras.utils.get_file` when it is not there yet; its
    sha256 recorded on first use and checked against the record after (PresetError for a different file)."""
    path = source_path(preset)
    if not os.path.isfile(path):
        _download(preset, path)
    _check_sha256(preset, path)
    return path


def _download(preset: Preset, path: str) -> None:
    import keras

    url = zoo_url(preset)
    make_folder(os.path.dirname(path))
    terminal = sys.stderr.isatty()
    if not terminal:  # Keras draws its progress bar wherever it prints; a log gets one line instead
        print(f"preset {preset.name}: downloading {url}", file=sys.stderr)
    interactive = keras.config.is_interactive_logging_enabled()
    try:
        # Keras prints on stdout; a command's stdout is its answer (`evaluate --json`)
        with contextlib.redirect_stdout(sys.stderr), atomic_path(path) as temporary:
            if not terminal:
                keras.config.disable_interactive_logging()
            keras.utils.get_file(os.path.basename(temporary), url, cache_subdir=os.path.dirname(temporary))
    except Exception as error:  # get_file raises a bare Exception for a failed fetch
        cause = error.__context__ if isinstance(error.__context__, OSError) else error
        reason = getattr(cause, "reason", None) or cause
        reason = getattr(reason, "strerror", None) or reason
        raise PresetError(
            f"preset {preset.name}: cannot download {url} ({reason}); put that file at {path} by hand, "
            f"or set {ZOO_URL_VARIABLE} to a mirror that has it"
        ) from error
    finally:
        if interactive:
            keras.config.enable_interactive_logging()


def _check_sha256(preset: Preset, path: str) -> None:
    digest = file_sha256(path)
    record = f"{path}{SHA256_SUFFIX}"
    if not os.path.isfile(record):
        write_bytes(record, f"{digest}  {os.path.basename(path)}\n".encode())
        print(f"preset {preset.name}: {path}: sha256 {digest}, recorded in {record}", file=sys.stderr)
        return
    with open(record, encoding="utf8") as handle:
        words = handle.read().split()
    recorded = words[0] if words else ""
    if digest != recorded:
        raise PresetError(
            f"preset {preset.name}: {path} has sha256 {digest}, not the {recorded} recorded in {record} when it "
            "was first fetched; remove both files to accept the new one"
        )


def file_sha256(path: str) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _check_architecture(preset: Preset, config: dict, source: str) -> None:
    found = (config["backbone"], float(config["width_multiplier"]), int(config["num_classes"]))
    expected = (preset.backbone, preset.width_multiplier, preset.num_classes)
    if found != expected:
        raise PresetError(
            f"{source} holds a {found[0]} x{found[1]:g} of {found[2]} classes, "
            f"not the published {expected[0]} x{expected[1]:g} of {expected[2]} classes"
        )
