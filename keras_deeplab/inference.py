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

import tensorflow as tf

from keras_deeplab import constants
from keras_deeplab.scales import check_scales

PredictLogits = Callable[[tf.Tensor], tf.Tensor]


def class_probabilities(
    predict_logits: PredictLogits,
    images: tf.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fit_to: int | None = None,
    pad_pixel: Sequence[float] = constants.MEAN_PIXEL_RGB,
) -> tf.Tensor:
    """Mean softmax probabilities (B, H, W, C) float32 of `images` (B, H, W, 3) over `scales` and flips.

    `predict_logits` maps (B, h, w, 3) pixels in [0, 255] to logits (B, h', w', C) at any resolution; logits are
    resized bilinearly to (H, W) before the softmax. Each scale resizes the image to round(H*s) x round(W*s)
    bilinearly; with `flip`, the left-right mirrored image is predicted too and mirrored back.
    `fit_to`: the official export's input handling (see the module's docstring), padding with `pad_pixel`; scales
    and flips then apply to the padded square, as the official multi-scale export did.
    """
    scales = check_scales(scales)
    images = tf.convert_to_tensor(images, tf.float32)
    if fit_to is not None:
        padded, fitted = fit_to_square(images, fit_to, pad_pixel)
        probabilities = class_probabilities(predict_logits, padded, scales, flip)[:, : fitted[0], : fitted[1]]
        # TF1's resize_nearest_neighbor(align_corners=True), without tf.compat.v1's deprecation warning
        return tf.raw_ops.ResizeNearestNeighbor(images=probabilities, size=tf.shape(images)[1:3], align_corners=True)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    size = tf.stack([height, width])
    total = None
    for scale in scales:
        scaled_size = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
        scaled = images if scale == 1.0 else tf.image.resize(images, scaled_size, method="bilinear")
        for mirrored in (False, True) if flip else (False,):
            batch = tf.reverse(scaled, axis=[2]) if mirrored else scaled
            logits = tf.cast(predict_logits(batch), tf.float32)
            logits = tf.reverse(logits, axis=[2]) if mirrored else logits
            probabilities = tf.nn.softmax(tf.image.resize(logits, size, method="bilinear"), axis=-1)
            total = probabilities if total is None else total + probabilities
    return total / float(len(scales) * (2 if flip else 1))


def fit_to_square(
    images: tf.Tensor, size: int, pad_pixel: Sequence[float] = constants.MEAN_PIXEL_RGB
) -> tuple[tf.Tensor, tf.Tensor]:
    """(B, H, W, 3) float32 pixels -> ((B, size, size, 3), the (height, width) of the photo's part at the top left).

    As the official export: the longer side to `size` (each side ceil(side * size / longer side) in float32,
    `resize_to_range` with min and max size `size`), bilinear with corners aligned (TF1's `resize_bilinear`), then
    padded with `pad_pixel` as `pad_to_bounding_box` pads (pixel - pad_pixel, zero-padded, + pad_pixel).
    """
    if size < 1:
        raise ValueError(f"fit_to must be a positive size, got {size}")
    sides = tf.cast(tf.shape(images)[1:3], tf.float32)
    # At most `size`: float32 can round a longer side up past it (131 px at 769), where the official graph fails.
    fitted = tf.minimum(tf.cast(tf.math.ceil(sides * (float(size) / tf.reduce_max(sides))), tf.int32), size)
    resized = tf.raw_ops.ResizeBilinear(images=images, size=fitted, align_corners=True)
    mean = tf.constant(pad_pixel, tf.float32)
    padding = [[0, 0], [0, size - fitted[0]], [0, size - fitted[1]], [0, 0]]
    padded = tf.pad(resized - mean, padding) + mean
    return tf.ensure_shape(padded, [None, size, size, 3]), fitted


def predict_class_map(
    predict_logits: PredictLogits,
    images: tf.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fit_to: int | None = None,
    pad_pixel: Sequence[float] = constants.MEAN_PIXEL_RGB,
) -> tf.Tensor:
    """Class ids (B, H, W) uint8 (int32 above 256 classes): the argmax of `class_probabilities`."""
    probabilities = class_probabilities(predict_logits, images, scales, flip, fit_to, pad_pixel)
    class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return tf.cast(class_ids, tf.uint8) if probabilities.shape[-1] <= 256 else class_ids
