"""`data check`: read every pair of a split, validate it, and count examples, sizes and class pixels."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.errors import DataError
from pipelines.formats import open_source
from pipelines.source import SegmentationSource


def check_source(source: SegmentationSource) -> dict[str, Any]:
    """Read every example of `source` and count.

    Returns {"source", "dataset" (its descriptor's name), "examples", "num_classes", "class_names", "class_pixels"
    (list indexed by class id), "ignore_label" (the descriptor's), "ignored_pixels", "image_height_range",
    "image_width_range", "bad" (list of {"file", "problem"})}. Bad pairs are listed only when the source was
    opened with skip_bad; otherwise the first one raises its DataError.
    """
    pixels = np.zeros(256, np.int64)
    heights, widths = [], []
    for _, mask, _ in source.examples():
        pixels += np.bincount(mask.ravel(), minlength=256)
        heights.append(mask.shape[0])
        widths.append(mask.shape[1])
    return {
        "source": source.name,
        "dataset": source.descriptor.name,
        "examples": len(heights),
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
        "class_pixels": pixels[: source.num_classes].tolist(),
        "ignore_label": source.descriptor.ignore_label,
        "ignored_pixels": int(pixels[source.descriptor.ignore_label]),
        "image_height_range": [min(heights), max(heights)] if heights else None,
        "image_width_range": [min(widths), max(widths)] if widths else None,
        "bad": source.skipped.as_list(),
    }


def check_dataset(format: str, root: str | None, split: str, **options: Any) -> dict[str, Any]:
    """Open the split with skip_bad and check it; a split that cannot be opened at all is one bad entry."""
    try:
        source = open_source(format, root, split, skip_bad=True, **options)
    except DataError as error:
        return {
            "source": f"{format}/{split}",
            "examples": 0,
            "class_pixels": [],
            "ignored_pixels": 0,
            "bad": [{"file": error.file, "problem": error.problem}],
        }
    return check_source(source)
