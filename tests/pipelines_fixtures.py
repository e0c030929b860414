"""Tiny datasets written by the tests, in every on-disk layout the readers know.

Masks are blocky class maps with IGNORE_LABEL on the borders between blocks, like VOC's; VOC masks are
real 8-bit palette PNGs with the VOC colour map, written with PIL.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from keras_deeplab.constants import IGNORE_LABEL
from keras_deeplab.descriptors import VOC_COLORMAP

VOC_PALETTE = [channel for color in VOC_COLORMAP for channel in color]


def blocky_mask(height: int, width: int, values: list[int], seed: int, block: int = 8) -> np.ndarray:
    """uint8 (height, width): blocks of `values`, with IGNORE_LABEL on every pixel next to another block."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(values, size=(height // block + 1, width // block + 1))
    mask = np.kron(cells, np.ones((block, block), np.int64))[:height, :width]
    edge = np.zeros(mask.shape, bool)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[1:] != mask[:-1]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, 1:] != mask[:, :-1]
    return np.where(edge, IGNORE_LABEL, mask).astype(np.uint8)


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (height, width, 3) smooth random picture (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, 3) + 60 * np.sin(x[..., None] / rng.uniform(3, 9, 3) + y[..., None] / 7)
    return np.clip(base + rng.normal(0, 5, (height, width, 3)), 0, 255).astype(np.uint8)


def save_palette_png(mask: np.ndarray, path: str) -> None:
    image = Image.fromarray(mask, mode="P")
    image.putpalette(VOC_PALETTE)
    image.save(path)


def _makedirs(*paths: str) -> None:
    for path in paths:
        os.makedirs(path, exist_ok=True)


SIZES = [(29, 37), (41, 30), (33, 33), (45, 52)]  # (height, width), odd on purpose


def write_voc(root: str, splits: dict[str, list[str]] | None = None, aug: bool = False) -> dict[str, str]:
    """VOC 2012 layout; with `aug` also SegmentationClassAug/ (grayscale) and a train_aug list.

    Returns {name: mask path}. Masks use classes 0, 1, 15 (person) and 20, so palette indices and colours differ.
    """
    splits = splits or {"train": ["2007_000001", "2007_000002", "2007_000003"], "val": ["2007_000004"]}
    _makedirs(*(os.path.join(root, folder) for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")))
    names = [name for split_names in splits.values() for name in split_names]
    masks = {}
    for index, name in enumerate(names):
        height, width = SIZES[index % len(SIZES)]
        Image.fromarray(photo(height, width, index)).save(os.path.join(root, "JPEGImages", f"{name}.jpg"), quality=92)
        mask = blocky_mask(height, width, [0, 1, 15, 20], seed=index)
        masks[name] = os.path.join(root, "SegmentationClass", f"{name}.png")
        save_palette_png(mask, masks[name])
        if aug:
            _makedirs(os.path.join(root, "SegmentationClassAug"))
            Image.fromarray(mask, mode="L").save(os.path.join(root, "SegmentationClassAug", f"{name}.png"))
    for split, split_names in splits.items():
        with open(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"), "w") as file:
            file.write("\n".join(split_names) + "\n")
    if aug:  # the two line styles found in the wild: a name, or "image-path mask-path" relative to root
        first, *rest = names
        lines = [f"/JPEGImages/{first}.jpg /SegmentationClassAug/{first}.png", *rest]
        with open(os.path.join(root, "ImageSets", "Segmentation", "train_aug.txt"), "w") as file:
            file.write("\n".join(lines) + "\n")
    return masks


def write_cityscapes(root: str, split: str = "train") -> dict[str, str]:
    """Two cities, one pair each; labelIds drawn from 0..33. Returns {name: labelIds path}."""
    masks = {}
    for index, (city, frame) in enumerate([("aachen", "000000_000019"), ("bremen", "000001_000019")]):
        name = f"{city}_{frame}"
        image_dir = os.path.join(root, "leftImg8bit", split, city)
        label_dir = os.path.join(root, "gtFine", split, city)
        _makedirs(image_dir, label_dir)
        height, width = SIZES[index]
        Image.fromarray(photo(height, width, index)).save(os.path.join(image_dir, f"{name}_leftImg8bit.png"))
        label_ids = blocky_mask(height, width, [0, 1, 7, 8, 11, 24, 26, 33], seed=index)
        label_ids[label_ids == IGNORE_LABEL] = 0  # Cityscapes has no 255 labelId: boundaries are 0 (unlabeled)
        masks[name] = os.path.join(label_dir, f"{name}_gtFine_labelIds.png")
        Image.fromarray(label_ids, mode="L").save(masks[name])
    return masks


def write_ade20k(root: str, folder: str = "validation") -> dict[str, str]:
    """Two pairs with annotation values 0 ("other", ignored), 1, 2 and 150 (the class ids of "wall", "building",
    "flag"). Returns {name: annotation path}."""
    _makedirs(os.path.join(root, "images", folder), os.path.join(root, "annotations", folder))
    masks = {}
    for index in range(2):
        name = f"ADE_val_{index + 1:08d}"
        height, width = SIZES[index + 1]
        Image.fromarray(photo(height, width, index)).save(os.path.join(root, "images", folder, f"{name}.jpg"))
        annotation = blocky_mask(height, width, [0, 1, 2, 150], seed=index)
        annotation[annotation == IGNORE_LABEL] = 0
        masks[name] = os.path.join(root, "annotations", folder, f"{name}.png")
        Image.fromarray(annotation, mode="L").save(masks[name])
    return masks


def write_folder(root: str) -> dict[str, str]:
    """images/ (a PNG and a JPEG), masks/ (palette PNGs), classes.txt with 3 classes, and a val.txt list."""
    _makedirs(os.path.join(root, "images"), os.path.join(root, "masks"))
    with open(os.path.join(root, "classes.txt"), "w") as file:
        file.write("sky\nroad\n\ncar\n")
    masks = {}
    for index, (name, extension) in enumerate([("a", ".png"), ("b", ".jpg")]):
        height, width = SIZES[index]
        Image.fromarray(photo(height, width, index)).save(os.path.join(root, "images", name + extension))
        masks[name] = os.path.join(root, "masks", f"{name}.png")
        save_palette_png(blocky_mask(height, width, [0, 1, 2], seed=index), masks[name])
    with open(os.path.join(root, "val.txt"), "w") as file:
        file.write("b\n")
    return masks


LABELME_CLASSES = ["_background_", "cat", "dog", "bowl", "sofa", "plant", "lamp"]


def write_labelme_voc(root: str) -> dict[str, str]:
    """What labelme's `labelme2voc.py` writes: class_names.txt (`_background_` first, 7 classes, no newline at
    the end), JPEGImages/, SegmentationClass/*.npy, SegmentationClassPNG/ (palette PNGs, 255 where labelme's -1
    ignores), SegmentationClassVisualization/, and no ImageSets/. Returns {name: mask path}."""
    folders = ["JPEGImages", "SegmentationClass", "SegmentationClassPNG", "SegmentationClassVisualization"]
    _makedirs(*(os.path.join(root, folder) for folder in folders))
    with open(os.path.join(root, "class_names.txt"), "w") as file:
        file.write("\n".join(LABELME_CLASSES))
    masks = {}
    for index, name in enumerate(["IMG_0001", "IMG_0002", "IMG_0003"]):
        height, width = SIZES[index]
        image = photo(height, width, index)
        Image.fromarray(image).save(os.path.join(root, "JPEGImages", f"{name}.jpg"))
        mask = blocky_mask(height, width, [0, 1 + index, 6], seed=index)
        np.save(os.path.join(root, "SegmentationClass", f"{name}.npy"), mask.astype(np.int32))
        masks[name] = os.path.join(root, "SegmentationClassPNG", f"{name}.png")
        save_palette_png(mask, masks[name])
        Image.fromarray(image).save(os.path.join(root, "SegmentationClassVisualization", f"{name}.jpg"))
    return masks
