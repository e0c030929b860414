"""Inference on whole images: class probabilities averaged over scales and horizontal flips.

The v3 paper's evaluation: "multi-scale inputs (scales = {0.5, 0.75, 1.0, 1.25, 1.5, 1.75}) and left-right
flipped images", averaging the class probabilities at the original resolution. One function serves the
evaluation loop, `keras-deeplab predict` and any model format (Keras, SavedModel, TFLite).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from keras import ops

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
) -> Any:
    """Mean softmax probabilities (B, H, W, C) float32 of `images` (B, H, W, 3) over `scales` and flips, a tensor
    of the Keras backend.

    `predict_logits` maps (B, h, w, 3) pixels in [0, 255] to logits (B, h', w', C) at any resolution (a tensor
    of the backend, a NumPy array or, on TensorFlow, a TensorFlow tensor); logits are resized bilinearly to
    (H, W) before the softmax. Each scale resizes the image to round(H*s) x round(W*s) bilinearly; with `flip`,
    the left-right mirrored image is predicted too and mirrored back.
    """
    scales = check_scales(scales)
    images = ops.convert_to_tensor(images, "float32")
    size = spatial_size(images)
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


def predict_class_map(
    predict_logits: PredictLogits,
    images: Any,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> Any:
    """Class ids (B, H, W) uint8 (int32 above 256 classes): the argmax of `class_probabilities`."""
    probabilities = class_probabilities(predict_logits, images, scales, flip)
    class_ids = ops.cast(ops.argmax(probabilities, axis=-1), "int32")
    return ops.cast(class_ids, "uint8") if probabilities.shape[-1] <= 256 else class_ids
