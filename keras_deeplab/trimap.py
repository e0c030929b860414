"""Boundary accuracy: mIoU over the pixels near label boundaries (the "trimap" of DeepLab v1 and v3+).

DeepLab v1 (section 5) and v3+ (Fig. 5) measure how well object boundaries are placed by counting only the
pixels within a band of N pixels around the boundaries and plotting mIoU against N. Here:

- A boundary pixel is one whose label differs from one of its 4 neighbours, the ignore label 255 included. On
  PASCAL VOC, where every object is outlined by a band of 255 ("void") pixels, the boundary pixels are then the
  edges of that void band, and the band below is the papers' "band around the void labels"; on datasets without
  void outlines it is the band around the changes of class. The image border is not a boundary.
- The band of width N is that boundary dilated by N pixels with a (2N+1) x (2N+1) square: every pixel within
  Chebyshev distance N of a boundary pixel (the boundary itself is width 0).
- Pixels labelled 255 are never counted, inside the band or out (as in `metrics.MeanIoU`).

`TrimapMeanIoU` keeps one `metrics.MeanIoU` per width and feeds it the band as the pixels' sample weight, so
the IoU arithmetic is that of the whole-image metric. Pure NumPy (cumulative sums), O(H*W) per width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_deeplab import constants


def boundary_mask(labels) -> np.ndarray:
    """bool (H, W): True where a pixel's label differs from its upper, lower, left or right neighbour."""
    labels = _checked_label_map(labels)
    boundary = np.zeros(labels.shape, bool)
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    boundary[1:, :] |= vertical
    boundary[:-1, :] |= vertical
    boundary[:, 1:] |= horizontal
    boundary[:, :-1] |= horizontal
    return boundary


def band_mask(labels, width: int) -> np.ndarray:
    """bool (H, W): the pixels within `width` pixels (Chebyshev distance) of a boundary pixel of `labels`."""
    return band_masks(labels, (width,))[0]


def band_masks(labels, widths: Sequence[int] = constants.TRIMAP_WIDTHS) -> np.ndarray:
    """bool (len(widths), H, W): `band_mask` for several widths, the boundary found once."""
    widths = _checked_widths(widths)
    boundary = boundary_mask(labels)
    return np.stack([_dilate(_dilate(boundary, width, axis=0), width, axis=1) for width in widths])


def _dilate(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """1-D dilation of a bool mask along `axis` by `radius` pixels: any True within [i - radius, i + radius]."""
    if radius == 0:
        return mask
    size = mask.shape[axis]
    counts = np.cumsum(mask, axis=axis, dtype=np.int32)
    zero_shape = list(mask.shape)
    zero_shape[axis] = 1
    counts = np.concatenate([np.zeros(zero_shape, np.int32), counts], axis=axis)  # counts[i] = sum of mask[:i]
    index = np.arange(size)
    upper = np.take(counts, np.minimum(index + radius + 1, size), axis=axis)
    lower = np.take(counts, np.maximum(index - radius, 0), axis=axis)
    return upper > lower


class TrimapMeanIoU:
    """mIoU and pixel accuracy within the trimap band of each width, accumulated over images.

    `update(labels, predictions)`: labels class ids (H, W) or a batch (B, H, W) / (B, H, W, 1), ignore label
    allowed; predictions class ids of the same shape or logits/probabilities (B, h, w, num_classes), as
    `metrics.MeanIoU.update_state` takes them. `results()`: {width: {'miou', 'pixel_accuracy', 'per_class_iou',
    'pixels'}} with 'pixels' the number of counted (band, non-ignored) pixels, plus the same for the whole
    image under the key 'all'.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = constants.TRIMAP_WIDTHS,
        ignore_label: int = constants.IGNORE_LABEL,
    ) -> None:
        from keras_deeplab.metrics import MeanIoU

        self.widths = _checked_widths(widths)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.metrics = {
            width: MeanIoU(num_classes, ignore_label, name=f"trimap_{width}_mean_iou") for width in self.widths
        }
        self.metrics["all"] = MeanIoU(num_classes, ignore_label, name="trimap_all_mean_iou")

    def update(self, labels, predictions) -> None:
        """Add one image or a batch of images."""
        labels = np.asarray(labels)
        if labels.ndim == 4 and labels.shape[-1] == 1:
            labels = labels[..., 0]
        if labels.ndim == 2:
            labels = labels[None]
            predictions = np.asarray(predictions)[None]
        if labels.ndim != 3:
            raise ValueError(f"labels must be (H, W), (B, H, W) or (B, H, W, 1) class ids, got shape {labels.shape}")
        bands = np.stack([band_masks(label_map, self.widths) for label_map in labels], axis=1)  # (widths, B, H, W)
        for width, band in zip(self.widths, bands, strict=True):
            self.metrics[width].update_state(labels, predictions, sample_weight=band.astype(np.float64))
        self.metrics["all"].update_state(labels, predictions)

    def results(self) -> dict:
        """{width or 'all': {'miou', 'pixel_accuracy', 'per_class_iou', 'pixels'}}."""
        results = {}
        for key, metric in self.metrics.items():
            results[key] = metric.results()
            results[key]["pixels"] = round(float(np.sum(metric.confusion_matrix.numpy())))
        return results

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset_state()


def _checked_label_map(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise ValueError(f"labels must be one label map (H, W) or (H, W, 1), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    return labels


def _checked_widths(widths) -> tuple[int, ...]:
    widths = tuple(widths)
    if not widths:
        raise ValueError("widths must name at least one band width")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 0:
            raise ValueError(f"widths must be non-negative integers (pixels), got {width!r}")
    if len(set(widths)) != len(widths):
        raise ValueError(f"widths must not repeat, got {widths}")
    return tuple(int(width) for width in widths)
