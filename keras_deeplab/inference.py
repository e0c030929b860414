"""Inference on whole images: class probabilities averaged over scales and horizontal flips.

The v3 paper's evaluation: "multi-scale inputs (scales = {0.5, 0.75, 1.0, 1.25, 1.5, 1.75}) and left-right
flipped images", averaging the class probabilities at the original resolution. One function serves the
evaluation loop, `keras-deeplab predict` and any model format (Keras, SavedModel, TFLite).

`fit_to`: the input handling of the official export (tensorflow/models research/deeplab export_model.py with
input_preprocess and preprocess_utils.resize_to_range): the photo resized so its longer side is `fit_to`
(bilinear, corners aligned, sides rounded up in float32 as TF1 computed them), padded on the bottom and right
to `fit_to` x `fit_to` with the mean pixel (`pad_pixel`: the one the network's normalisation maps to zero,
`DeepLab.mean_pixel`, as the official `mean_pixel`), predicted, the photo's part cut out and resized back to the photo
with nearest neighbour (corners aligned). A model imported from a published frozen graph then gives that graph's
class maps (its `SemanticPredictions`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from keras import ops

from keras_deeplab import constants
from keras_deeplab.layers import bilinear_resize, on_tensorflow, spatial_size
from keras_deeplab.scales import check_scales

PredictLogits = Callable[[Any], Any]


def rounded_size(size: Any, scale: float) -> Any:
    """round(H * scale) x round(W * scale) (float32, halves to even), each at least 1, of `size` (H, W): a
    TensorFlow int tensor on TensorFlow, two ints on the other backends (see `layers.spatial_size`)."""
    if on_tensorflow():
        import tensorflow as tf

        return tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
    return tuple(max(int(np.round(np.float32(side) * np.float32(scale))), 1) for side in size)


def class_probabilities(
    predict_logits: PredictLogits,
    images: Any,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fit_to: int | None = None,
    pad_pixel: Sequence[float] = constants.MEAN_PIXEL_RGB,
) -> Any:
    """Mean softmax probabilities (B, H, W, C) float32 of `images` (B, H, W, 3) over `scales` and flips, a tensor
    of the Keras backend.

    `predict_logits` maps (B, h, w, 3) pixels in [0, 255] to logits (B, h', w', C) at any resolution (a tensor
    of the backend, a NumPy array or, on TensorFlow, a TensorFlow tensor); logits are resized bilinearly to
    (H, W) before the softmax. Each scale resizes the image to round(H*s) x round(W*s) bilinearly; with `flip`,
    the left-right mirrored image is predicted too and mirrored back.
    `fit_to`: the official export's input handling (see the module's docstring), padding with `pad_pixel`; scales
    and flips then apply to the padded square, as the official multi-scale export did.
    """
    scales = check_scales(scales)
    images = ops.convert_to_tensor(images, "float32")
    size = spatial_size(images)
    if fit_to is not None:
        padded, fitted = fit_to_square(images, fit_to, pad_pixel)
        probabilities = class_probabilities(predict_logits, padded, scales, flip)[:, : fitted[0], : fitted[1]]
        return nearest_resize_corners_aligned(probabilities, size)
    total = None
    for scale in scales:
        scaled = images if scale == 1.0 else bilinear_resize(images, rounded_size(size, scale), align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            batch = ops.flip(scaled, axis=2) if mirrored else scaled
            logits = ops.cast(ops.convert_to_tensor(predict_logits(batch)), "float32")
            logits = ops.flip(logits, axis=2) if mirrored else logits
            probabilities = ops.softmax(bilinear_resize(logits, size, align_corners=False), axis=-1)
            total = probabilities if total is None else total + probabilities
    return total / float(len(scales) * (2 if flip else 1))


def fit_to_square(images: Any, size: int, pad_pixel: Sequence[float] = constants.MEAN_PIXEL_RGB) -> tuple[Any, Any]:
    """(B, H, W, 3) float32 pixels -> ((B, size, size, 3), the (height, width) of the photo's part at the top left).

    As the official export: the longer side to `size` (each side ceil(side * size / longer side) in float32,
    `resize_to_range` with min and max size `size`), bilinear with corners aligned (TF1's `resize_bilinear`), then
    padded with `pad_pixel` as `pad_to_bounding_box` pads (pixel - pad_pixel, zero-padded, + pad_pixel).
    """
    if size < 1:
        raise ValueError(f"fit_to must be a positive size, got {size}")
    # At most `size`: float32 can round a longer side up past it (131 px at 769), where the official graph fails.
    if on_tensorflow():
        import tensorflow as tf

        sides = tf.cast(tf.shape(images)[1:3], tf.float32)
        fitted = tf.minimum(tf.cast(tf.math.ceil(sides * (float(size) / tf.reduce_max(sides))), tf.int32), size)
    else:
        sides = np.array(spatial_size(images), np.float32)
        fitted = tuple(int(side) for side in np.minimum(np.ceil(sides * (np.float32(size) / sides.max())), size))
    resized = bilinear_resize(images, fitted, align_corners=True)
    mean = ops.convert_to_tensor(np.asarray(pad_pixel, np.float32))
    padding = [[0, 0], [0, size - fitted[0]], [0, size - fitted[1]], [0, 0]]
    padded = ops.pad(resized - mean, padding) + mean
    if on_tensorflow():
        padded = tf.ensure_shape(padded, [None, size, size, 3])
    return padded, fitted


def nearest_resize_corners_aligned(images: Any, size: Any) -> Any:
    """TF1's resize_nearest_neighbor(align_corners=True) of (B, h, w, C) to `size`: output index i takes input
    index min(roundf(i * (h - 1) / (H - 1)), h - 1), the scale and product in float32 as TensorFlow's kernel."""
    if on_tensorflow():
        import tensorflow as tf

        return tf.raw_ops.ResizeNearestNeighbor(images=images, size=size, align_corners=True)
    for axis, (side, target) in enumerate(zip(images.shape[1:3], size, strict=True), start=1):
        scale = np.float32(side - 1) / np.float32(target - 1) if target > 1 else np.float32(side) / np.float32(target)
        product = np.arange(target, dtype=np.float32) * scale
        index = np.minimum(np.floor(product + np.float32(0.5)).astype(np.int64), side - 1)  # roundf: halves up
        images = ops.take(images, ops.convert_to_tensor(index), axis=axis)
    return images


def predict_class_map(
    predict_logits: PredictLogits,
    images: Any,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fit_to: int | None = None,
    pad_pixel: Sequence[float] = constants.MEAN_PIXEL_RGB,
) -> Any:
    """Class ids (B, H, W) uint8 (int32 above 256 classes): the argmax of `class_probabilities`."""
    probabilities = class_probabilities(predict_logits, images, scales, flip, fit_to, pad_pixel)
    class_ids = ops.cast(ops.argmax(probabilities, axis=-1), "int32")
    return ops.cast(class_ids, "uint8") if probabilities.shape[-1] <= 256 else class_ids
