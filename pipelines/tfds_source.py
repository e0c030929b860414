"""TFDS datasets that carry segmentation masks, read from a local `data_dir` (never downloaded).

- `oxford_iiit_pet`: trimaps 1 = pet -> 1, 2 = background -> 0, 3 = border -> ignored.
- `scene_parse150`: TFDS builds it from ADE20K's instance annotations, RGB PNGs whose first (R) channel
  holds the category: 0 ignored, 1..150 the class ids, as for the ADE20K reader.
- `cityscapes` (config `semantic_segmentation` unless one is given): labelIds -> the 19 train ids.

Images and masks are read from TFDS still encoded (`tfds.decode.SkipDecoding`), so shuffle buffers hold
bytes, and decoded with the same PIL functions as every other format.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_deeplab.descriptors import ADE20K, CITYSCAPES, OXFORD_PET, DatasetDescriptor
from pipelines.decode import decode_pair, descriptor_table
from pipelines.errors import DataError
from pipelines.source import Example, SegmentationSource


class TFDSLayout(NamedTuple):
    """Where a TFDS dataset keeps its image, mask and example name; its descriptor maps mask values to class ids."""

    default_config: str | None
    image_key: str
    mask_key: str
    name_key: str | None  # None: examples are named by their position in the split
    mask_channel: int | None  # the channel holding the ids when the mask PNG is RGB
    descriptor: DatasetDescriptor


TFDS_LAYOUTS = {
    "oxford_iiit_pet": TFDSLayout(None, "image", "segmentation_mask", "file_name", None, OXFORD_PET),
    "scene_parse150": TFDSLayout(None, "image", "annotation", None, 0, ADE20K),
    "cityscapes": TFDSLayout("semantic_segmentation", "image_left", "segmentation_label", "image_id", None, CITYSCAPES),
}


class TFDSSource(SegmentationSource):
    """One split of a prepared TFDS dataset in `data_dir`, e.g. TFDSSource("oxford_iiit_pet", "train", dir)."""

    records_are_small = False  # records hold encoded images

    def __init__(self, dataset: str, split: str, data_dir: str | None, skip_bad: bool = False):
        import tensorflow_datasets as tfds

        base, _, config = dataset.partition("/")
        if base not in TFDS_LAYOUTS:
            raise ValueError(f"TFDS dataset must be one of {sorted(TFDS_LAYOUTS)} (with masks), got {dataset!r}")
        self.layout = TFDS_LAYOUTS[base]
        config = config or self.layout.default_config
        self.dataset_name = f"{base}/{config}" if config else base
        super().__init__(f"tfds:{self.dataset_name}/{split}", self.layout.descriptor, skip_bad)
        self.table = descriptor_table(self.layout.descriptor)
        encoded = {self.layout.image_key: tfds.decode.SkipDecoding(), self.layout.mask_key: tfds.decode.SkipDecoding()}
        try:
            self._dataset = tfds.load(
                self.dataset_name, split=split, data_dir=data_dir, download=False, decoders=encoded
            )
        except (AssertionError, FileNotFoundError, ValueError) as error:
            problem = f"TFDS {self.dataset_name} split {split!r} is not prepared there: {error}"
            raise DataError(str(data_dir), problem) from error
        self._length = int(self._dataset.cardinality())
        if self._length < 0:
            self._length = sum(1 for _ in self._dataset)

    def __len__(self) -> int:
        return self._length

    def _decode(self, image_data: bytes, mask_data: bytes, name: bytes) -> tuple[np.ndarray, np.ndarray]:
        where = f"{self.name}[{name.decode()}]"
        return decode_pair(image_data, mask_data, self.table, where, where, self.layout.mask_channel)

    def records(self) -> tf.data.Dataset:
        layout = self.layout

        def select(index: tf.Tensor, features: dict) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            name = features[layout.name_key] if layout.name_key else tf.strings.as_string(index)
            return features[layout.image_key], features[layout.mask_key], name

        return self._dataset.enumerate().map(select)

    def decode_record(self, image_data: tf.Tensor, mask_data: tf.Tensor, name: tf.Tensor):
        image, mask = self._numpy_pair(self._decode, image_data, mask_data, name)
        return image, mask, name

    def examples(self) -> Iterator[Example]:
        for image_data, mask_data, name in self.records().as_numpy_iterator():
            pair = self._guarded(self._decode, image_data, mask_data, name)
            if pair is not None:
                yield (*pair, name.decode())
