"""Pictures of class maps: coloured class maps, overlays, legends, and palette PNGs whose pixel indices are class ids.

Each takes a `palette`: a dataset's descriptor (its class colours, its ignore colour), a (N <= 256, 3) array of
RGB colours indexed by class id (entries beyond N: the VOC colour map), or None for the VOC colour map.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keras_deeplab.constants import IGNORE_LABEL
from keras_deeplab.descriptors import VOC, VOC_COLORMAP, DatasetDescriptor
from keras_deeplab.files import atomic_path

Palette = DatasetDescriptor | np.ndarray | None


def palette_colors(palette: Palette = None) -> np.ndarray:
    """uint8 (256, 3): the colour of each mask value under `palette` (see the module docstring)."""
    if palette is None:
        palette = VOC
    if isinstance(palette, DatasetDescriptor):
        return palette.colormap()
    colors = np.asarray(palette)
    if colors.ndim != 2 or colors.shape[1] != 3 or not 1 <= len(colors) <= 256:
        raise ValueError(f"a palette is (N <= 256, 3) RGB colours, got shape {colors.shape}")
    if colors.min() < 0 or colors.max() > 255:
        raise ValueError("palette colours must be in 0..255")
    full = np.asarray(VOC_COLORMAP, np.uint8)
    full[: len(colors)] = colors
    return full


def colorize(mask: np.ndarray, palette: Palette = None) -> np.ndarray:
    """Class ids (..., H, W) integers in 0..255 -> RGB (..., H, W, 3) uint8 in `palette` (default VOC's)."""
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"class ids must be in 0..255 to colour, got {mask.min()}..{mask.max()}")
    return palette_colors(palette)[mask.astype(np.int64)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, palette: Palette = None) -> np.ndarray:
    """Blend the coloured `mask` (H, W) over `image` (H, W, 3) uint8. The ignore label stays uncoloured, and so
    does the descriptor's background class (VOC's 0, the default); with an array palette, every class is coloured.
    """
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    descriptor = VOC if palette is None else palette
    uncolored = [IGNORE_LABEL]
    if isinstance(descriptor, DatasetDescriptor):
        uncolored = [descriptor.ignore_label] + ([] if descriptor.background is None else [descriptor.background])
    colored = colorize(mask, palette).astype(np.float32)
    blend = np.where(~np.isin(mask, uncolored)[..., None], (1 - alpha) * image + alpha * colored, image)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def class_shares(mask: np.ndarray, descriptor: DatasetDescriptor | None = None) -> list[tuple[int, float]]:
    """(class id, share of the counted pixels in 0..1) of each class present in `mask` (H, W), largest share first
    (then lowest id); pixels of the descriptor's ignore label (default VOC's) are not counted."""
    descriptor = VOC if descriptor is None else descriptor
    values = np.asarray(mask).reshape(-1).astype(np.int64)
    values = values[values != descriptor.ignore_label]
    if values.size and (values.min() < 0 or values.max() >= descriptor.num_classes):
        raise ValueError(f"class ids must be in 0..{descriptor.num_classes - 1}, got {values.min()}..{values.max()}")
    counts = np.bincount(values, minlength=descriptor.num_classes)
    present = [int(index) for index in np.flatnonzero(counts)]
    return sorted(((index, counts[index] / values.size) for index in present), key=lambda item: (-item[1], item[0]))


def format_share(share: float) -> str:
    """A share in 0..1 as the legends print it: "12.3%", "<0.1%" for a trace."""
    return "<0.1%" if 0 < share < 0.0005 else f"{100 * share:.1f}%"


def legend_strip(mask: np.ndarray, width: int, descriptor: DatasetDescriptor | None = None) -> np.ndarray:
    """RGB uint8 (h, `width`, 3): the classes present in `mask` as colour swatch, name and share of the pixels,
    largest first, in rows as wide as `width` (an overlay's). A class that overlays leave uncoloured (the
    descriptor's background) gets an empty swatch. Default descriptor: VOC's."""
    descriptor = VOC if descriptor is None else descriptor
    size = int(np.clip(width // 40, 11, 24))
    font = ImageFont.load_default(size=size)
    pad, gap = size // 2, size
    entries = [
        (index, f"{descriptor.class_names[index]} {format_share(share)}")
        for index, share in class_shares(mask, descriptor)
    ]
    positions, x, y = [], pad, pad
    for index, text in entries:
        entry_width = size + pad + int(font.getlength(text))
        if x > pad and x + entry_width > width - pad:
            x, y = pad, y + size + pad
        positions.append((x, y, index, text))
        x += entry_width + gap
    picture = Image.new("RGB", (width, y + size + pad), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for x, y, index, text in positions:
        box = (x, y, x + size - 1, y + size - 1)
        if index == descriptor.background:
            draw.rectangle(box, outline=(128, 128, 128))
        else:
            draw.rectangle(box, fill=descriptor.palette[index], outline=(64, 64, 64))
        draw.text((x + size + pad, y + size / 2), text, fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(picture)


def with_legend(picture: np.ndarray, mask: np.ndarray, descriptor: DatasetDescriptor | None = None) -> np.ndarray:
    """`picture` (H, W, 3) uint8 (an overlay of `mask`) with `legend_strip` of `mask` below it: (H + h, W, 3)."""
    picture = np.asarray(picture, np.uint8)
    return np.concatenate([picture, legend_strip(mask, picture.shape[1], descriptor)], axis=0)


def save_palette_png(path: str | os.PathLike, mask: np.ndarray, palette: Palette = None) -> None:
    """Write class ids (H, W) as an 8-bit palette PNG (in `palette`, default VOC's) whose pixel indices are the ids.

    Written to a temporary file in the same folder, then renamed: a reader never sees half a file.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0 or mask.min() < 0 or mask.max() > 255:
        raise ValueError(f"{path}: expected a (H, W) mask of class ids in 0..255, got shape {mask.shape}")
    picture = Image.fromarray(mask.astype(np.uint8), mode="P")
    picture.putpalette(palette_colors(palette).reshape(-1).tolist())
    save_image_atomically(picture, path, format="PNG")


def save_image_atomically(picture: Image.Image, path: str | os.PathLike, **save_options) -> None:
    """`picture.save(path, **save_options)`, whole or not at all."""
    with atomic_path(path) as temporary:
        picture.save(temporary, **save_options)
