"""Pictures of class maps: VOC colour map, overlays, and palette PNGs whose pixel indices are class ids."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from keras_deeplab.constants import VOC_COLORMAP
from keras_deeplab.files import atomic_path

_PALETTE = np.asarray(VOC_COLORMAP, dtype=np.uint8)  # (256, 3)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class ids (..., H, W) integers in 0..255 -> RGB (..., H, W, 3) uint8 in the VOC colour map."""
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"class ids must be in 0..255 to colour, got {mask.min()}..{mask.max()}")
    return _PALETTE[mask.astype(np.int64)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured `mask` (H, W) over `image` (H, W, 3) uint8; background (0) and 255 stay uncoloured."""
    image = np.asarray(image, dtype=np.float32)
    if image.shape[:2] != np.shape(mask):
        raise ValueError(f"image {image.shape[:2]} and mask {np.shape(mask)} differ in size")
    colored = colorize(mask).astype(np.float32)
    blend = np.where(((mask > 0) & (mask < 255))[..., None], (1 - alpha) * image + alpha * colored, image)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def save_palette_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write class ids (H, W) as an 8-bit palette PNG (VOC colour map) whose pixel indices are the ids.

    Written to a temporary file in the same folder, then renamed: a reader never sees half a file.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0 or mask.min() < 0 or mask.max() > 255:
        raise ValueError(f"{path}: expected a (H, W) mask of class ids in 0..255, got shape {mask.shape}")
    picture = Image.fromarray(mask.astype(np.uint8), mode="P")
    picture.putpalette(_PALETTE.reshape(-1).tolist())
    save_image_atomically(picture, path, format="PNG")


def save_image_atomically(picture: Image.Image, path: str | os.PathLike, **save_options) -> None:
    """`picture.save(path, **save_options)`, whole or not at all."""
    with atomic_path(path) as temporary:
        picture.save(temporary, **save_options)
