"""A trained model as a SavedModel in the folder layout TF Serving loads.

`export/deeplab/1/` holds one version. Its signatures:

- `serving_default`: `image_bytes` string (B,): encoded images (JPEG, PNG, GIF, BMP), each of its own size.
- `serving_images`: `images` float32 (B, H, W, 3): RGB pixels in [0, 255], one size for the batch.

Both return, for every image, `class_map` int32 (B, H_max, W_max): the argmax class ids at the image's own
size, padded on the bottom and right with the ignore label up to the largest image of the batch; `height`
and `width` int32 (B,): each image's size, so `class_map[i, :height[i], :width[i]]` is image i's map (TF
Serving's batching concatenates requests, so even a one-image request may come back padded);
`class_map_png_bytes` string (B,): each class map cut to its image's size as a grayscale PNG whose pixel
values are the class ids (TF Serving's REST API returns it base64-encoded, as it does every output whose name
ends in `_bytes`); with `scores`, also `scores` float32 (B, H_max, W_max, C): the softmax probabilities
(0 in the padding). The object also keeps `logits(images)` (not a signature), which `keras-deeplab predict`
uses for multi-scale inference.

Preprocessing in the graph is the training pipeline's: decode to RGB uint8 and cast to float32; the model
normalises pixels itself. The images of each size run as one batch (one model call per distinct size), so
every class map equals what the Keras model gives for that image alone (padding never leaks into a
prediction) and a request of many small images costs a few model calls, not one per image. The SavedModel is
written with `tf.saved_model.save` of a `tf.Module`, which stores every variable once (about 4 bytes per
parameter), where Keras' `model.export()` stores them twice, and without gradient functions: nothing
differentiates a served model, and tracing the custom gradient of every conv (the CPU conv kernels') took half
the export's time and a sixth of its size (tiny model: 19 s and 5.9 MB with them, 10 s and 4.8 MB without).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_deeplab import constants
from keras_deeplab.files import make_folder
from serving.settings import (
    CLASS_MAP_OUTPUT,
    CLASS_MAP_PNG_OUTPUT,
    DEFAULT_MAX_PIXELS,
    HEIGHT_OUTPUT,
    IMAGE_BYTES_INPUT,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    SCORES_OUTPUT,
    SERVING_SIGNATURE,
    WIDTH_OUTPUT,
    model_versions,
)


class DeepLabServing(tf.Module):
    """The exported object: the model plus the signatures described in the module docstring."""

    def __init__(self, model: keras.Model, scores: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__(name="deeplab_serving")
        self.model = model
        self.num_classes = int(model.output.shape[-1])
        self.with_scores = bool(scores)
        self.max_pixels = int(max_pixels)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name=IMAGES_INPUT)])
    def logits(self, images: tf.Tensor) -> tf.Tensor:
        """RGB [0, 255] float32 (B, H, W, 3) -> logits float32 (B, H, W, C)."""
        return tf.cast(self.model(images, training=False), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT)])
    def predict_encoded(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Encoded images (B,) -> the outputs described in the module docstring."""
        count = tf.shape(image_bytes)[0]
        images = tf.TensorArray(tf.uint8, size=count, infer_shape=False, element_shape=[None, None, 3])
        sizes = tf.TensorArray(tf.int32, size=count, element_shape=[2])
        for index in tf.range(count):
            image = self._decode(image_bytes[index])
            images = images.write(index, image)
            sizes = sizes.write(index, tf.shape(image)[:2])
        sizes = sizes.stack()
        return self._outputs(self._predict_by_size(images, sizes), sizes)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name=IMAGES_INPUT)])
    def predict_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """RGB [0, 255] float32 (B, H, W, 3) -> the outputs described in the module docstring."""
        shape = tf.shape(images)
        with tf.control_dependencies([self._check_pixels(shape[1], shape[2])]):
            results = self._predict_batch(images)
        return self._outputs(results, tf.tile(shape[1:3][tf.newaxis], [shape[0], 1]))

    def _decode(self, encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image = tf.ensure_shape(image, [None, None, 3])
        with tf.control_dependencies([self._check_pixels(tf.shape(image)[0], tf.shape(image)[1])]):
            return tf.identity(image)

    def _check_pixels(self, height: tf.Tensor, width: tf.Tensor) -> tf.Operation:
        return tf.debugging.assert_less_equal(
            tf.cast(height, tf.int64) * tf.cast(width, tf.int64),
            tf.constant(self.max_pixels, tf.int64),
            message=f"image has more pixels than the {self.max_pixels} this model was exported to accept",
        )

    def _predict_batch(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = self.logits(images)
        results = {CLASS_MAP_OUTPUT: tf.argmax(logits, axis=-1, output_type=tf.int32)}
        if self.with_scores:
            results[SCORES_OUTPUT] = tf.nn.softmax(logits, axis=-1)
        return results

    def _predict_by_size(self, images: tf.TensorArray, sizes: tf.Tensor) -> dict[str, tf.Tensor]:
        """One model call per distinct image size (a thousand tiny images of two sizes: two calls), each
        image's results padded to the batch's largest size and put back in its place."""
        count = tf.shape(sizes)[0]
        largest = tf.reduce_max(sizes, axis=0)
        groups, group_of = tf.unique(tf.cast(sizes[:, 0], tf.int64) * 2**32 + tf.cast(sizes[:, 1], tf.int64))
        class_maps = tf.TensorArray(tf.int32, size=count, element_shape=[None, None])
        scores = tf.TensorArray(tf.float32, size=count, element_shape=[None, None, self.num_classes])
        for group in tf.range(tf.size(groups)):
            members = tf.cast(tf.where(tf.equal(group_of, group))[:, 0], tf.int32)
            results = self._predict_batch(tf.cast(images.gather(members), tf.float32))
            size = sizes[members[0]]
            padding = [[0, 0], [0, largest[0] - size[0]], [0, largest[1] - size[1]]]
            class_map = tf.pad(results[CLASS_MAP_OUTPUT], padding, constant_values=constants.IGNORE_LABEL)
            class_maps = class_maps.scatter(members, class_map)
            if self.with_scores:
                scores = scores.scatter(members, tf.pad(results[SCORES_OUTPUT], [*padding, [0, 0]]))
        if self.with_scores:
            return {CLASS_MAP_OUTPUT: class_maps.stack(), SCORES_OUTPUT: scores.stack()}
        return {CLASS_MAP_OUTPUT: class_maps.stack()}

    def _outputs(self, results: dict[str, tf.Tensor], sizes: tf.Tensor) -> dict[str, tf.Tensor]:
        class_map = results[CLASS_MAP_OUTPUT]

        def encode_png(index):
            return class_map_png(class_map[index, : sizes[index, 0], : sizes[index, 1]], self.num_classes)

        pngs = tf.map_fn(encode_png, tf.range(tf.shape(sizes)[0]), fn_output_signature=tf.string)
        return {**results, HEIGHT_OUTPUT: sizes[:, 0], WIDTH_OUTPUT: sizes[:, 1], CLASS_MAP_PNG_OUTPUT: pngs}


def class_map_png(class_map: tf.Tensor | np.ndarray, num_classes: int) -> tf.Tensor:
    """One class map (H, W) as every answer of an export carries it: a grey PNG whose values are class ids, 8-bit
    up to 256 classes, 16-bit above (also the CRF's maps of serve --crf)."""
    dtype = tf.uint8 if num_classes <= 256 else tf.uint16
    return tf.io.encode_png(tf.cast(class_map, dtype)[..., tf.newaxis])


def tf_error_message(error: tf.errors.OpError) -> str:
    """The useful text of a TensorFlow runtime error, without graph-node names and stack-trace noise."""
    skip = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[")
    lines = [re.sub(r"\{\{[^}]*\}\}|\[Op:\w+\]", "", line).strip() for line in error.message.splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(skip)) or error.message


def export_saved_model(
    model: keras.Model,
    base_path: str | os.PathLike,
    version: int | None = None,
    *,
    output_stride: int | None = None,
    scores: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> str:
    """Write `model` as `base_path/<version>/` (default: one above the highest there, or 1); return that path.

    `output_stride` rebuilds the model at another stride first (same weights, e.g. 8 for evaluation quality).
    The version is written under a temporary name and renamed when complete, so TF Serving, which watches the
    folder, never loads half a model. An existing version is never overwritten.
    """
    base_path = os.fspath(base_path)
    if version is None:
        version = max(model_versions(base_path), default=0) + 1
    if version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    target = os.path.join(base_path, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target}: version {version} already exists; pass another --version")
    if output_stride is not None:
        model = model.with_output_stride(output_stride)
    module = DeepLabServing(model, scores=scores, max_pixels=max_pixels)
    signatures = {
        SERVING_SIGNATURE: module.predict_encoded.get_concrete_function(),
        IMAGES_SIGNATURE: module.predict_images.get_concrete_function(),
    }
    make_folder(base_path)
    temporary = tempfile.mkdtemp(dir=base_path, prefix=f".tmp-{version}-")
    try:
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)  # see the module docstring
        tf.saved_model.save(module, temporary, signatures=signatures, options=options)
        os.rename(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return target


def folder_bytes(path: str | os.PathLike) -> int:
    """Total size in bytes of the files under `path`."""
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names)
