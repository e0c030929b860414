"""mIoU computed here, apart from keras_deeplab's evaluation: a model run eagerly on each example of a source, its
argmax at the image's size, one NumPy confusion matrix. Tests compare a command's reported mIoU with it."""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from keras_deeplab.constants import IGNORE_LABEL


def reference_miou(model, source, max_examples: int) -> float:
    """Mean IoU of `model` over the first `max_examples` examples of `source` (at one scale, not flipped): the mean
    over the classes present in the truth or the prediction of intersection / union, ignored pixels left out."""
    num_classes = int(model.output.shape[-1])
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for image, mask, _ in itertools.islice(source.examples(), max_examples):
        logits = model(image[np.newaxis].astype("float32"), training=False)
        logits = tf.image.resize(tf.cast(logits, tf.float32), mask.shape, method="bilinear")
        predicted = np.argmax(logits[0].numpy(), axis=-1)
        valid = mask != IGNORE_LABEL
        pairs = mask[valid].astype(np.int64) * num_classes + predicted[valid]
        matrix += np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)
    intersection = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    return float(np.mean(intersection[union > 0] / union[union > 0]))
