"""Decoding and validating one (image, mask) pair, with PIL, exactly as `numpy.array(PIL.Image.open(path))`.

Every reader, the TFRecord round trip, `data check` and the tf.data pipelines (through `tf.numpy_function`)
decode with these functions, so every path sees the same pixels and every bad file raises a `DataError` that
names it. PIL is used for masks because `tf.io.decode_png` turns a palette PNG into its RGB colours, where
VOC's class ids are the palette *indices*.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from keras_deeplab.constants import IGNORE_LABEL
from keras_deeplab.descriptors import DatasetDescriptor
from pipelines.errors import DataError
from pipelines.image_header import apply_orientation, exif_orientation, read_image_header

MASK_MODES = ("P", "L", "1")  # 8-bit palette (indices are the ids), 8-bit grayscale (values are the ids), 1-bit
IMAGE_MODES = ("RGB", "L", "P", "CMYK", "YCbCr", "RGBA", "LA")  # converted to RGB (alpha dropped); 16-bit refused
INVALID = -1  # a label table entry for raw values that are neither a class nor ignored
# The most pixels (height x width) of a dataset image or mask, checked from its header before it is decoded: the
# default pixel limit of `predict` and `serve` (serving.settings.DEFAULT_MAX_PIXELS). Datasets in use stay far
# below (VOC 500x375, Cityscapes 2048x1024, Mapillary Vistas about 4000x3000); a 777-byte header-only 20000x20000
# JPEG ended `data check` with PIL's DecompressionBombError, a real 12000x12000 one took `evaluate` past 8 GB.
MAX_IMAGE_PIXELS = 4096 * 4096


def label_table(
    num_classes: int, mapping: Mapping[int, int] | None = None, ignore_label: int = IGNORE_LABEL
) -> np.ndarray:
    """A lookup table (int16, 256 entries) from raw mask values to class ids, `ignore_label` or INVALID.

    Without `mapping`, raw values 0..num_classes-1 and `ignore_label` map to themselves (VOC, folders,
    TFRecords); with it, exactly the listed raw values are valid and map to the given ids.
    """
    table = np.full(256, INVALID, np.int16)
    if mapping is None:
        table[:num_classes] = np.arange(num_classes)
        table[ignore_label] = ignore_label
    else:
        for raw, label in mapping.items():
            if not (0 <= label < num_classes or label == ignore_label):
                raise ValueError(f"label table maps raw value {raw} to {label}, not a class id or {ignore_label}")
            table[raw] = label
    return table


def descriptor_table(descriptor: DatasetDescriptor) -> np.ndarray:
    """The label table of a dataset: its descriptor's label map (stored value -> class id), or the identity."""
    return label_table(descriptor.num_classes, descriptor.label_map, descriptor.ignore_label)


def _open(data: bytes, file: str, what: str) -> Image.Image:
    """The decoded image of `data`, after its size (from the header) is checked against MAX_IMAGE_PIXELS."""
    if not data:
        raise DataError(file, f"the {what} file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # PIL's own, looser limit warns past 89 million pixels
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # the header only
        size = image.size
        if size[0] * size[1] <= MAX_IMAGE_PIXELS:
            image.load()
    except Image.DecompressionBombError as error:  # PIL's own limit, past 178 million pixels
        raise _over_the_limit(data, file, what, None) from error
    except UnidentifiedImageError as error:  # its message names a BytesIO object, not the file
        raise DataError(file, f"cannot decode the {what}: not an image format PIL reads") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(file, f"cannot decode the {what}: {error}") from error
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise _over_the_limit(data, file, what, size)
    return image


def _over_the_limit(data: bytes, file: str, what: str, size: tuple[int, int] | None) -> DataError:
    """The DataError of an image over MAX_IMAGE_PIXELS; `size` (width, height) from its header (PIL's, else ours)."""
    if size is None:
        try:
            header = read_image_header(data)
            size = header.width, header.height
        except ValueError:  # a format whose header read_image_header does not read: PIL's message said enough
            pass
    shown = "more than PIL's limit of pixels" if size is None else f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels"
    return DataError(file, f"the {what} is {shown}, over the limit of {MAX_IMAGE_PIXELS}; not decoded")


def decode_image(data: bytes, file: str) -> np.ndarray:
    """Encoded JPEG/PNG/... bytes -> uint8 (H, W, 3) RGB; `file` names them in errors."""
    image = _open(data, file, "image")
    if image.mode not in IMAGE_MODES:
        raise DataError(file, f"image mode {image.mode!r} is not supported; expected one of {IMAGE_MODES}")
    return np.asarray(image.convert("RGB"))


def decode_mask(data: bytes, file: str, channel: int | None = None) -> np.ndarray:
    """Encoded PNG bytes -> uint8 (H, W) raw values: palette indices for 'P' images, gray values for 'L'.

    `channel` reads the ids from that channel of an RGB(A) mask instead (TFDS's scene_parse150).
    """
    mask = _open(data, file, "mask")
    if channel is not None:
        if mask.mode not in ("RGB", "RGBA"):
            raise DataError(
                file, f"mask mode is {mask.mode!r}; expected an RGB(A) PNG with class ids in channel {channel}"
            )
        return np.array(mask)[..., channel]
    if mask.mode not in MASK_MODES:
        raise DataError(
            file,
            f"mask mode is {mask.mode!r}; expected an 8-bit single-channel PNG of class ids (mode 'P' or 'L')",
        )
    return np.array(mask, dtype=np.uint8)


def map_labels(raw: np.ndarray, table: np.ndarray, file: str) -> np.ndarray:
    """Raw mask values -> class ids through `table` (see label_table); DataError on a value the table refuses."""
    mapped = table[raw]
    if (mapped == INVALID).any():
        bad = np.unique(raw[mapped == INVALID])
        valid = np.flatnonzero(table != INVALID)
        raise DataError(
            file,
            f"mask values {bad[:10].tolist()} are neither a class nor the ignore label "
            f"(valid raw values: {_ranges(valid)})",
        )
    return mapped.astype(np.uint8)


def _ranges(values: np.ndarray) -> str:
    """[0 1 2 3 7 255] -> '0..3, 7, 255'."""
    parts, start = [], None
    for index, value in enumerate(values):
        if start is None:
            start = value
        if index + 1 == len(values) or values[index + 1] != value + 1:
            parts.append(f"{start}..{value}" if value > start else f"{value}")
            start = None
    return ", ".join(parts)


def decode_pair(
    image_data: bytes,
    mask_data: bytes,
    table: np.ndarray,
    image_file: str,
    mask_file: str,
    mask_channel: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and validate one pair: (uint8 (H, W, 3) image, uint8 (H, W) class ids or IGNORE_LABEL).

    The image's pixels are used as stored, unless their size differs from the mask's and the EXIF orientation
    turns them to the mask's size (a photo whose mask was drawn as it is displayed): then turned."""
    image = decode_image(image_data, image_file)
    raw = decode_mask(mask_data, mask_file, mask_channel)
    if image.size == 0:
        raise DataError(image_file, "image is empty (0 pixels)")
    if raw.shape != image.shape[:2]:
        orientation = exif_orientation(image_data)
        turned = apply_orientation(image, orientation)
        if turned.shape[:2] == raw.shape:  # the mask was drawn on the photo as displayed
            return turned, map_labels(raw, table, mask_file)
        shown = f" (displayed {turned.shape[1]}x{turned.shape[0]}: EXIF orientation {orientation})" * (orientation > 1)
        raise DataError(
            mask_file,
            f"mask is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image {image_file} is "
            f"{image.shape[1]}x{image.shape[0]}{shown}; expected the same size",
        )
    return image, map_labels(raw, table, mask_file)


def read_file(path: str) -> bytes:
    """The bytes of `path`; DataError naming it when it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise DataError(path, f"cannot read the file: {error.strerror or error}") from error


def read_pair(image_path: str, mask_path: str, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read, decode and validate the files of one pair (see decode_pair)."""
    return decode_pair(read_file(image_path), read_file(mask_path), table, image_path, mask_path)


def encode_png(array: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) -> PNG bytes (lossless; masks as 8-bit grayscale)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
