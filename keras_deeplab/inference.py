"""Inference on whole images: class probabilities averaged over scales and horizontal flips.

The v3 paper's evaluation: "multi-scale inputs (scales = {0.5, 0.75, 1.0, 1.25, 1.5, 1.75}) and left-right
flipped images", averaging the class probabilities at the original resolution. One function serves the
evaluation loop, `keras-deeplab predict` and any model format (Keras, SavedModel, TFLite).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from keras_deeplab.scales import check_scales

PredictLogits = Callable[[tf.Tensor], tf.Tensor]


def class_probabilities(
    predict_logits: PredictLogits,
    images: tf.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> tf.Tensor:
    """Mean softmax probabilities (B, H, W, C) float32 of `images` (B, H, W, 3) over `scales` and flips.

    `predict_logits` maps (B, h, w, 3) pixels in [0, 255] to logits (B, h', w', C) at any resolution; logits are
    resized bilinearly to (H, W) before the softmax. Each scale resizes the image to round(H*s) x round(W*s)
    bilinearly; with `flip`, the left-right mirrored image is predicted too and mirrored back.
    """
    scales = check_scales(scales)
    images = tf.convert_to_tensor(images, tf.float32)
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


def predict_class_map(
    predict_logits: PredictLogits,
    images: tf.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> tf.Tensor:
    """Class ids (B, H, W) uint8 (int32 above 256 classes): the argmax of `class_probabilities`."""
    probabilities = class_probabilities(predict_logits, images, scales, flip)
    class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return tf.cast(class_ids, tf.uint8) if probabilities.shape[-1] <= 256 else class_ids
