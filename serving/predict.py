"""`keras-deeplab predict`: class maps of image files from a .keras file, a SavedModel folder, a .tflite, .onnx
or OpenVINO .xml file.

For each image it writes `DIR/<stem>.png`, a palette PNG (VOC colour map) whose pixel indices are the class
ids at the image's own size, and `DIR/<stem>_overlay.jpg` with a legend strip below it (the classes present, their
colours and shares of the pixels). Images are decoded as the exported graph decodes
them (`tf.io.decode_image`, RGB), so `predict`, `serve` and TF Serving see the same pixels; the header is read
first (format and size, refused over the pixel limit before decoding), and the EXIF orientation is applied, so
masks and overlays match the photo as it is displayed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from keras_deeplab import constants
from keras_deeplab.crf import dense_crf
from keras_deeplab.descriptors import DatasetDescriptor, model_descriptor
from keras_deeplab.files import make_folder
from keras_deeplab.inference import PredictLogits, class_probabilities
from keras_deeplab.layers import on_tensorflow
from keras_deeplab.loading import is_run_folder, load_model, model_file
from keras_deeplab.visualize import Palette, overlay, save_image_atomically, save_palette_png, with_legend
from pipelines.image_header import ACCEPTED_IMAGE_FORMATS, PixelLimitError, apply_orientation, read_image_header
from serving.engines import PRECISION_HINTS, EngineModel, is_engine_file
from serving.export import tf_error_message
from serving.settings import DEFAULT_MAX_PIXELS, model_versions, predict_max_pixels
from serving.tflite import TFLiteModel

OVERLAY_ALPHA = 0.5
OVERLAY_JPEG_QUALITY = 90


@dataclass(frozen=True)
class Predictor:
    """A loaded model: `predict_logits` maps RGB [0, 255] (B, H, W, 3) to logits (B, h, w, C)."""

    predict_logits: PredictLogits
    description: str
    num_classes: int
    fixed_input_size: int | None = None  # a TFLite model's one input size; None: any size
    mean_pixel: tuple[float, ...] = constants.MEAN_PIXEL_RGB  # what `--fit-to` pads with (a DeepLab's own)


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, bytes]:
    """(RGB uint8 (H, W, 3) as displayed, encoded bytes of that image) of a JPEG, PNG, GIF or BMP file.

    The header is read first: another format, or more than `max_pixels` (height x width), is refused before
    anything is decoded. The EXIF orientation is applied (see decode_photo). ValueError naming the file."""
    path = os.fspath(path)
    with open(path, "rb") as file:
        encoded = file.read()
    try:
        return decode_photo(encoded, max_pixels)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def decode_photo(encoded: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, bytes]:
    """(RGB uint8 (H, W, 3) as displayed, encoded bytes of that image) of an encoded JPEG, PNG, GIF or BMP.

    Decoded as the exported graph decodes (`tf.io.decode_image`), after `read_image_header` has checked its
    format and size. A photo with an EXIF orientation comes back turned as displayed, with PNG bytes of the
    turned pixels (the graph and TF Serving ignore EXIF); any other comes back with its own bytes. ValueError
    (without a file name) when it is refused or cannot be decoded."""
    header = read_image_header(encoded, max_pixels)
    try:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError as error:
        accepted = ", ".join(ACCEPTED_IMAGE_FORMATS)
        raise ValueError(f"not a readable {accepted} image ({tf_error_message(error)})") from error
    if header.orientation == 1:
        return image, encoded
    image = apply_orientation(image, header.orientation)
    return image, tf.io.encode_png(image).numpy()


def write_outputs(
    out_dir: str | os.PathLike,
    image_path: str | os.PathLike,
    image: np.ndarray,
    class_map: np.ndarray,
    palette: Palette = None,
    legend: bool = True,
) -> tuple[str, str]:
    """Write `<stem>.png` (palette PNG of `class_map`) and `<stem>_overlay.jpg` into `out_dir`; return both paths.

    `palette`: the dataset's descriptor (or an array of colours; see keras_deeplab.visualize), default VOC's.
    `legend`: the overlay carries a strip below it naming the classes present, their colours and shares
    (`visualize.legend_strip`; class names from the descriptor, so an array palette takes `legend=False`).
    """
    if legend and not (palette is None or isinstance(palette, DatasetDescriptor)):
        raise ValueError("an overlay's legend names classes from a dataset descriptor; pass one, or legend=False")
    stem = os.path.splitext(os.path.basename(os.fspath(image_path)))[0]
    mask_path = os.path.join(out_dir, f"{stem}.png")
    overlay_path = os.path.join(out_dir, f"{stem}_overlay.jpg")
    save_palette_png(mask_path, class_map, palette)
    blended = overlay(image, class_map, OVERLAY_ALPHA, palette)
    if legend:
        blended = with_legend(blended, class_map, palette)
    blended = Image.fromarray(blended)
    save_image_atomically(blended, overlay_path, format="JPEG", quality=OVERLAY_JPEG_QUALITY)
    return mask_path, overlay_path


def load_predictor(
    path: str | os.PathLike,
    *,
    output_stride: int | None = None,
    input_range: Sequence[float] | None = None,
    precision: str = "float32",
) -> Predictor:
    """A DeepLab (`load_model`: a .keras file, a training run folder or `preset:NAME`), a SavedModel folder (or an
    export base path: its highest version), a .tflite file or an ONNX / OpenVINO file (serving/engines.py), behind
    one `Predictor`.

    `output_stride` rebuilds a DeepLab at that stride, `precision` in that arithmetic (constants.PRECISIONS; an
    OpenVINO model runs with the execution hint `engines.PRECISION_HINTS` names; the other kinds run as they
    were written). `input_range` overrides a .tflite model's pixel
    range (default: its keras_deeplab metadata, else [-1, 1] as TensorFlow's published DeepLab models take).
    """
    path = model_file(path)
    if not os.path.isdir(path) and not path.endswith((".keras", ".tflite")) and not is_engine_file(path):
        raise ValueError(
            f"{path}: expected a .keras file, a training run folder, a .tflite, .onnx or OpenVINO .xml file or a "
            "SavedModel folder"
        )
    saved_model = os.path.isdir(path) and not is_run_folder(path)
    fixed = path.endswith(".tflite") or is_engine_file(path)
    if output_stride is not None and (saved_model or fixed):
        raise ValueError(f"{path}: --output-stride applies to .keras models and run folders only")
    if precision != "float32" and (saved_model or (fixed and not path.endswith(".xml"))):
        raise ValueError(f"{path}: --precision applies to .keras models, run folders and OpenVINO .xml files only")
    if input_range is not None and not path.endswith(".tflite"):
        raise ValueError(f"{path}: --input-range applies to .tflite models only")
    if is_engine_file(path):
        engine = EngineModel(path, hint=PRECISION_HINTS[precision])
        return Predictor(engine.predict_logits, engine.description, engine.num_classes, engine.input_size)
    if path.endswith(".tflite"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such TFLite file")
        tflite = TFLiteModel(path, input_range=input_range)
        low, high = tflite.input_range
        description = f"TFLite model {path} ({tflite.input_size}x{tflite.input_size}, inputs in [{low:g}, {high:g}])"
        return Predictor(tflite.predict_logits, description, tflite.num_classes, tflite.input_size)
    if saved_model:
        if not os.path.isfile(os.path.join(path, "saved_model.pb")) and model_versions(path):
            path = os.path.join(path, str(max(model_versions(path))))
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"{path}: no saved_model.pb (nor version folders holding one)")
        loaded = tf.saved_model.load(path)
        if not hasattr(loaded, "logits"):
            raise ValueError(f"{path}: not a keras-deeplab export (it has no `logits` function)")
        num_classes = int(loaded.logits.concrete_functions[0].structured_outputs.shape[-1])
        return Predictor(lambda images: loaded.logits(images), f"SavedModel {path}", num_classes)  # keeps `loaded`
    model = load_model(path, output_stride, precision)
    if on_tensorflow():
        # One graph for every image size: run eagerly, each layer's result is kept until Python frees it (2.9 GB
        # for a 1024x1024 photo in a MobileNetV2 DeepLab, against 0.8 GB as a graph).
        predict_logits = tf.function(
            lambda images: model(images, training=False),
            input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)],
        )
    else:  # JAX, PyTorch: Keras' compiled inference step (jit-compiled per image size on JAX)
        predict_logits = model.predict_on_batch
    description = f"Keras model {path} ({model.dtype_policy.name}, {keras.backend.backend()})"
    return Predictor(
        predict_logits,
        description,
        int(model.output.shape[-1]),
        mean_pixel=getattr(model, "mean_pixel", constants.MEAN_PIXEL_RGB),
    )


def predict_files(
    image_paths: Sequence[str | os.PathLike],
    predictor: Predictor,
    out_dir: str | os.PathLike,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    max_pixels: int | None = None,
    crf: Mapping[str, float] | None = None,
    legend: bool = True,
    dataset: DatasetDescriptor | None = None,
    fit_to: int | None = None,
) -> Iterator[tuple[str, str]]:
    """Predict each image (class probabilities averaged over `scales` and flips), write its two files, and
    yield their paths (mask PNG, overlay JPEG) image by image. Pictures use the class names and colours of
    `dataset`, which must have the model's number of classes (checked on the first image, before anything is
    written), else of the dataset that number names (`descriptor_for_num_classes`: 19 Cityscapes, 151 ADE20K,
    21 VOC, other numbers "class_N" in VOC's colours).
    An image over `max_pixels` (height x width, from its header; default `settings.predict_max_pixels` of the
    model's classes) is refused before it is decoded.
    `crf`: refine the probabilities with the fully connected CRF (`crf.dense_crf` keywords; {} for its defaults).
    `legend`: overlays carry the legend strip of `write_outputs`. `fit_to`: the official export's input handling
    (`inference.class_probabilities`)."""
    if predictor.fixed_input_size is not None and tuple(scales) != (1.0,):
        raise ValueError(
            f"{predictor.description} has one input size, so --scales cannot change what it sees; "
            "use --scales with .keras or SavedModel models (--flip works with all)"
        )
    limit = predict_max_pixels(predictor.num_classes) if max_pixels is None else max_pixels
    make_folder(out_dir)
    for image_path in image_paths:
        try:
            image, _ = read_image(image_path, limit)
        except ValueError as error:
            if not isinstance(error.__cause__, PixelLimitError):
                raise
            default = f", the default for {predictor.num_classes} classes" if max_pixels is None else ""
            raise ValueError(f"{error} (predict --max-pixels{default})") from error
        probabilities = class_probabilities(
            predictor.predict_logits, image[np.newaxis], scales, flip, fit_to, predictor.mean_pixel
        )[0]
        probabilities = keras.ops.convert_to_numpy(probabilities)
        if crf is not None:
            probabilities = dense_crf(image, probabilities, **crf)
        class_map = probabilities.argmax(-1)
        descriptor = model_descriptor(predictor.description, probabilities.shape[-1], dataset)
        yield write_outputs(out_dir, image_path, image, class_map, descriptor, legend)
