"""The embedded default dataset: textured shapes on textured backgrounds, generated in memory from a seed.

Each image shows 1..MAX_OBJECTS objects of four classes that differ in shape AND texture (a striped disc, a
checkered box, a dotted triangle, a speckled cross), with radii from 0.16 to 0.36 of the image, shapes turned
at any angle (textures stay axis-aligned, so horizontal flips keep them), overlapping (a later object hides an
earlier one), on a background of smooth random shading. Every region takes two random colours from one shared
distribution, so colour says nothing about the class; only shape and texture do. Labels change across an
IGNORE_LABEL band like VOC's object boundaries.

Example `index` of split `split` depends only on (seed, split, index, image_size), never on `num_examples`.
`baseline_scores` measures the two naive predictors that this set defeats (a constant and the best per-colour
lookup) so tests can show it is not trivial.
"""

from __future__ import annotations

import numpy as np

from keras_deeplab.confusion import confusion_matrix, scores
from keras_deeplab.constants import IGNORE_LABEL
from keras_deeplab.descriptors import make_descriptor
from pipelines.source import ArraySource, SegmentationSource

CLASS_NAMES = ("background", "striped_disc", "checkered_box", "dotted_triangle", "speckled_cross")
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = {"train": 0, "val": 1, "validation": 1}
DESCRIPTOR = make_descriptor("synthetic", CLASS_NAMES, splits=tuple(SPLITS))  # VOC colours, background 0
DEFAULT_EXAMPLES = {"train": 1000, "val": 200, "validation": 200}
IMAGE_SIZE = 128
MAX_OBJECTS = 3
SIZE_RANGE = (0.16, 0.36)  # object radius as a fraction of the image size
PERIOD_RANGE = (7.0, 11.0)  # texture period in pixels
SPECKLE_CELL = 2  # pixels per random cell of the speckle texture
OBJECT_CONTRAST = 140.0  # least RGB distance between the two colours of an object, so its texture shows
BACKGROUND_CONTRAST = 60.0  # least RGB distance between the two ends of the background's shading
NOISE_STDDEV = 6.0  # per-pixel Gaussian noise on every image
SHAPE_REACH = 1.4  # no shape reaches further than this many `size`s from its centre
BOUNDARY_RADIUS = 1  # pixels on each side of a label change marked IGNORE_LABEL


def _colour_pair(rng: np.random.Generator, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours at least `contrast` apart."""
    while True:
        first, second = rng.uniform(0, 255, (2, 3))
        if np.linalg.norm(first - second) >= contrast:
            return first, second


def _rotated(y: np.ndarray, x: np.ndarray, center: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in a frame centred on `center` and turned by `angle` radians: (u, v)."""
    dy, dx = y - center[0], x - center[1]
    return dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)


def _shape(label: int, u: np.ndarray, v: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean (H, W) inside-the-shape mask of class `label` in the object's frame (u, v)."""
    if label == 1:  # disc (an ellipse)
        return (u / size) ** 2 + (v / (size * rng.uniform(0.7, 1.0))) ** 2 <= 1
    if label == 2:  # box (a rectangle)
        return (np.abs(u) <= size * 0.9) & (np.abs(v) <= size * rng.uniform(0.55, 0.9))
    if label == 3:  # triangle: inside the three edges of an equilateral triangle of circumradius 1.3 `size`
        inside = np.ones(u.shape, bool)
        for corner in range(3):
            angle = 2 * np.pi * corner / 3
            inside &= u * np.cos(angle) + v * np.sin(angle) >= -size * 1.3 / 2
        return inside
    arm = size * rng.uniform(0.3, 0.4)  # cross
    return ((np.abs(u) <= size) & (np.abs(v) <= arm)) | ((np.abs(v) <= size) & (np.abs(u) <= arm))


def _texture(label: int, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float (H, W) in [0, 1]: how much of the region's second colour each pixel takes."""
    period = rng.uniform(*PERIOD_RANGE)
    if label == 1:  # stripes
        return (np.floor(u / (period / 2)) % 2).astype(np.float32)
    if label == 2:  # checkerboard
        return ((np.floor(u / (period / 2)) + np.floor(v / (period / 2))) % 2).astype(np.float32)
    if label == 3:  # dots on a square grid
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        return (du**2 + dv**2 <= (period * 0.3) ** 2).astype(np.float32)
    cells = rng.random((u.shape[0] // SPECKLE_CELL + 1, u.shape[1] // SPECKLE_CELL + 1)) < 0.5  # speckle
    return np.kron(cells, np.ones((SPECKLE_CELL, SPECKLE_CELL)))[: u.shape[0], : u.shape[1]].astype(np.float32)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random shading in [0, 1]: a coarse random grid, bilinearly upsampled to (size, size)."""
    cells = rng.integers(3, 7)
    grid = rng.uniform(0, 1, (cells + 1, cells + 1))
    position = np.linspace(0, cells, size)
    low = np.minimum(position.astype(int), cells - 1)
    frac = position - low
    rows = grid[low] * (1 - frac[:, None]) + grid[low + 1] * frac[:, None]
    return rows[:, low] * (1 - frac[None, :]) + rows[:, low + 1] * frac[None, :]


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels within BOUNDARY_RADIUS of a pixel with another label."""
    edge = np.zeros(labels.shape, bool)
    height, width = labels.shape
    padded = np.pad(labels, BOUNDARY_RADIUS, mode="edge")
    for dy in range(2 * BOUNDARY_RADIUS + 1):
        for dx in range(2 * BOUNDARY_RADIUS + 1):
            edge |= padded[dy : dy + height, dx : dx + width] != labels
    return edge


def synthetic_example(split: str, index: int, image_size: int = IMAGE_SIZE, seed: int = 0):
    """Example `index` of `split`: (image uint8 (S, S, 3), mask uint8 (S, S) class ids or IGNORE_LABEL)."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    y, x = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    first, second = _colour_pair(rng, BACKGROUND_CONTRAST)
    shade = _background(image_size, rng)[..., None]
    image = (first * (1 - shade) + second * shade).astype(np.float32)
    labels = np.zeros((image_size, image_size), np.uint8)
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        label = int(rng.integers(1, NUM_CLASSES))
        size = rng.uniform(*SIZE_RANGE) * image_size
        center = rng.uniform(0, image_size, 2)
        reach = int(np.ceil(SHAPE_REACH * size))
        window = tuple(slice(max(int(c) - reach, 0), int(c) + reach + 1) for c in center)
        u, v = _rotated(y[window], x[window], center, rng.uniform(0, 2 * np.pi))
        inside = _shape(label, u, v, size, rng)
        amount = _texture(label, x[window] - center[1], y[window] - center[0], rng)[..., None]
        first, second = _colour_pair(rng, OBJECT_CONTRAST)
        image[window] = np.where(inside[..., None], first * (1 - amount) + second * amount, image[window])
        labels[window][inside] = label
    image += NOISE_STDDEV * rng.standard_normal(image.shape, dtype=np.float32)
    labels[_boundaries(labels)] = IGNORE_LABEL
    return np.clip(np.round(image), 0, 255).astype(np.uint8), labels


def synthetic_source(
    split: str, num_examples: int | None = None, image_size: int = IMAGE_SIZE, seed: int = 0
) -> ArraySource:
    """The synthetic split "train" or "val" ("validation"), generated now: about 2 ms per 128x128 example.

    `num_examples` defaults to 1000 for train and 200 for val.
    """
    if split not in SPLITS:
        raise ValueError(f"synthetic split must be one of {sorted(SPLITS)}, got {split!r}")
    if image_size < 32:
        raise ValueError(f"synthetic image_size must be >= 32, got {image_size}")
    count = DEFAULT_EXAMPLES[split] if num_examples is None else num_examples
    pairs = [synthetic_example(split, index, image_size, seed) for index in range(count)]
    images = np.stack([image for image, _ in pairs]) if pairs else np.zeros((0, image_size, image_size, 3), np.uint8)
    masks = np.stack([mask for _, mask in pairs]) if pairs else np.zeros((0, image_size, image_size), np.uint8)
    names = [f"synthetic_{split}_{index:05d}" for index in range(count)]
    return ArraySource(f"synthetic/{split}", images, masks, names, descriptor=DESCRIPTOR)


def baseline_scores(train: SegmentationSource, evaluation: SegmentationSource, colour_bins: int = 8) -> dict:
    """mIoU on `evaluation` of two naive predictors fitted on `train` (IGNORE_LABEL pixels not counted).

    "constant": the most frequent class everywhere. "colour_threshold": each pixel gets the most frequent
    class of its colour bin (`colour_bins` levels per channel) in `train`; no colour-threshold rule on those
    bins can do better per pixel.
    """
    num_classes = train.num_classes
    counts = np.zeros((colour_bins**3, num_classes), np.int64)

    def bins(image: np.ndarray) -> np.ndarray:
        levels = image.astype(np.int64) * colour_bins // 256
        return (levels[..., 0] * colour_bins + levels[..., 1]) * colour_bins + levels[..., 2]

    for image, mask in (example[:2] for example in train.examples()):
        valid = mask != train.descriptor.ignore_label
        np.add.at(counts, (bins(image)[valid], mask[valid]), 1)
    constant = int(counts.sum(0).argmax())
    by_colour = np.where(counts.sum(1) > 0, counts.argmax(1), constant)
    confusions = {name: np.zeros((num_classes, num_classes), np.int64) for name in ("constant", "colour_threshold")}
    for image, mask in (example[:2] for example in evaluation.examples()):
        predictions = {"constant": np.full_like(mask, constant), "colour_threshold": by_colour[bins(image)]}
        for name, predicted in predictions.items():
            confusions[name] += confusion_matrix(mask, predicted, num_classes, evaluation.descriptor.ignore_label)
    return {name: scores(confusion)["miou"] for name, confusion in confusions.items()}
