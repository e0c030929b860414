"""The fully connected CRF of DeepLab v1/v2 as post-processing of a network's class probabilities.

Mean-field inference (Kraehenbuehl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NIPS 2011) with a Potts compatibility and two Gaussian kernels: an appearance kernel over position
and RGB colour (`bi_*`), which pulls pixels of similar colour nearby into one class, and a smoothness kernel over
position only (`pos_*`), which removes isolated pixels. The unary energy is -log(probability).

The mean field runs in `crf_mean_field.cpp` (built by pip into `keras_deeplab._crf_mean_field`): the Gaussian
filtering on the permutohedral lattice (Adams et al. 2010), with the model and the lattice arithmetic of
Kraehenbuehl's densecrf library (which DeepLab v1/v2 used; its Python binding `pydensecrf` agrees to a few 1e-6
and is the reference the tests compare against), spread over the cores. The defaults are the official DeepLab v2
code's VOC values, `exper/run_densecrf.sh` of deeplab-public-ver2 (see `constants.DENSE_CRF`).
"""

from __future__ import annotations

import numpy as np

from keras_deeplab import constants, machine

# Probabilities are floored here before the log, so that a class the network rules out entirely still has a
# finite unary energy (about 18.4) that a strong pairwise term can overcome.
PROBABILITY_FLOOR = 1e-8
# How far the class probabilities of a pixel may sum away from 1 before the input is rejected.
SUM_TOLERANCE = 1e-3
# Worker threads by default: the cores this process may run on, up to this many (each thread keeps a splat
# buffer per kernel, and beyond a few threads the mean field is bound by memory, not arithmetic).
MAX_DEFAULT_THREADS = 8
# The most classes the mean field takes (its per-pixel rows live on the stack), and the most threads.
MAX_CLASSES = 1024
MAX_THREADS = 64
# Bounds on the parameters, so that the lattice arithmetic cannot overflow (the extension checks them too, with
# the same numbers: kMaxFeature, kMaxWeight, kMaxIterations in crf_mean_field.cpp). A feature is a position or
# a colour over its std; past 2^16 lattice units the elevated coordinates (up to about 35 times a feature on the
# 5-d lattice) lose the float precision the simplex search needs, and past about 2^31 they overflowed its
# float-to-int conversions (SIGSEGV). So a position std must be at least the image's longest side / 65536
# (1 / 65536 of a pixel on any image of two pixels or more) and a colour std at least 255 / 65536.
MAX_FEATURE = 65536.0
# Kernel weights: DeepLab's are 3 to 5; past about 3.4e38 a weight times the lattice's scale is a float32
# infinity and the "probabilities" no longer sum to 1.
MAX_WEIGHT = 1e4
# Mean-field steps: DeepLab runs 10; each is one pass of the filter over the whole lattice.
MAX_ITERATIONS = 1000
WEIGHTS = ("bi_w", "pos_w")
POSITION_STDS = ("bi_xy_std", "pos_xy_std")


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
    threads: int | None = None,
) -> np.ndarray:
    """Refine class probabilities with `iterations` steps of fully connected CRF mean-field inference.

    image: uint8 (H, W, 3) RGB, the photo the probabilities were predicted for, at its own size.
    probabilities: float (H, W, C), C >= 2, each pixel's summing to 1 (within `SUM_TOLERANCE`), e.g. the
        softmax of the network's logits resized to the image.
    iterations: mean-field steps (0 returns the input, renormalised).
    bi_w, bi_xy_std, bi_rgb_std: weight, position std (pixels) and colour std (0-255 levels) of the appearance
        kernel; pos_w, pos_xy_std: weight and position std of the smoothness kernel. Names as in DeepLab's
        DenseCRF layer (`dense_crf_param`); defaults `constants.DENSE_CRF`.
    threads: worker threads; None: the cores this process may use, at most `MAX_DEFAULT_THREADS`. The result
        does not depend on it beyond float rounding.

    Returns float32 (H, W, C) probabilities, each pixel's summing to 1. Raises ValueError naming the argument
    when an input has the wrong type, shape or values, MissingExtensionError when the C++ extension was not built.
    """
    image, probabilities = _checked_inputs(image, probabilities)
    iterations = check_parameter("iterations", iterations)
    bi_w = check_parameter("bi_w", bi_w)
    pos_w = check_parameter("pos_w", pos_w)
    bi_xy_std = check_parameter("bi_xy_std", bi_xy_std, image_shape=image.shape[:2])
    bi_rgb_std = check_parameter("bi_rgb_std", bi_rgb_std)
    pos_xy_std = check_parameter("pos_xy_std", pos_xy_std, image_shape=image.shape[:2])
    threads = (
        default_threads() if threads is None else _checked_count("threads", threads, minimum=1, maximum=MAX_THREADS)
    )
    _crf_mean_field = extension()
    height, width, num_classes = probabilities.shape
    refined = np.empty((height, width, num_classes), np.float32)
    _crf_mean_field.mean_field(
        image,
        probabilities,
        refined,
        height,
        width,
        num_classes,
        iterations,
        threads,
        bi_w,
        bi_xy_std,
        bi_rgb_std,
        pos_w,
        pos_xy_std,
        PROBABILITY_FLOOR,
    )
    return refined


def check_parameter(name: str, value, *, image_shape: tuple[int, int] | None = None) -> float:
    """`value` (an int for iterations) for the `dense_crf` keyword `name`, checked against its bounds (see
    `MAX_FEATURE`, `MAX_WEIGHT`, `MAX_ITERATIONS`); a position std against the image of `image_shape` (H, W) too
    when given, else against the smallest image it could be used on (two pixels). Raises ValueError naming the
    parameter and its bound."""
    if name == "iterations":
        return _checked_count(name, value, maximum=MAX_ITERATIONS)
    if name in WEIGHTS:
        value = _checked_number(name, value, allow_zero=True)
        if value > MAX_WEIGHT:
            raise ValueError(f"{name} must be at most {MAX_WEIGHT:g} (DeepLab's are 3 to 5), got {value:g}")
        return value
    value = _checked_number(name, value)
    if name in POSITION_STDS:
        longest = 1 if image_shape is None else max(image_shape) - 1  # the largest position, in pixels
        where = "" if image_shape is None else f" for a {image_shape[0]}x{image_shape[1]} image"
        extent, unit = longest, "pixels"
    elif name == "bi_rgb_std":
        extent, where, unit = 255, "", "levels"
    else:
        raise ValueError(f"{name} is not a dense_crf parameter; expected one of {', '.join(constants.DENSE_CRF)}")
    if extent / value > MAX_FEATURE:
        raise ValueError(
            f"{name} must be at least {extent / MAX_FEATURE:.3g}{where} (the lattice takes {unit} / std up to "
            f"{MAX_FEATURE:g}), got {value:g}"
        )
    return value


class MissingExtensionError(ImportError):
    """The C++ mean field was not built when keras-deeplab was installed (no C++ compiler then)."""


def extension():
    """The C++ mean field (`keras_deeplab._crf_mean_field`). Raises MissingExtensionError, one line saying what is
    missing and how to get it, where the install could not compile it."""
    try:
        from keras_deeplab import _crf_mean_field
    except ImportError as error:
        raise MissingExtensionError(
            "the fully connected CRF needs keras-deeplab's C++ extension, which was not built when it was installed "
            "(no working C++ compiler then): install g++ or clang (and the Python headers), then reinstall "
            "keras-deeplab (`pip install --force-reinstall --no-deps .` in the checkout)"
        ) from error
    return _crf_mean_field


def release_memory() -> None:
    """Free the working memory `dense_crf` keeps between calls, which spares the next call of a similar size
    its page faults: 0.3 to 1 KB per pixel of the largest image so far (measured for 500x375: 54 MB with the
    defaults, 178 MB with `constants.DENSE_CRF_RESNET101`, whose 1-pixel smoothness kernel makes a large lattice)."""
    extension().release_memory()


def memory_bound(height: int, width: int, num_classes: int, threads: int | None = None) -> int:
    """The most bytes one `dense_crf` call on an image of `height` x `width` pixels and `num_classes` classes may
    allocate (the extension's working memory, and dense_crf's own arrays), whatever the image and parameters.

    The worst case is a lattice with a vertex of its own for every corner of every pixel's simplex (stds near
    their bounds: every pixel far from every other); a photo with the defaults makes 10 to 20 times fewer
    (0.3 KB per pixel with 21 classes, against 7 KB here). The class-dependent part (each worker's splat
    buffer and the blur's two, per vertex and class) dominates; `threads` None: `default_threads()`."""
    threads = default_threads() if threads is None else threads
    points = height * width
    lanes = -(-num_classes // 8) * 8  # the classes padded to whole 8-float vectors
    total = points * lanes * 4  # the unary, log(probability)
    for dims in (2, 5):  # the smoothness and the appearance kernels' lattices
        corners = dims + 1
        vertices = points * corners + 1
        total += points * corners * 8  # each point's corner ids and weights
        total += 2 * points * corners * (8 * dims + 24 * corners)  # the workers' hash tables, then the merged one
        total += points * corners * 4 + threads * width * corners * dims * 4  # renumbering, each worker's row
        total += vertices * (8 * corners + 8)  # blur neighbours; the filter of ones
        total += (threads + 2) * vertices * lanes * 4  # a splat buffer per worker; the blur's two
        total += threads * 2 * 4096 * corners * 4  # the hash tables' least size
    # dense_crf's: a float32 copy of the probabilities and the result, and its checks' temporaries.
    return total + points * (num_classes * 13 + 16)


def default_threads() -> int:
    """The mean field's worker threads when not told: the cores this process may run on, at most 8."""
    return min(machine.usable_cores(), MAX_DEFAULT_THREADS)


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
    if not 2 <= probabilities.shape[-1] <= MAX_CLASSES:
        raise ValueError(f"probabilities must have 2 to {MAX_CLASSES} classes, got shape {probabilities.shape}")
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
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


def _checked_count(name: str, value, *, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():  # from a command line or a search grid
        value = int(value)
    valid = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    if not valid or value < minimum or (maximum is not None and value > maximum):
        expected = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        expected += "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def _checked_number(name: str, value, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, got {value}")
    return value
