"""What every reader of a user's photo checks before decoding it: its format and size, read from the header bytes
(`read_image_header`), and its EXIF orientation (`exif_orientation`, `apply_orientation`).

The server, `predict` and `client` refuse an image here before anything decodes it, so a header-only 20000x20000
JPEG costs a few bytes of parsing, not gigabytes of pixels; the dataset readers turn a photo whose mask was drawn
as it is displayed (`pipelines.decode.decode_pair`). Nothing here decodes pixels: JPEG segments and PNG chunks are
walked by hand.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np
from PIL import Image

# The formats whose size is read from the header before anything is decoded; others (WebP, JPEG XL, TIFF...)
# are refused, since nothing could bound what decoding them costs.
ACCEPTED_IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
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
    return header._replace(orientation=exif_orientation(data))


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


def exif_orientation(data: bytes) -> int:
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
