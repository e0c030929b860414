"""TFDS datasets that carry segmentation masks, read from a local `data_dir` (never downloaded).

- `oxford_iiit_pet`: trimaps 1 = pet -> 1, 2 = background -> 0, 3 = border -> ignored.
- `scene_parse150`: TFDS builds it from ADE20K's instance annotations, whose first (R) channel holds the
  category: 0 -> ignored, 1..150 -> 0..149 as for the ADE20K reader.
- `cityscapes` (config `semantic_segmentation` unless one is given): labelIds -> the 19 train ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_deeplab import constants
from pipelines.decode import label_table, map_labels
from pipelines.errors import DataError
from pipelines.readers import ade20k_table
from pipelines.source import Example, SegmentationSource


class TFDSLayout(NamedTuple):
    """Where a TFDS dataset keeps its image, mask and example name, and how mask values map to class ids."""

    default_config: str | None
    image_key: str
    mask_key: str
    name_key: str | None
    table: np.ndarray
    class_names: tuple[str, ...]


def _cityscapes_table() -> np.ndarray:
    mapping = {label_id: constants.IGNORE_LABEL for label_id in range(constants.CITYSCAPES_MAX_LABEL_ID + 1)}
    mapping.update(constants.CITYSCAPES_LABEL_ID_TO_TRAIN_ID)
    return label_table(constants.CITYSCAPES_NUM_CLASSES, mapping)


TFDS_LAYOUTS = {
    "oxford_iiit_pet": TFDSLayout(
        None,
        "image",
        "segmentation_mask",
        "file_name",
        label_table(len(constants.OXFORD_PET_CLASS_NAMES), constants.OXFORD_PET_TRIMAP_TO_CLASS),
        constants.OXFORD_PET_CLASS_NAMES,
    ),
    "scene_parse150": TFDSLayout(None, "image", "annotation", None, ade20k_table(), constants.ADE20K_CLASS_NAMES),
    "cityscapes": TFDSLayout(
        "semantic_segmentation",
        "image_left",
        "segmentation_label",
        "image_id",
        _cityscapes_table(),
        constants.CITYSCAPES_CLASS_NAMES,
    ),
}


class TFDSSource(SegmentationSource):
    """One split of a prepared TFDS dataset in `data_dir`, e.g. TFDSSource("oxford_iiit_pet", "train", dir)."""

    records_are_small = False  # TFDS yields decoded images

    def __init__(self, dataset: str, split: str, data_dir: str | None, skip_bad: bool = False):
        import tensorflow_datasets as tfds

        base, _, config = dataset.partition("/")
        if base not in TFDS_LAYOUTS:
            raise ValueError(f"TFDS dataset must be one of {sorted(TFDS_LAYOUTS)} (with masks), got {dataset!r}")
        self.layout = TFDS_LAYOUTS[base]
        config = config or self.layout.default_config
        self.dataset_name = f"{base}/{config}" if config else base
        class_names = self.layout.class_names
        super().__init__(f"tfds:{self.dataset_name}/{split}", len(class_names), class_names, skip_bad)
        try:
            self._dataset = tfds.load(self.dataset_name, split=split, data_dir=data_dir, download=False)
        except (AssertionError, FileNotFoundError, ValueError) as error:
            problem = f"TFDS {self.dataset_name} split {split!r} is not prepared there: {error}"
            raise DataError(str(data_dir), problem) from error
        self._length = int(self._dataset.cardinality())
        if self._length < 0:
            self._length = sum(1 for _ in self._dataset)

    def __len__(self) -> int:
        return self._length

    def _check(self, image: np.ndarray, raw: np.ndarray, name: bytes) -> tuple[np.ndarray, np.ndarray]:
        where = f"{self.name}[{name.decode()}]"
        if raw.shape[:2] != image.shape[:2]:
            raise DataError(
                where, f"mask is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image is {image.shape[1]}x{image.shape[0]}"
            )
        return image, map_labels(raw[..., 0], self.layout.table, where)

    def records(self) -> tf.data.Dataset:
        layout = self.layout

        def select(index: tf.Tensor, features: dict) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            name = features[layout.name_key] if layout.name_key else tf.strings.as_string(index)
            return features[layout.image_key], features[layout.mask_key], name

        return self._dataset.enumerate().map(select)

    def decode_record(self, image: tf.Tensor, raw: tf.Tensor, name: tf.Tensor):
        image, mask = self._numpy_pair(self._check, image, raw, name)
        return image, mask, name

    def examples(self) -> Iterator[Example]:
        for image, raw, name in self.records().as_numpy_iterator():
            pair = self._guarded(self._check, image, raw, name)
            if pair is not None:
                yield (*pair, name.decode())
