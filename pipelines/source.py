"""Sources: one split of a segmentation dataset, read eagerly (`examples()`) or fed to tf.data (`records()`).

An example is (image uint8 (H, W, 3) RGB, mask uint8 (H, W) of class ids 0..num_classes-1 or IGNORE_LABEL,
name str). For tf.data a source gives `records()`, a dataset of small items in a fixed order (file paths,
indices, serialized records), and `decode_record(*record)`, a graph function turning one into
(image uint8 (H, W, 3), mask uint8 (H, W), name string) in parallel map calls. A bad pair raises a `DataError`
naming its file, inside tf.data too (where it reaches Python as an OpError whose message is a traceback:
`data_errors` raises the DataError itself); with `skip_bad=True` it is recorded in `source.skipped` instead and
`decode_record` gives an empty (0x0) image that `is_decoded` filters out.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from keras_deeplab.descriptors import DatasetDescriptor
from pipelines.decode import (
    decode_pair,
    descriptor_table,
    encode_png,
    label_table,
    map_labels,
    read_file,
    read_pair,
)
from pipelines.errors import DataError, SkippedExamples
from pipelines.image_header import read_image_header

Example = tuple[np.ndarray, np.ndarray, str]
READ_THREADS = 4  # PIL releases the GIL while decoding, so eager reads overlap
READ_CHUNK = 32


class _PythonCallsInTFData:
    """Counts the Python decode calls that tf.data threads are running, and drains them at interpreter exit.

    A tf.data iterator still alive when Python finalizes (a global, a traceback) is destroyed after the
    interpreter stops handing out the GIL; a map call that then starts a Python function never returns, and
    the iterator's destructor waits for it forever. At exit this refuses new calls (they raise, which stops the
    pipelines once their buffers are full) and waits until the running ones have finished.
    """

    QUIET_SECONDS = 0.2  # no call started or running for this long: the pipelines are idle
    MAX_WAIT_SECONDS = 10.0

    def __init__(self):
        self._lock = threading.Lock()
        self._running = 0
        self._closing = False
        self._last_activity = time.monotonic()

    def __enter__(self):
        with self._lock:
            self._last_activity = time.monotonic()
            if self._closing:
                raise RuntimeError("the Python interpreter is exiting")
            self._running += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self._running -= 1
            self._last_activity = time.monotonic()

    def drain(self) -> None:
        with self._lock:
            self._closing = True
        deadline = time.monotonic() + self.MAX_WAIT_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                if self._running == 0 and time.monotonic() - self._last_activity >= self.QUIET_SECONDS:
                    return
            time.sleep(0.02)


_PYTHON_CALLS = _PythonCallsInTFData()
atexit.register(_PYTHON_CALLS.drain)


class EncodedExample(NamedTuple):
    """One pair as the TFRecord writer stores it: the image's encoded bytes and the decoded class-id mask."""

    image_data: bytes
    image_format: str  # "jpeg" or "png"
    mask: np.ndarray  # uint8 (H, W) class ids or IGNORE_LABEL
    name: str


def image_format(data: bytes) -> str | None:
    """'jpeg' or 'png' from the image's header (read_image_header), None for other formats."""
    try:
        return {"JPEG": "jpeg", "PNG": "png"}.get(read_image_header(data).format)
    except ValueError:
        return None


class SegmentationSource:
    """One split of a segmentation dataset (see the module docstring), carrying its dataset's descriptor
    (class names, ignore label, colours, label map)."""

    records_are_small = True  # the whole of records() fits a shuffle buffer (paths, indices)
    files: tuple[str, ...] = ()  # the files records() reads whole, one after another (TFRecord shards), if any

    def __init__(self, name: str, descriptor: DatasetDescriptor, skip_bad: bool = False):
        self.name = name
        self.descriptor = descriptor
        self.skip_bad = skip_bad
        self.skipped = SkippedExamples()
        self._skipped_before_decoding = 0  # files already missing when the source was opened
        self.failure: DataError | None = None  # the first DataError raised inside tf.data (see `data_errors`)

    @property
    def num_classes(self) -> int:
        return self.descriptor.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.descriptor.class_names

    def __len__(self) -> int:
        raise NotImplementedError

    def examples(self) -> Iterator[Example]:
        """Every valid example in order, decoded and validated (bad ones raise, or are skipped and recorded)."""
        raise NotImplementedError

    def records(self) -> tf.data.Dataset:
        raise NotImplementedError

    def records_of_files(self, files: Sequence[str]) -> tf.data.Dataset:
        """The records of some of `self.files` only (sharding by file); only sources that have files have it."""
        raise NotImplementedError(f"{self.name} does not read its records from files")

    def decode_record(self, *record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def encoded_examples(self) -> Iterator[EncodedExample]:
        """Examples for the TFRecord writer; the image PNG-encoded (lossless) unless a source keeps its bytes."""
        for image, mask, name in self.examples():
            yield EncodedExample(encode_png(image), "png", mask, name)

    def _guarded(self, read: Callable[..., Any], *args: Any) -> Any:
        """read(*args), or None after recording a DataError when skip_bad is set."""
        try:
            return read(*args)
        except DataError as error:
            if not self.skip_bad:
                raise
            self.skipped.record(error)
            return None

    def _numpy_pair(self, read: Callable[..., tuple[np.ndarray, np.ndarray]], *args: tf.Tensor):
        """`read(*args as numpy values)` -> (image, mask) inside the graph, through tf.numpy_function.

        A DataError surfaces as the op's error (with the file's name in its message) unless skip_bad is set;
        then the pair becomes an empty placeholder, and once every example has been skipped it is an error.
        """

        def run(*values):
            try:
                with _PYTHON_CALLS:
                    pair = self._guarded(read, *values)
                if pair is None and len(self.skipped) - self._skipped_before_decoding >= len(self):
                    raise DataError(self.name, f"every example is bad, nothing to read. {self.skipped.report()}")
            except DataError as error:
                self.failure = self.failure or error
                raise
            if pair is None:
                return np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8)
            return pair

        image, mask = tf.numpy_function(run, list(args), [tf.uint8, tf.uint8], stateful=False)
        image.set_shape([None, None, 3])
        mask.set_shape([None, None])
        return image, mask

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {len(self)} examples, {self.num_classes} classes>"


@contextlib.contextmanager
def data_errors(*sources: SegmentationSource) -> Iterator[None]:
    """Around the reading of `sources` through tf.data: a DataError one of them raised there (which tf.data turns
    into an OpError whose message is a Python traceback) is raised as itself, one line naming the file."""
    try:
        yield
    except tf.errors.OpError as error:
        failure = next((source.failure for source in sources if source.failure is not None), None)
        if failure is None:
            raise
        raise failure from error


def _why_not_a_file(path: str) -> str:
    """What is at `path` instead of a readable file: nothing, a folder, or a link that leads nowhere."""
    if os.path.isdir(path):
        return "is a folder, not a file"
    if os.path.islink(path):
        return "is a symbolic link that leads nowhere (its target is missing, or the links form a loop)"
    return "file is missing"


def is_decoded(image: tf.Tensor, mask: tf.Tensor, name: tf.Tensor) -> tf.Tensor:
    """False for the empty placeholder of a skipped bad pair (filter predicate)."""
    return tf.size(mask) > 0


class FilePairSource(SegmentationSource):
    """Image and mask files on disk (VOC, SBD, Cityscapes, ADE20K, folders), read in parallel with PIL.

    Raw mask values become class ids through the descriptor's label map (see decode.descriptor_table; no map:
    the identity on 0..K-1 and the ignore label). Files missing from disk raise a DataError naming the first
    (and counting the others) at construction, or with skip_bad are recorded as skipped and left out;
    `listed_in` names the list that asked for them.
    """

    def __init__(
        self,
        name: str,
        pairs: Sequence[tuple[str, str, str]],
        *,
        descriptor: DatasetDescriptor,
        skip_bad: bool = False,
        listed_in: str | None = None,
    ):
        super().__init__(name, descriptor, skip_bad)
        self.table = descriptor_table(descriptor)
        self.pairs = self._present(pairs, listed_in)

    def _present(self, pairs: Sequence[tuple[str, str, str]], listed_in: str | None) -> list[tuple[str, str, str]]:
        where = f" (named in {listed_in})" if listed_in else ""
        present, missing = [], []
        for pair in pairs:
            absent = [
                DataError(path, f"{_why_not_a_file(path)}{where}") for path in pair[:2] if not os.path.isfile(path)
            ]
            if absent:
                missing += absent
            else:
                present.append(tuple(pair))
        if missing and not self.skip_bad:
            others = f" (and {len(missing) - 1} more missing files)" if len(missing) > 1 else ""
            raise DataError(missing[0].file, missing[0].problem + others.replace("missing", "unusable"))
        for error in missing:
            self.skipped.record(error)
        self._skipped_before_decoding = len(self.skipped)
        return present

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, index: int) -> Example | None:
        image_path, mask_path, name = self.pairs[index]
        pair = self._guarded(read_pair, image_path, mask_path, self.table)
        return None if pair is None else (*pair, name)

    def examples(self) -> Iterator[Example]:
        with ThreadPoolExecutor(READ_THREADS) as pool:
            for start in range(0, len(self.pairs), READ_CHUNK):
                indices = range(start, min(start + READ_CHUNK, len(self.pairs)))
                yield from (example for example in pool.map(self._read, indices) if example is not None)

    def records(self) -> tf.data.Dataset:
        # os.fsencode: a file name that is not UTF-8 (a str holding surrogate escapes) keeps its bytes
        columns = (tf.constant([os.fsencode(pair[column]) for pair in self.pairs], tf.string) for column in range(3))
        return tf.data.Dataset.from_tensor_slices(tuple(columns))

    def decode_record(self, image_path: tf.Tensor, mask_path: tf.Tensor, name: tf.Tensor):
        def read(image_path: bytes, mask_path: bytes):
            return read_pair(os.fsdecode(image_path), os.fsdecode(mask_path), self.table)

        image, mask = self._numpy_pair(read, image_path, mask_path)
        return image, mask, name

    def encoded_examples(self) -> Iterator[EncodedExample]:
        """The image files' own bytes (JPEG stays JPEG), validated by decoding; other formats become PNG."""
        for image_path, mask_path, name in self.pairs:
            encoded = self._guarded(self._encoded, image_path, mask_path, name)
            if encoded is not None:
                yield encoded

    def _encoded(self, image_path: str, mask_path: str, name: str) -> EncodedExample:
        image_data = read_file(image_path)
        image, mask = decode_pair(image_data, read_file(mask_path), self.table, image_path, mask_path)
        file_format = image_format(image_data)
        if file_format is None or image.shape[:2] != mask.shape:  # another format, or turned by its EXIF orientation
            image_data, file_format = encode_png(image), "png"
        return EncodedExample(image_data, file_format, mask, name)


class ArraySource(SegmentationSource):
    """Examples held in memory: images uint8 (N, H, W, 3), masks uint8 (N, H, W), N names (synthetic data)."""

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        masks: np.ndarray,
        names: Sequence[str],
        *,
        descriptor: DatasetDescriptor,
    ):
        super().__init__(name, descriptor)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{name}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if masks.shape != images.shape[:3] or len(names) != len(images):
            raise ValueError(f"{name}: {masks.shape} masks and {len(names)} names for images {images.shape}")
        identity = label_table(descriptor.num_classes, ignore_label=descriptor.ignore_label)  # masks hold class ids
        map_labels(masks, identity, name)
        self.images, self.masks, self.names = images, masks.astype(np.uint8), list(names)
        self._tensors: tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def examples(self) -> Iterator[Example]:
        yield from zip(self.images, self.masks, self.names, strict=True)

    def records(self) -> tf.data.Dataset:
        return tf.data.Dataset.range(len(self))

    def decode_record(self, index: tf.Tensor):
        if self._tensors is None:
            with tf.init_scope():  # eager tensors captured by reference, not constants baked into the graph
                self._tensors = (tf.constant(self.images), tf.constant(self.masks), tf.constant(self.names))
        images, masks, names = self._tensors
        return tf.gather(images, index), tf.gather(masks, index), tf.gather(names, index)
