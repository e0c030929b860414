"""Per-pixel softmax cross-entropy for segmentation: ignore label, class weights, hard-pixel bootstrapping.

Logits are resized bilinearly to the label's size (labels are never resized), and pixels labelled
IGNORE_LABEL contribute exactly nothing: their logits are replaced by zeros and their weight is zero, so neither
the loss nor the gradient of their logits depends on those logits. Written in `keras.ops`: the same loss on
TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_deeplab import constants
from keras_deeplab.layers import bilinear_resize, on_tensorflow, spatial_size


def logits_at_label_size(logits: Any, labels: Any) -> Any:
    """Float32 logits (B, h, w, C) resized bilinearly to the (H, W) of `labels` (B, H, W); unchanged when equal."""
    logits = ops.cast(logits, "float32")
    if None not in logits.shape[1:3] and tuple(logits.shape[1:3]) == tuple(labels.shape[1:3]):
        return logits
    return bilinear_resize(logits, spatial_size(labels), align_corners=False)


def squeeze_labels(labels: Any) -> Any:
    """Class ids (B, H, W) int32 from labels (B, H, W) or (B, H, W, 1) of any integer or float dtype."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 4:
        labels = ops.squeeze(labels, axis=-1)
    if len(labels.shape) != 3:
        raise ValueError(f"labels must be (B, H, W) or (B, H, W, 1) class ids, got shape {tuple(labels.shape)}")
    return ops.cast(labels, "int32")


def check_below(values: Any, valid: Any, limit: int, message: str) -> None:
    """Raise where a `valid` entry of the int tensor `values` is not below `limit`: on TensorFlow an assertion in
    the graph (InvalidArgumentError with `message`); on the other backends a ValueError with `message` where the
    values are concrete (eager PyTorch, eager JAX). Values traced by `jax.jit` cannot be read: there the check is
    the caller's (the pipelines check labels against the dataset's classes)."""
    if on_tensorflow():
        import tensorflow as tf

        tf.debugging.assert_less(tf.boolean_mask(values, valid), limit, message=message)
        return
    try:
        concrete = ops.convert_to_numpy(ops.where(valid, values, 0))
    except Exception:  # a traced value: nothing to read
        return
    if (concrete >= limit).any():
        raise ValueError(message)


def check_hard_pixel_fraction(fraction: float, what: str = "hard_pixel_fraction") -> None:
    """ValueError naming `what` unless the bootstrapping fraction `fraction` is in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"{what} must be in (0, 1], got {fraction}")


def segmentation_loss_terms(
    labels,
    logits,
    *,
    class_weights: Sequence[float] | None = None,
    hard_pixel_fraction: float = 1.0,
    ignore_label: int = constants.IGNORE_LABEL,
) -> tuple[Any, Any]:
    """(sum of weighted pixel losses, normalizer): the loss is their quotient; both float32 scalars.

    Args:
      labels: class ids (B, H, W) or (B, H, W, 1); `ignore_label` marks pixels that do not count.
      logits: (B, h, w, C), resized to (H, W) when they differ.
      class_weights: C weights; a pixel's loss is multiplied by the weight of its true class and the
        normalizer is the sum of the weights of the counted pixels. None: all 1.
      hard_pixel_fraction: in (0, 1]; below 1, only the hardest ceil(fraction * valid pixels) pixel losses
        of the batch are kept and the normalizer is their weight (the v3 paper's bootstrapping).

    Shapes stay static (every backend, `jax.jit` included): an ignored pixel's logits are replaced by zeros
    before the cross-entropy and its weight is zero, so neither the loss nor the gradient of its logits depends
    on them. A training loop over replicas divides the summed terms by the normalizer summed over replicas, so
    that any split of a batch gives the loss of the whole batch.
    """
    check_hard_pixel_fraction(hard_pixel_fraction)
    labels = squeeze_labels(labels)
    logits = logits_at_label_size(logits, labels)
    num_classes = logits.shape[-1]
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
    valid = ops.not_equal(labels, ignore_label)
    check_below(
        labels, valid, num_classes, f"labels must be class ids below {num_classes} or the ignore label {ignore_label}"
    )
    safe_labels = ops.reshape(ops.where(valid, labels, 0), (-1,))
    safe_logits = ops.reshape(ops.where(valid[..., None], logits, 0.0), (-1, num_classes))
    valid = ops.reshape(valid, (-1,))
    pixel_losses = ops.sparse_categorical_crossentropy(safe_labels, safe_logits, from_logits=True)
    if class_weights is None:
        pixel_weights = ops.cast(valid, "float32")
    else:
        weights = ops.take(ops.convert_to_tensor(class_weights, "float32"), safe_labels)
        pixel_weights = ops.where(valid, weights, 0.0)
    weighted = pixel_losses * pixel_weights
    if hard_pixel_fraction < 1.0:
        # The hardest first (ignored pixels last), then the first ceil(fraction * counted pixels) of them.
        count = ops.sum(ops.cast(valid, "float32"))
        keep = ops.ceil(hard_pixel_fraction * count)
        hardest = ops.argsort(-ops.where(valid, weighted, -1.0))
        kept = ops.cast(ops.arange(ops.shape(hardest)[0]) < ops.cast(keep, "int32"), "float32")
        weighted = ops.take(weighted, hardest) * kept
        pixel_weights = ops.take(pixel_weights, hardest) * kept
    return ops.sum(weighted), ops.sum(pixel_weights)


def segmentation_loss(
    labels,
    logits,
    *,
    class_weights: Sequence[float] | None = None,
    hard_pixel_fraction: float = 1.0,
    ignore_label: int = constants.IGNORE_LABEL,
) -> Any:
    """Mean weighted cross-entropy (float32 scalar) over the counted pixels; 0 when no pixel counts."""
    total, normalizer = segmentation_loss_terms(
        labels,
        logits,
        class_weights=class_weights,
        hard_pixel_fraction=hard_pixel_fraction,
        ignore_label=ignore_label,
    )
    return ops.where(normalizer > 0, total / ops.where(normalizer > 0, normalizer, 1.0), 0.0)


@keras.saving.register_keras_serializable(package="keras_deeplab")
class SegmentationLoss(keras.losses.Loss):
    """`segmentation_loss` as a Keras loss for `model.compile`: y_true class ids, y_pred logits."""

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        hard_pixel_fraction: float = 1.0,
        ignore_label: int = constants.IGNORE_LABEL,
        name: str = "segmentation_loss",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(weight) for weight in class_weights]
        self.hard_pixel_fraction = float(hard_pixel_fraction)
        self.ignore_label = int(ignore_label)

    def call(self, y_true, y_pred):
        return segmentation_loss(
            y_true,
            y_pred,
            class_weights=self.class_weights,
            hard_pixel_fraction=self.hard_pixel_fraction,
            ignore_label=self.ignore_label,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "hard_pixel_fraction": self.hard_pixel_fraction,
            "ignore_label": self.ignore_label,
        }
