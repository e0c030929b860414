"""`MeanIoU`: a Keras metric over a confusion matrix (per-class IoU, mean IoU, pixel accuracy)."""

from __future__ import annotations

import keras
from keras import ops

from keras_deeplab import confusion, constants
from keras_deeplab.losses import check_below, logits_at_label_size, squeeze_labels


@keras.saving.register_keras_serializable(package="keras_deeplab")
class MeanIoU(keras.metrics.Metric):
    """Mean intersection over union of class maps, the PASCAL VOC segmentation measure.

    `update_state(y_true, y_pred)`: y_true class ids (B, H, W) or (B, H, W, 1); y_pred class ids of the same
    shape, or logits (B, h, w, num_classes) (resized bilinearly to the labels' size, then argmax). Pixels
    labelled `ignore_label` are not counted. The confusion matrix (rows: truth, columns: prediction) is kept
    in float64, exact to 2**53 pixels, in an on-read variable summed over the replicas of a distribution
    strategy, so `result()` is that of all the pixels every replica saw. (JAX computes in float32 unless
    `jax_enable_x64` is set: there each cell is exact to 2**24 pixels, about 64 VOC images of one class pair.)

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
        y_pred = ops.convert_to_tensor(y_pred)
        floating = "float" in keras.backend.standardize_dtype(y_pred.dtype)
        if len(y_pred.shape) == 4 and y_pred.shape[-1] == self.num_classes and floating:
            predictions = ops.cast(ops.argmax(logits_at_label_size(y_pred, labels), axis=-1), "int32")
        else:
            predictions = squeeze_labels(y_pred)
        valid = ops.not_equal(labels, self.ignore_label)
        weights = ops.cast(valid, "float64")
        if sample_weight is not None:
            weights *= ops.cast(ops.broadcast_to(sample_weight, ops.shape(labels)), "float64")
        check_below(
            labels,
            valid,
            self.num_classes,
            f"labels must be class ids below {self.num_classes} or the ignore label {self.ignore_label}",
        )
        check_below(
            predictions,
            ops.ones_like(valid),
            self.num_classes,
            f"predicted class ids must be below {self.num_classes}",
        )
        flat_index = ops.where(valid, labels * self.num_classes + predictions, 0)
        counts = ops.segment_sum(
            ops.reshape(weights, (-1,)), ops.reshape(flat_index, (-1,)), num_segments=self.num_classes**2
        )
        self.confusion_matrix.assign_add(ops.reshape(counts, (self.num_classes, self.num_classes)))

    def per_class_iou(self):
        """IoU of each class (num_classes,) float64; NaN for a class absent from both truth and prediction."""
        matrix = ops.convert_to_tensor(self.confusion_matrix)
        true_positives = ops.diagonal(matrix)
        union = ops.sum(matrix, axis=0) + ops.sum(matrix, axis=1) - true_positives
        return ops.where(union > 0, true_positives / ops.where(union > 0, union, 1.0), float("nan"))

    def result(self):
        iou = self.per_class_iou()
        present = ops.logical_not(ops.isnan(iou))
        count = ops.sum(ops.cast(present, iou.dtype))
        total = ops.sum(ops.where(present, iou, 0.0))
        return ops.cast(ops.where(count > 0, total / ops.where(count > 0, count, 1.0), 0.0), "float32")

    def pixel_accuracy(self):
        """Correctly classified counted pixels / counted pixels, float32 scalar (0 before any pixel)."""
        matrix = ops.convert_to_tensor(self.confusion_matrix)
        pixels = ops.sum(matrix)
        return ops.cast(ops.where(pixels > 0, ops.trace(matrix) / ops.where(pixels > 0, pixels, 1.0), 0.0), "float32")

    def results(self) -> dict:
        """{'miou': float, 'pixel_accuracy': float, 'per_class_iou': list of float or None (absent class)}, the
        `confusion.scores` of the matrix (summed over the replicas)."""
        return confusion.scores(ops.convert_to_numpy(self.confusion_matrix).astype("float64"))

    def reset_state(self):
        self.confusion_matrix.assign(ops.zeros(self.confusion_matrix.shape, self.confusion_matrix.dtype))

    def get_config(self):
        return {"num_classes": self.num_classes, "ignore_label": self.ignore_label, "name": self.name}
