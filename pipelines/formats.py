"""`open_source(format, root, split, **options)`: one entry to every dataset format.

FORMATS names them without importing TensorFlow (the command line's `--help`); a format's reader module is
imported when a source is opened.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.source import SegmentationSource
    from pipelines.tfds_source import TFDSSource

FORMATS = ("voc", "voc_aug", "cityscapes", "ade20k", "folder", "tfrecord", "tfds", "synthetic")


def open_tfds(root: str | None, split: str, dataset: str | None = None, skip_bad: bool = False) -> TFDSSource:
    """TFDS `dataset` (oxford_iiit_pet, scene_parse150, cityscapes) prepared in data_dir `root`."""
    from pipelines.tfds_source import TFDSSource

    if dataset is None:
        raise ValueError("format 'tfds' needs the dataset name: option dataset=... (command line: --tfds-name)")
    return TFDSSource(dataset, split, root, skip_bad=skip_bad)


def open_synthetic(
    root: str | None,
    split: str,
    num_examples: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    skip_bad: bool = False,
) -> SegmentationSource:
    """The embedded synthetic set (`image_size` None: its default); `root` and `skip_bad` have no effect (it is
    generated, and valid)."""
    from pipelines.synthetic import IMAGE_SIZE, synthetic_source

    size = IMAGE_SIZE if image_size is None else image_size
    return synthetic_source(split, num_examples=num_examples, image_size=size, seed=seed)


def _openers() -> dict[str, Callable[..., SegmentationSource]]:
    from pipelines.readers import open_ade20k, open_cityscapes, open_folder, open_voc, open_voc_aug
    from pipelines.tfrecord import TFRecordSource

    return {
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
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if root is None and format not in ("synthetic", "tfds"):
        raise ValueError(f"format {format!r} needs a root folder")
    opener = _openers()[format]
    try:
        inspect.signature(opener).bind(root, split, **options)
    except TypeError as error:
        raise ValueError(f"format {format!r}: {error} (options given: {', '.join(options) or 'none'})") from error
    return opener(root, split, **options)
