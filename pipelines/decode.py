"""Decoding and validating one (image, mask) pair, with PIL, exactly as `numpy.array(PIL.Image.open(path))`;
and what every reader of a user's photo checks before decoding it: its format and size from the header bytes
(`read_image_header`), and its EXIF orientation (`apply_orientation`).

Every reader, the TFRecord round trip, `data check` and the tf.data pipelines (through `tf.numpy_function`)
decode with these functions, so every path sees the same pixels and every bad file raises a `DataError` that
names it. PIL is used for masks because `tf.io.decode_png` turns a palette PNG into its RGB colours, where
VOC's class ids are the palette *indices*.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from keras_deeplab.constants import IGNORE_LABEL
from keras_deeplab.descriptors import DatasetDescriptor
from pipelines.errors import DataError

MASK_MODES = ("P", "L", "1")  # 8-bit palette (indices are the ids), 8-bit grayscale (values are the ids), 1-bit
IMAGE_MODES = ("RGB", "L", "P", "CMYK", "YCbCr", "RGBA", "LA")  # converted to RGB (alpha dropped); 16-bit refused
INVALID = -1  # a label table entry for raw values that are neither a class nor ignored
# The formats whose size is read from the header before anything is decoded; others (WebP, JPEG XL, TIFF...)
# are refused, since nothing could bound what decoding them costs.
ACCEPTED_IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
# The most pixels (height x width) of a dataset image or mask, checked from its header before it is decoded: the
# default pixel limit of `predict` and `serve` (serving.settings.DEFAULT_MAX_PIXELS). Datasets in use stay far
# below (VOC 500x375, Cityscapes 2048x1024, Mapillary Vistas about 4000x3000); a 777-byte header-only 20000x20000
# JPEG ended `data check` with PIL's DecompressionBombError, a real 12000x12000 one took `evaluate` past 8 GB.
MAX_IMAGE_PIXELS = 4096 * 4096
ORIENTATION_TAG = 0x0112  # EXIF orientation: 1 upright; 2..8 mirrored and/or turned (5..8 swap width and height)
_JPEG_SIZE_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (not DHT, JPG, DAC)


class PixelLimitError(ValueError):
    """An image whose header gives more pixels than the limit."""


class ImageHeader(NamedTuple):
    """What an encoded image's header says: format (one of ACCEPTED_IMAGE_FORMATS), stored size, EXIF orientation."""

    format: str
    width: int
    height: int
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def displayed_size(self) -> tuple[int, int]:
        """(width, height) once the EXIF orientation is applied."""
        return (self.height, self.width) if self.orientation >= 5 else (self.width, self.height)


def read_image_header(data: bytes, max_pixels: int | None = None) -> ImageHeader:
    """Format, size and EXIF orientation of encoded image bytes, read from the header without decoding pixels.

    ValueError (no file name: callers add theirs) for a format other than ACCEPTED_IMAGE_FORMATS or a header cut
    short; PixelLimitError (a ValueError) for an image over `max_pixels` (height x width). The one size check
    of the server, `predict` and `client`.
    """
    accepted = ", ".join(ACCEPTED_IMAGE_FORMATS)
    if not data:
        raise ValueError(f"empty (0 bytes); expected a {accepted} image")
    try:
        if data.startswith(b"\xff\xd8\xff"):
            header = ImageHeader("JPEG", *_jpeg_size(data))
        elif data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            header = ImageHeader("PNG", *struct.unpack(">II", data[16:24]))
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            header = ImageHeader("GIF", *struct.unpack("<HH", data[6:10]))
        elif data.startswith(b"BM"):
            width, height = struct.unpack("<ii", data[18:26])
            header = ImageHeader("BMP", abs(width), abs(height))  # height < 0: rows stored top-down
        else:
            raise ValueError(f"not a {accepted} image (the accepted formats, whose size is read before decoding)")
    except struct.error as error:
        raise ValueError(f"not a readable image: its header is cut short ({error})") from error
    if header.width <= 0 or header.height <= 0:
        raise ValueError(f"{header.format} header gives an empty size {header.width}x{header.height}")
    if max_pixels is not None and header.pixels > max_pixels:
        raise PixelLimitError(
            f"image of {header.width}x{header.height} = {header.pixels} pixels is over the limit of {max_pixels}"
        )
    return header._replace(orientation=_exif_orientation(data))


def _jpeg_segments(data: bytes):
    """(marker, payload start, payload end) of each JPEG header segment, up to the start of scan."""
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            raise ValueError(f"not a readable JPEG image: no marker at byte {index} (damaged)")
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            index += 2
            continue
        if marker == 0xDA:  # start of scan: the header is over
            return
        end = index + 2 + struct.unpack(">H", data[index + 2 : index + 4])[0]
        yield marker, index + 4, end
        index = end


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment of a JPEG."""
    for marker, start, _ in _jpeg_segments(data):
        if marker in _JPEG_SIZE_MARKERS:
            height, width = struct.unpack(">HH", data[start + 1 : start + 5])
            return width, height
    raise ValueError("not a readable JPEG image: no frame header giving its size (damaged or cut short)")


def _exif_block(data: bytes) -> bytes | None:
    """The EXIF block ("Exif\\0\\0" + TIFF data) of a JPEG (APP1 segment) or PNG (eXIf chunk), found by walking the
    headers: nothing is decoded (PIL's PNG getexif() would decode the whole image to look for it)."""
    if data.startswith(b"\xff\xd8"):
        for marker, start, end in _jpeg_segments(data):
            if marker == 0xE1 and data[start : start + 6] == b"Exif\x00\x00":
                return data[start:end]
    elif data.startswith(b"\x89PNG"):
        index = 8
        while index + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[index : index + 8])
            if kind == b"eXIf":
                return b"Exif\x00\x00" + data[index + 8 : index + 8 + length]
            if kind == b"IEND":
                break
            index += 12 + length
    return None


def _exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1..8) of a JPEG or PNG; 1 when absent or unreadable."""
    try:
        block = _exif_block(data)
        if block is None:
            return 1
        exif = Image.Exif()
        exif.load(block)
        orientation = int(exif.get(ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block is no reason to refuse the photo: its decoder decides
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels (H, W, ...) as displayed: EXIF `orientation` applied as PIL's ImageOps.exif_transpose does."""
    turned = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x[::-1, ::-1].swapaxes(0, 1),
        8: lambda x: np.rot90(x, 1),
    }.get(orientation)
    return image if turned is None else np.ascontiguousarray(turned(image))


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
        orientation = _exif_orientation(image_data)
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
