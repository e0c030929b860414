"""Per-pixel softmax cross-entropy for segmentation: ignore label, class weights, hard-pixel bootstrapping.

Logits are resized bilinearly to the label's size (labels are never resized), and pixels labelled
IGNORE_LABEL contribute exactly nothing: they are selected out before any sum, so neither the loss nor the
gradient of their logits depends on those logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_deeplab import constants


def logits_at_label_size(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Float32 logits (B, h, w, C) resized bilinearly to the (H, W) of `labels` (B, H, W); unchanged when equal."""
    logits = tf.cast(logits, tf.float32)
    if logits.shape[1:3].is_fully_defined() and logits.shape[1:3] == labels.shape[1:3]:
        return logits
    return tf.image.resize(logits, tf.shape(labels)[1:3], method="bilinear")


def squeeze_labels(labels: tf.Tensor) -> tf.Tensor:
    """Class ids (B, H, W) int32 from labels (B, H, W) or (B, H, W, 1) of any integer or float dtype."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 4:
        labels = tf.squeeze(labels, axis=-1)
    if labels.shape.rank != 3:
        raise ValueError(f"labels must be (B, H, W) or (B, H, W, 1) class ids, got shape {labels.shape}")
    return tf.cast(labels, tf.int32)


def check_hard_pixel_fraction(fraction: float, what: str = "hard_pixel_fraction") -> None:
    """ValueError naming `what` unless the bootstrapping fraction `fraction` is in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"{what} must be in (0, 1], got {fraction}")


def segmentation_loss_terms(
    labels: tf.Tensor,
    logits: tf.Tensor,
    *,
    class_weights: Sequence[float] | None = None,
    hard_pixel_fraction: float = 1.0,
    ignore_label: int = constants.IGNORE_LABEL,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(sum of weighted pixel losses, normalizer): the loss is their quotient; both float32 scalars.

    Args:
      labels: class ids (B, H, W) or (B, H, W, 1); `ignore_label` marks pixels that do not count.
      logits: (B, h, w, C), resized to (H, W) when they differ.
      class_weights: C weights; a pixel's loss is multiplied by the weight of its true class and the
        normalizer is the sum of the weights of the counted pixels. None: all 1.
      hard_pixel_fraction: in (0, 1]; below 1, only the hardest ceil(fraction * valid pixels) pixel losses
        of the batch are kept and the normalizer is their weight (the v3 paper's bootstrapping).

    A training loop over replicas divides the summed terms by the normalizer summed over replicas, so that
    any split of a batch gives the loss of the whole batch.
    """
    check_hard_pixel_fraction(hard_pixel_fraction)
    labels = squeeze_labels(labels)
    logits = logits_at_label_size(logits, labels)
    num_classes = logits.shape[-1]
    valid = tf.not_equal(labels, ignore_label)
    valid_labels = tf.boolean_mask(labels, valid)
    valid_logits = tf.boolean_mask(logits, valid)
    tf.debugging.assert_less(
        valid_labels,
        num_classes,
        message=f"labels must be class ids below {num_classes} or the ignore label {ignore_label}",
    )
    pixel_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=valid_labels, logits=valid_logits)
    if class_weights is None:
        pixel_weights = tf.ones_like(pixel_losses)
    else:
        if len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
        pixel_weights = tf.gather(tf.constant(class_weights, tf.float32), valid_labels)
    weighted = pixel_losses * pixel_weights
    if hard_pixel_fraction < 1.0:
        count = tf.size(weighted)
        keep = tf.cast(tf.math.ceil(hard_pixel_fraction * tf.cast(count, tf.float32)), tf.int32)
        weighted, hardest = tf.math.top_k(weighted, k=tf.minimum(keep, count), sorted=False)
        pixel_weights = tf.gather(pixel_weights, hardest)
    return tf.reduce_sum(weighted), tf.reduce_sum(pixel_weights)


def segmentation_loss(
    labels: tf.Tensor,
    logits: tf.Tensor,
    *,
    class_weights: Sequence[float] | None = None,
    hard_pixel_fraction: float = 1.0,
    ignore_label: int = constants.IGNORE_LABEL,
) -> tf.Tensor:
    """Mean weighted cross-entropy (float32 scalar) over the counted pixels; 0 when no pixel counts."""
    total, normalizer = segmentation_loss_terms(
        labels,
        logits,
        class_weights=class_weights,
        hard_pixel_fraction=hard_pixel_fraction,
        ignore_label=ignore_label,
    )
    return tf.math.divide_no_nan(total, normalizer)


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
