"""Confusion matrices of class maps and their scores (mean IoU, pixel accuracy, per-class IoU), in NumPy.

The one definition of the scores: `metrics.MeanIoU` reports its matrix through `scores`, and the synthetic set's
baselines count theirs with `confusion_matrix`. No TensorFlow here.
"""

from __future__ import annotations

import numpy as np

from keras_deeplab.constants import IGNORE_LABEL


def confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, ignore_label: int = IGNORE_LABEL
) -> np.ndarray:
    """int64 (num_classes, num_classes): rows the true class, columns the predicted one, of every pixel whose
    label is not `ignore_label`. `labels` and `predictions` are class ids of the same shape; ValueError when a
    counted label or prediction is not a class id."""
    labels = np.asarray(labels).astype(np.int64, copy=False)
    predictions = np.asarray(predictions).astype(np.int64, copy=False)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    valid = labels != ignore_label
    truth, predicted = labels[valid], predictions[valid]
    for what, values in (
        (f"labels must be class ids below {num_classes} or the ignore label {ignore_label}", truth),
        (f"predicted class ids must be below {num_classes}", predicted),
    ):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{what}, got {values.min()}..{values.max()}")
    counts = np.bincount(truth * num_classes + predicted, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """float64 (num_classes,): true positives / (truth + predicted - true positives); NaN for a class that
    occurs in neither the truth nor the prediction."""
    confusion = np.asarray(confusion, np.float64)
    true_positives = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positives
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, true_positives / np.where(union > 0, union, 1.0), np.nan)


def scores(confusion: np.ndarray) -> dict:
    """{'miou': the mean IoU over the classes that occur in the truth or the prediction (0.0 when none does),
    'pixel_accuracy': correct / counted pixels (0.0 before any pixel), 'per_class_iou': a list with a float per
    class, None for a class absent from both} of a confusion matrix (rows truth, columns prediction)."""
    confusion = np.asarray(confusion, np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"a confusion matrix is square, got shape {confusion.shape}")
    iou = per_class_iou(confusion)
    present = ~np.isnan(iou)
    total = confusion.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": float(np.trace(confusion) / total) if total > 0 else 0.0,
        "per_class_iou": [float(value) if ok else None for value, ok in zip(iou, present, strict=True)],
    }
