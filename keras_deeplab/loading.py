"""`load_model(path)`: the one loader of a trained DeepLab, for every command that takes `--model`.

It reads a `.keras` file, a training run folder (its `model.keras`, else its latest checkpoint), a published
DeepLab (a TF1 checkpoint, model-zoo tarball, frozen graph or TFLite file, through `importing.import_weights`) or
a preset, `preset:NAME` (keras_deeplab/presets.py: downloaded and imported once, then its cached `.keras`),
checks that what it read is a DeepLab made by `build_model`, and names the file when it is not.
"""

from __future__ import annotations

import os
import zipfile

import keras
import tensorflow as tf

from keras_deeplab.checkpoints import CHECKPOINTS_FOLDER, CheckpointFolder, checkpoint_model_config
from keras_deeplab.importing import WeightImportError, import_weights
from keras_deeplab.importing.read import source_kind
from keras_deeplab.model import DeepLab, build_model
from keras_deeplab.precision import precision_policy
from keras_deeplab.presets import preset_model_file

FINAL_MODEL = "model.keras"  # inside a run folder, written when training finishes
PRESET_PREFIX = "preset:"  # `--model preset:NAME`


class ModelFileError(ValueError):
    """A model path that is missing, unreadable or not a DeepLab; the message names the path."""


def is_published(path: str | os.PathLike) -> bool:
    """True for a file of Google's published DeepLab kinds (checkpoint, tarball, frozen graph, TFLite)."""
    try:
        source_kind(os.fspath(path))
    except WeightImportError:
        return False
    return True


def is_run_folder(path: str | os.PathLike) -> bool:
    """True for a folder that training wrote (it holds model.keras or checkpoints/)."""
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, FINAL_MODEL)) or os.path.isdir(os.path.join(path, CHECKPOINTS_FOLDER))


def model_file(path: str | os.PathLike) -> str:
    """`path` itself, or for `preset:NAME` the preset's cached `.keras` file (downloaded and imported on first
    use; presets.PresetError names what fails)."""
    path = os.fspath(path)
    if path.startswith(PRESET_PREFIX):
        return preset_model_file(path[len(PRESET_PREFIX) :])
    return path


def load_model(path: str | os.PathLike, output_stride: int | None = None, precision: str = "float32") -> DeepLab:
    """A trained DeepLab from a `.keras` file, a run folder, a published DeepLab file or `preset:NAME`, optionally
    rebuilt at another `output_stride`, and in another `precision` (constants.PRECISIONS, through
    `precision_policy`), with the same weights. Raises ModelFileError (or WeightImportError, PresetError) naming
    `path` when it holds no DeepLab."""
    path = model_file(path)
    if is_published(path):
        model = import_weights(path)
    elif os.path.isdir(path):
        final_model = os.path.join(path, FINAL_MODEL)
        model = _load_keras_file(final_model) if os.path.isfile(final_model) else _load_latest_checkpoint(path)
    elif os.path.isfile(path):
        model = _load_keras_file(path)
    else:
        raise ModelFileError(f"{path}: no such model file or run folder")
    changes = {}
    if output_stride is not None and output_stride != model.build_config["output_stride"]:
        changes["output_stride"] = output_stride
    policy = precision_policy(precision)
    if changes or policy != model.dtype_policy.name:
        model = model.rebuilt(policy, **changes)
    return model


def from_preset(name: str, output_stride: int | None = None, precision: str = "float32") -> DeepLab:
    """The published DeepLab of preset `name` (`keras-deeplab presets` lists them), as `load_model` gives it:
    downloaded and imported on first use, loaded from the cache after."""
    return load_model(f"{PRESET_PREFIX}{name}", output_stride, precision)


def _load_keras_file(path: str) -> DeepLab:
    if not path.endswith(".keras"):
        raise ModelFileError(f"{path}: expected a Keras model file ending in .keras, or a training run folder")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is there but damaged
        raise ModelFileError(
            f"{path}: damaged or not a .keras model file (a .keras file is a zip archive; this is not one)"
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise ModelFileError(f"{path}: not a readable .keras model file ({type(error).__name__}: {error})") from error
    if not isinstance(model, DeepLab):
        raise ModelFileError(f"{path}: holds a {type(model).__name__}, not a DeepLab model made by build_model")
    return model


def _load_latest_checkpoint(run_dir: str) -> DeepLab:
    folder = CheckpointFolder(os.path.join(run_dir, CHECKPOINTS_FOLDER), keep=1, writer=False)
    if not folder.steps():
        raise ModelFileError(f"{run_dir}: a folder with neither {FINAL_MODEL} nor a checkpoint in checkpoints/")
    checkpoint_path = folder.path(folder.steps()[-1])
    model = build_model(**{**checkpoint_model_config(checkpoint_path), "sync_batch_norm": False})
    status = tf.train.Checkpoint(model=model).read(os.path.join(checkpoint_path, "ckpt"))
    status.expect_partial().assert_existing_objects_matched()
    return model
