"""`MeanIoU`: a Keras metric over a confusion matrix (per-class IoU, mean IoU, pixel accuracy)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_deeplab import confusion, constants
from keras_deeplab.losses import logits_at_label_size, squeeze_labels


@keras.saving.register_keras_serializable(package="keras_deeplab")
class MeanIoU(keras.metrics.Metric):
    """Mean intersection over union of class maps, the PASCAL VOC segmentation measure.

    `update_state(y_true, y_pred)`: y_true class ids (B, H, W) or (B, H, W, 1); y_pred class ids of the same
    shape, or logits (B, h, w, num_classes) (resized bilinearly to the labels' size, then argmax). Pixels
    labelled `ignore_label` are not counted. The confusion matrix (rows: truth, columns: prediction) is kept
    in float64, exact to 2**53 pixels, in an on-read variable summed over the replicas of a distribution
    strategy, so `result()` is that of all the pixels every replica saw.

    `result()`: the mean of the per-class IoU over the classes that occur in the truth or the prediction
    (a class that occurs in neither has no IoU). `results()` gives {'miou', 'pixel_accuracy', 'per_class_iou'}.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_label: int = constants.IGNORE_LABEL,
        name: str = "mean_iou",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.confusion_matrix = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="float64",
            name="confusion_matrix",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the pixels of a batch; `sample_weight` (broadcastable to (B, H, W)) weights each pixel."""
        labels = squeeze_labels(y_true)
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.shape.rank == 4 and y_pred.shape[-1] == self.num_classes and y_pred.dtype.is_floating:
            predictions = tf.argmax(logits_at_label_size(y_pred, labels), axis=-1, output_type=tf.int32)
        else:
            predictions = squeeze_labels(y_pred)
        valid = tf.not_equal(labels, self.ignore_label)
        weights = tf.cast(valid, tf.float64)
        if sample_weight is not None:
            weights *= tf.cast(tf.broadcast_to(sample_weight, tf.shape(labels)), tf.float64)
        tf.debugging.assert_less(
            tf.boolean_mask(labels, valid),
            self.num_classes,
            message=f"labels must be class ids below {self.num_classes} or the ignore label {self.ignore_label}",
        )
        tf.debugging.assert_less(
            predictions, self.num_classes, message=f"predicted class ids must be below {self.num_classes}"
        )
        flat_index = tf.where(valid, labels * self.num_classes + predictions, 0)
        counts = tf.math.bincount(
            tf.reshape(flat_index, [-1]),
            weights=tf.reshape(weights, [-1]),
            minlength=self.num_classes**2,
            maxlength=self.num_classes**2,
            dtype=tf.float64,
        )
        self.confusion_matrix.assign_add(tf.reshape(counts, (self.num_classes, self.num_classes)))

    def per_class_iou(self) -> tf.Tensor:
        """IoU of each class (num_classes,) float64; NaN for a class absent from both truth and prediction."""
        matrix = tf.convert_to_tensor(self.confusion_matrix)
        true_positives = tf.linalg.diag_part(matrix)
        union = tf.reduce_sum(matrix, axis=0) + tf.reduce_sum(matrix, axis=1) - true_positives
        return tf.where(union > 0, true_positives / tf.where(union > 0, union, 1.0), np.nan)

    def result(self) -> tf.Tensor:
        iou = self.per_class_iou()
        present = tf.logical_not(tf.math.is_nan(iou))
        return tf.cast(
            tf.math.divide_no_nan(
                tf.reduce_sum(tf.boolean_mask(iou, present)), tf.reduce_sum(tf.cast(present, tf.float64))
            ),
            tf.float32,
        )

    def pixel_accuracy(self) -> tf.Tensor:
        """Correctly classified counted pixels / counted pixels, float32 scalar (0 before any pixel)."""
        matrix = tf.convert_to_tensor(self.confusion_matrix)
        return tf.cast(tf.math.divide_no_nan(tf.linalg.trace(matrix), tf.reduce_sum(matrix)), tf.float32)

    def results(self) -> dict:
        """{'miou': float, 'pixel_accuracy': float, 'per_class_iou': list of float or None (absent class)}, the
        `confusion.scores` of the matrix (summed over the replicas)."""
        return confusion.scores(tf.convert_to_tensor(self.confusion_matrix).numpy())

    def reset_state(self):
        self.confusion_matrix.assign(tf.zeros_like(self.confusion_matrix))

    def get_config(self):
        return {"num_classes": self.num_classes, "ignore_label": self.ignore_label, "name": self.name}
