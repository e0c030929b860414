"""TFRecord shards of tf.Example: the writer (`write_tfrecords`) and the reader (`TFRecordSource`).

A split `S` written to `OUT` is `OUT/S-00000-of-0000N.tfrecord` ... plus `OUT/S.json` (the dataset's name, classes
and colours, counts, shards).
The feature keys are those of the official DeepLab `build_voc2012_data.py`, so its shards read here too (give
`num_classes` when they have no .json). Images keep their encoded bytes (a JPEG stays the same JPEG); masks
are 8-bit grayscale PNGs of the class ids, so the round trip is lossless. Every file is written under a
temporary name and renamed once complete.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from keras_deeplab.descriptors import DatasetDescriptor, make_descriptor
from keras_deeplab.files import TEMPORARY_PREFIX, make_folder, write_json
from pipelines.decode import decode_pair, descriptor_table, encode_png
from pipelines.errors import DataError
from pipelines.source import Example, SegmentationSource

IMAGE_KEY = "image/encoded"
IMAGE_FORMAT_KEY = "image/format"
NAME_KEY = "image/filename"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
CHANNELS_KEY = "image/channels"
MASK_KEY = "image/segmentation/class/encoded"
MASK_FORMAT_KEY = "image/segmentation/class/format"
METADATA_FORMAT = "keras_deeplab.tfrecord"
MAX_OPEN_SHARDS = 16  # shards read at once by records()


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def shard_path(out_dir: str, split: str, shard: int, shards: int) -> str:
    return os.path.join(out_dir, f"{split}-{shard:05d}-of-{shards:05d}.tfrecord")


def write_tfrecords(source: SegmentationSource, out_dir: str, shards: int = 1, split: str | None = None) -> dict:
    """Write every example of `source` to `shards` TFRecord files in `out_dir` (round-robin), then `{split}.json`.

    `split` defaults to the source's split (the part of its name after '/'). Fewer shards than asked are written
    when there are fewer examples (one per example, and one empty shard for none): no shard is left empty.
    Returns the metadata written. Bad pairs raise a DataError naming the file before any shard is renamed into
    place, unless the source was opened with skip_bad (they are then listed in the metadata's "skipped").
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    split = split or source.name.rsplit("/", 1)[-1]
    make_folder(out_dir)
    counts = [0] * shards
    # Every shard is written in a temporary folder and renamed into place only when all are complete, under its
    # final name, which holds the count of shards written (known only once the examples are read).
    with tempfile.TemporaryDirectory(prefix=TEMPORARY_PREFIX, dir=out_dir) as folder:
        temporaries = [os.path.join(folder, f"{shard}.tfrecord") for shard in range(shards)]
        writers = [tf.io.TFRecordWriter(temporary) for temporary in temporaries]
        try:
            for index, example in enumerate(source.encoded_examples()):
                height, width = example.mask.shape
                features = {
                    IMAGE_KEY: _bytes(example.image_data),
                    IMAGE_FORMAT_KEY: _bytes(example.image_format.encode()),
                    NAME_KEY: _bytes(os.fsencode(example.name)),
                    HEIGHT_KEY: _int(height),
                    WIDTH_KEY: _int(width),
                    CHANNELS_KEY: _int(3),
                    MASK_KEY: _bytes(encode_png(example.mask)),
                    MASK_FORMAT_KEY: _bytes(b"png"),
                }
                record = tf.train.Example(features=tf.train.Features(feature=features))
                writers[index % shards].write(record.SerializeToString())
                counts[index % shards] += 1
        finally:
            for writer in writers:
                writer.close()
        counts = counts[: max(1, min(shards, sum(counts)))]  # round-robin: the empty shards are the last ones
        paths = [shard_path(out_dir, split, shard, len(counts)) for shard in range(len(counts))]
        for shard, path in enumerate(paths):
            os.replace(temporaries[shard], path)
    metadata = {
        "format": METADATA_FORMAT,
        "source": source.name,
        "split": split,
        "examples": sum(counts),
        "dataset": source.descriptor.name,
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
        "palette": [list(color) for color in source.descriptor.palette],
        "ignore_color": list(source.descriptor.ignore_color),
        "background": source.descriptor.background,
        "shards": [os.path.basename(path) for path in paths],
        "examples_per_shard": counts,
        "skipped": source.skipped.as_list(),
    }
    write_json(os.path.join(out_dir, f"{split}.json"), metadata)
    return metadata


def _descriptor(metadata: dict, class_names: Sequence[str]) -> DatasetDescriptor:
    """The dataset's descriptor from the metadata write_tfrecords wrote (its colours when its class names are
    those read), else one in the VOC colours; no label map either way."""
    name = metadata.get("dataset") or "tfrecord"
    if "palette" in metadata and list(class_names) == list(metadata["class_names"]):
        return DatasetDescriptor(
            name,
            tuple(class_names),
            tuple(tuple(color) for color in metadata["palette"]),
            ignore_color=tuple(metadata["ignore_color"]),
            background=metadata.get("background"),
        )
    return make_descriptor(name, class_names)


class TFRecordSource(SegmentationSource):
    """A split written by write_tfrecords (or the official DeepLab converter).

    Its descriptor is the written dataset's (names and colours from the metadata), without a label map: the
    masks hold class ids. `num_classes` / `class_names` override the metadata's (then colours are VOC's).
    `examples()` reads the shards one after the other; `records()` reads up to MAX_OPEN_SHARDS at once.
    """

    records_are_small = False  # serialized records hold the encoded images

    def __init__(
        self,
        root: str,
        split: str,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        skip_bad: bool = False,
    ):
        metadata_path = os.path.join(root, f"{split}.json")
        metadata: dict = {}
        if os.path.isfile(metadata_path):
            with open(metadata_path, encoding="utf-8") as file:
                metadata = json.load(file)
            self.shards = [os.path.join(root, name) for name in metadata["shards"]]
            self._length = int(metadata["examples"])
            num_classes = num_classes or metadata["num_classes"]
            class_names = class_names or metadata["class_names"]
        elif num_classes is None:
            raise DataError(metadata_path, "metadata is missing; give num_classes to read shards without it")
        else:
            self.shards = sorted(glob.glob(os.path.join(root, f"{split}-*-of-*.tfrecord")))
            self._length = None
        if not self.shards:
            raise DataError(os.path.join(root, f"{split}-*-of-*.tfrecord"), "no shards found")
        for path in self.shards:
            if not os.path.isfile(path):
                raise DataError(path, f"shard is missing (listed in {metadata_path})")
        class_names = class_names or [f"class_{index}" for index in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"tfrecord/{split}: {len(class_names)} class names for {num_classes} classes")
        super().__init__(f"tfrecord/{split}", _descriptor(metadata, class_names), skip_bad)
        self.table = descriptor_table(self.descriptor)

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(1 for path in self.shards for _ in self._shard_records(path))
        return self._length

    def _shard_records(self, path: str) -> Iterator[bytes]:
        try:
            yield from tf.data.TFRecordDataset(path).as_numpy_iterator()
        except tf.errors.OpError as error:
            raise DataError(path, f"cannot read the TFRecord shard: {error.message}") from error

    def _decode(self, shard: str, serialized: bytes) -> Example:
        try:
            features = tf.train.Example.FromString(serialized).features.feature
            name = os.fsdecode(features[NAME_KEY].bytes_list.value[0])
            image_data = features[IMAGE_KEY].bytes_list.value[0]
            mask_data = features[MASK_KEY].bytes_list.value[0]
        except (IndexError, ValueError) as error:
            raise DataError(shard, f"a record lacks {NAME_KEY}, {IMAGE_KEY} or {MASK_KEY}: {error}") from error
        where = f"{shard}[{name}]"
        return (*decode_pair(image_data, mask_data, self.table, where, where), name)

    def examples(self) -> Iterator[Example]:
        for path in self.shards:
            try:
                for serialized in self._shard_records(path):
                    example = self._guarded(self._decode, path, serialized)
                    if example is not None:
                        yield example
            except DataError as error:  # with skip_bad, only an unreadable shard gets here: skip its rest
                if not self.skip_bad:
                    raise
                self.skipped.record(error)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.shards)

    def records(self) -> tf.data.Dataset:
        return self.records_of_files(self.shards)

    def records_of_files(self, files: Sequence[str]) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(list(files)).interleave(
            lambda path: tf.data.TFRecordDataset(path).map(lambda record: (path, record)),
            cycle_length=min(len(files), MAX_OPEN_SHARDS),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def decode_record(self, shard: tf.Tensor, serialized: tf.Tensor):
        spec = {
            NAME_KEY: tf.io.FixedLenFeature([], tf.string),
            IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            MASK_KEY: tf.io.FixedLenFeature([], tf.string),
        }
        features = tf.io.parse_single_example(serialized, spec)

        def read(shard: bytes, name: bytes, image_data: bytes, mask_data: bytes) -> tuple[np.ndarray, np.ndarray]:
            where = f"{os.fsdecode(shard)}[{os.fsdecode(name)}]"
            return decode_pair(image_data, mask_data, self.table, where, where)

        image, mask = self._numpy_pair(read, shard, features[NAME_KEY], features[IMAGE_KEY], features[MASK_KEY])
        return image, mask, features[NAME_KEY]
