"""`open_source(format, root, split, **options)`: one entry to every dataset format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipelines.readers import open_ade20k, open_cityscapes, open_folder, open_voc, open_voc_aug
from pipelines.source import SegmentationSource
from pipelines.synthetic import IMAGE_SIZE, synthetic_source
from pipelines.tfds_source import TFDSSource
from pipelines.tfrecord import TFRecordSource


def open_tfds(root: str | None, split: str, dataset: str | None = None, skip_bad: bool = False) -> TFDSSource:
    """TFDS `dataset` (oxford_iiit_pet, scene_parse150, cityscapes) prepared in data_dir `root`."""
    if dataset is None:
        raise ValueError("format 'tfds' needs the dataset name: option dataset=... (command line: --tfds-name)")
    return TFDSSource(dataset, split, root, skip_bad=skip_bad)


def open_synthetic(
    root: str | None,
    split: str,
    num_examples: int | None = None,
    image_size: int = IMAGE_SIZE,
    seed: int = 0,
    skip_bad: bool = False,
) -> SegmentationSource:
    """The embedded synthetic set; `root` and `skip_bad` have no effect (it is generated, and valid)."""
    return synthetic_source(split, num_examples=num_examples, image_size=image_size, seed=seed)


FORMATS: dict[str, Callable[..., SegmentationSource]] = {
    "voc": open_voc,
    "voc_aug": open_voc_aug,
    "cityscapes": open_cityscapes,
    "ade20k": open_ade20k,
    "folder": open_folder,
    "tfrecord": TFRecordSource,
    "tfds": open_tfds,
    "synthetic": open_synthetic,
}


def open_source(format: str, root: str | None, split: str, **options: Any) -> SegmentationSource:
    """Open split `split` of the dataset in `root` stored as `format` (one of FORMATS).

    Options: `skip_bad` (all formats: record bad pairs in `source.skipped` instead of raising); tfds:
    `dataset`; synthetic: `num_examples`, `image_size`, `seed`; tfrecord: `num_classes`, `class_names`.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    if root is None and format not in ("synthetic", "tfds"):
        raise ValueError(f"format {format!r} needs a root folder")
    return FORMATS[format](root, split, **options)
