"""The fully connected CRF of DeepLab v1/v2 as post-processing of a network's class probabilities.

Mean-field inference (Kraehenbuehl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NIPS 2011) with a Potts compatibility and two Gaussian kernels: an appearance kernel over position
and RGB colour (`bi_*`), which pulls pixels of similar colour nearby into one class, and a smoothness kernel over
position only (`pos_*`), which removes isolated pixels. The unary energy is -log(probability).

The filtering runs on the permutohedral lattice of `pydensecrf` (the `pydensecrf2` distribution, which builds on
Python 3.11 and numpy 2; single-threaded C++). The defaults are the official DeepLab v2 code's VOC values,
`exper/run_densecrf.sh` of deeplab-public-ver2 (see `constants.DENSE_CRF`).
"""

from __future__ import annotations

import numpy as np

from keras_deeplab import constants

# Probabilities are floored here before the log, so that a class the network rules out entirely still has a
# finite unary energy (about 18.4) that a strong pairwise term can overcome.
PROBABILITY_FLOOR = 1e-8
# How far the class probabilities of a pixel may sum away from 1 before the input is rejected.
SUM_TOLERANCE = 1e-3


def dense_crf(
    image,
    probabilities,
    *,
    iterations: int = constants.DENSE_CRF["iterations"],
    bi_w: float = constants.DENSE_CRF["bi_w"],
    bi_xy_std: float = constants.DENSE_CRF["bi_xy_std"],
    bi_rgb_std: float = constants.DENSE_CRF["bi_rgb_std"],
    pos_w: float = constants.DENSE_CRF["pos_w"],
    pos_xy_std: float = constants.DENSE_CRF["pos_xy_std"],
) -> np.ndarray:
    """Refine class probabilities with `iterations` steps of fully connected CRF mean-field inference.

    image: uint8 (H, W, 3) RGB, the photo the probabilities were predicted for, at its own size.
    probabilities: float (H, W, C), C >= 2, each pixel's summing to 1 (within `SUM_TOLERANCE`), e.g. the
        softmax of the network's logits resized to the image.
    iterations: mean-field steps (0 returns the input, renormalised).
    bi_w, bi_xy_std, bi_rgb_std: weight, position std (pixels) and colour std (0-255 levels) of the appearance
        kernel; pos_w, pos_xy_std: weight and position std of the smoothness kernel. Names as in DeepLab's
        DenseCRF layer (`dense_crf_param`); defaults `constants.DENSE_CRF`.

    Returns float32 (H, W, C) probabilities, each pixel's summing to 1. Raises ValueError naming the argument
    when an input has the wrong type, shape or values, ImportError when pydensecrf is not installed.
    """
    image, probabilities = _checked_inputs(image, probabilities)
    iterations = _checked_count("iterations", iterations)
    bi_w = _checked_number("bi_w", bi_w, allow_zero=True)
    pos_w = _checked_number("pos_w", pos_w, allow_zero=True)
    bi_xy_std = _checked_number("bi_xy_std", bi_xy_std)
    bi_rgb_std = _checked_number("bi_rgb_std", bi_rgb_std)
    pos_xy_std = _checked_number("pos_xy_std", pos_xy_std)
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise ImportError(
            "dense_crf needs pydensecrf: pip install pydensecrf2 (builds from source with g++)"
        ) from error

    height, width, num_classes = probabilities.shape
    # pydensecrf wants (C, H*W) unary energies and a C-ordered, writable uint8 image.
    unary = -np.log(np.maximum(probabilities, PROBABILITY_FLOOR)).reshape(height * width, num_classes).T
    crf = densecrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    if pos_w > 0:
        crf.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    if bi_w > 0:
        crf.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=image, compat=bi_w)
    refined = np.asarray(crf.inference(iterations), dtype=np.float32).T.reshape(height, width, num_classes)
    refined = np.ascontiguousarray(refined)
    refined /= refined.sum(axis=-1, keepdims=True)
    return refined


def _checked_inputs(image, probabilities) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB (H, W, 3), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 RGB (H, W, 3), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have at least one pixel, got shape {image.shape}")
    probabilities = np.asarray(probabilities)
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise ValueError(f"probabilities must be a float array (H, W, C), got dtype {probabilities.dtype}")
    if probabilities.ndim != 3:
        raise ValueError(f"probabilities must be (H, W, C), got shape {probabilities.shape}")
    if probabilities.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"probabilities must have the image's height and width {image.shape[:2]}, got shape "
            f"{probabilities.shape} (resize them to the image first)"
        )
    if probabilities.shape[-1] < 2:
        raise ValueError(f"probabilities must have at least 2 classes, got shape {probabilities.shape}")
    probabilities = probabilities.astype(np.float32, copy=False)
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities must be finite, got NaN or infinity")
    if probabilities.min() < 0:
        raise ValueError(f"probabilities must be non-negative, got a minimum of {probabilities.min()}")
    worst = float(np.max(np.abs(probabilities.sum(axis=-1, dtype=np.float64) - 1.0)))
    if worst > SUM_TOLERANCE:
        raise ValueError(
            f"probabilities must sum to 1 over the classes of each pixel (softmax, not logits), "
            f"got a pixel off by {worst:.3g}"
        )
    return np.require(image, np.uint8, ["C", "W"]), probabilities


def _checked_count(name: str, value) -> int:
    if isinstance(value, float) and value.is_integer():  # from a command line or a search grid
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _checked_number(name: str, value, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, got {value}")
    return value
