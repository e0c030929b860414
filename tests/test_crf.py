"""The fully connected CRF: it recovers shapes from a noisy or misplaced unary, and it checks its inputs."""

import inspect
import subprocess
import sys

import numpy as np
import pytest

from keras_deeplab import constants
from keras_deeplab.crf import MAX_FEATURE, MAX_ITERATIONS, MAX_WEIGHT, check_parameter, dense_crf

NUM_CLASSES = 3


def scene(height=120, width=160, seed=0):
    """A grey background with a red rectangle (class 1) and a blue disk (class 2): (image, labels)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.int64)
    labels[20:70, 20:80] = 1
    rows, cols = np.mgrid[:height, :width]
    labels[(rows - 75) ** 2 + (cols - 115) ** 2 < 30**2] = 2
    colours = np.array([[110, 110, 110], [200, 40, 40], [40, 60, 200]])
    image = np.clip(colours[labels] + rng.normal(0, 4, (height, width, 3)), 0, 255).astype(np.uint8)
    return image, labels


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def accuracy(probabilities, labels):
    return float(np.mean(probabilities.argmax(axis=-1) == labels))


def test_noisy_unary_recovers_the_shapes_and_stays_a_distribution():
    image, labels = scene()
    rng = np.random.default_rng(1)
    probabilities = softmax(2.0 * np.eye(NUM_CLASSES)[labels] + rng.normal(0, 1.5, (*labels.shape, NUM_CLASSES)))
    before = accuracy(probabilities, labels)
    refined = dense_crf(image, probabilities)
    after = accuracy(refined, labels)
    assert before < 0.8  # the unary alone gets about one pixel in four wrong
    assert after > before + 0.10
    assert after > 0.99
    assert refined.dtype == np.float32 and refined.shape == probabilities.shape
    assert np.all(refined >= 0)
    np.testing.assert_allclose(refined.sum(axis=-1), 1.0, atol=1e-4)


def test_appearance_kernel_moves_a_misplaced_boundary_onto_the_colour_edge():
    # A coarse network's error: the right class everywhere except a 5-pixel shift of every boundary.
    image, labels = scene()
    soft = np.eye(NUM_CLASSES)[np.roll(labels, 5, axis=1)]
    for _ in range(3):
        soft = (soft + np.roll(soft, 1, 0) + np.roll(soft, -1, 0) + np.roll(soft, 1, 1) + np.roll(soft, -1, 1)) / 5
    probabilities = 0.1 / NUM_CLASSES + 0.9 * soft
    before = accuracy(probabilities, labels)
    assert accuracy(dense_crf(image, probabilities), labels) > before + 0.04
    # Without the colour term nothing pulls the boundary back: smoothing alone keeps the shifted shapes.
    assert accuracy(dense_crf(image, probabilities, bi_w=0.0), labels) < before + 0.01


def test_zero_iterations_return_the_input():
    image, _ = scene(40, 50)
    probabilities = softmax(np.random.default_rng(2).normal(0, 1, (40, 50, NUM_CLASSES)))
    np.testing.assert_allclose(dense_crf(image, probabilities, iterations=0), probabilities, atol=1e-5)


def test_defaults_are_the_official_deeplab_v2_values():
    # exper/run_densecrf.sh of deeplab-public-ver2: MAX_ITER=10, Bi_W=4, Bi_X_STD=49, Bi_R_STD=5, POS_W=3, POS_X_STD=3.
    assert constants.DENSE_CRF == {
        "iterations": 10,
        "bi_w": 4,
        "bi_xy_std": 49,
        "bi_rgb_std": 5,
        "pos_w": 3,
        "pos_xy_std": 3,
    }
    defaults = inspect.signature(dense_crf).parameters
    assert {name: defaults[name].default for name in constants.DENSE_CRF} == constants.DENSE_CRF


def _good():
    image, _ = scene(8, 10)
    return image, np.full((8, 10, NUM_CLASSES), 1 / NUM_CLASSES, np.float32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i, p: (i.astype(np.float32), p), "image must be uint8"),
        (lambda i, p: (i[..., 0], p), r"image must be uint8 RGB \(H, W, 3\), got shape \(8, 10\)"),
        (lambda i, p: (np.concatenate([i, i[..., :1]], -1), p), r"got shape \(8, 10, 4\)"),
        (lambda i, p: (i, (p * 3).astype(np.int32)), "probabilities must be a float array"),
        (lambda i, p: (i, p[0]), r"probabilities must be \(H, W, C\)"),
        (lambda i, p: (i, p[:4]), "probabilities must have the image's height and width"),
        (lambda i, p: (i, p[..., :1] / p[..., :1]), "2 to 1024 classes"),
        (lambda i, p: (i, np.log(p)), "non-negative"),
        (lambda i, p: (i, p * 2), "must sum to 1"),
        (lambda i, p: (i, np.where(p > 0, np.nan, p)), "finite"),
    ],
)
def test_bad_inputs_name_the_argument(change, message):
    image, probabilities = change(*_good())
    with pytest.raises(ValueError, match=message):
        dense_crf(image, probabilities)


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("iterations", -1, "iterations must be a non-negative integer"),
        ("iterations", 2.5, "iterations must be a non-negative integer"),
        ("bi_xy_std", 0, "bi_xy_std must be a finite positive number"),
        ("bi_rgb_std", float("inf"), "bi_rgb_std must be a finite positive number"),
        ("pos_w", -1, "pos_w must be a finite non-negative number"),
        ("pos_xy_std", "3", "pos_xy_std must be a number"),
    ],
)
def test_bad_parameters_name_the_argument(argument, value, message):
    with pytest.raises(ValueError, match=message):
        dense_crf(*_good(), **{argument: value})


def reference_crf(image, probabilities, *, iterations, bi_w, bi_xy_std, bi_rgb_std, pos_w, pos_xy_std):
    """Kraehenbuehl's own densecrf (through pydensecrf) on the same model: the reference ours must equal."""
    densecrf = pytest.importorskip("pydensecrf.densecrf")  # a dev dependency: `make test` installs it
    height, width, classes = probabilities.shape
    unary = -np.log(np.maximum(probabilities, 1e-8)).reshape(-1, classes).T
    crf = densecrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    crf.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=np.ascontiguousarray(image), compat=bi_w)
    return np.asarray(crf.inference(iterations), np.float32).T.reshape(height, width, classes)


def many_class_case(height=45, width=70, classes=21, seed=3):
    """A photo-like image (smooth gradients, shapes, mild noise) and noisy probabilities over `classes`."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    labels = (rows * 3 // height) * 7 + (cols * 7 // width)
    labels %= classes
    image = np.stack([rows * 4, cols * 3, 255 - rows * 2], axis=-1) + (labels[..., None] * 37) % 200
    image = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    return image, softmax(2.0 * np.eye(classes)[labels] + rng.normal(0, 1.2, (height, width, classes)))


@pytest.mark.parametrize(
    "parameters",
    [constants.DENSE_CRF, constants.DENSE_CRF_RESNET101, {**constants.DENSE_CRF, "iterations": 3, "bi_rgb_std": 13}],
    ids=["defaults", "resnet101-release", "wide-colour"],
)
@pytest.mark.parametrize("case", ["shapes", "21-classes", "40-classes"])
def test_equals_kraehenbuehls_densecrf(parameters, case):
    # The same lattice arithmetic, normalisation and mean field as the library DeepLab used: the probabilities
    # agree to float rounding, so every pixel gets the same class. 3 classes: one vector with 5 padding lanes;
    # 21: three vectors (both unrolled with the scores in registers); 40: five vectors, the general loop.
    if case == "shapes":
        image, labels = scene(60, 90)
        probabilities = softmax(
            2.0 * np.eye(NUM_CLASSES)[labels] + np.random.default_rng(4).normal(0, 1.5, (60, 90, 3))
        )
    else:
        image, probabilities = many_class_case(classes=int(case.split("-")[0]))
    ours = dense_crf(image, probabilities, **parameters)
    theirs = reference_crf(image, probabilities, **parameters)
    # Ten iterations amplify rounding: densecrf's own output moves by up to 5e-5 here when its input moves by one
    # part in a million (measured); ours sits within that (at most 7e-5 over these 9 cases, most below 2e-5).
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert np.array_equal(ours.argmax(-1), theirs.argmax(-1))


def test_the_portable_loops_and_any_thread_count_give_the_same_result():
    from keras_deeplab import _crf_mean_field

    image, probabilities = many_class_case(classes=9)  # two vectors, the second mostly padding
    height, width, classes = probabilities.shape
    settings = [constants.DENSE_CRF[name] for name in ("bi_w", "bi_xy_std", "bi_rgb_std", "pos_w", "pos_xy_std")]
    results = {}
    for threads, portable in ((1, False), (3, False), (2, True), (5, True)):
        out = np.full(probabilities.shape, np.nan, np.float32)
        _crf_mean_field.mean_field(
            image, probabilities.astype(np.float32), out, height, width, classes, 10, threads, *settings, 1e-8,
            portable=portable,
        )  # fmt: skip
        results[threads, portable] = out
    reference = results[1, False]
    assert np.all(np.isfinite(reference))
    for key, out in results.items():
        np.testing.assert_allclose(out, reference, atol=2e-6, err_msg=str(key))
    assert _crf_mean_field.instruction_set() in ("avx2", "baseline")


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (23, 1), (2, 3)])
def test_tiny_and_thin_images(shape):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    probabilities = softmax(rng.normal(0, 1, (*shape, 4)))
    refined = dense_crf(image, probabilities, threads=4)  # more threads than rows on some
    assert refined.shape == probabilities.shape
    np.testing.assert_allclose(refined.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(refined, reference_crf(image, probabilities, **constants.DENSE_CRF), atol=2e-5)


@pytest.mark.parametrize("threads", [0, 65, 2.5, True])
def test_threads_must_be_a_whole_number_from_1_to_64(threads):
    with pytest.raises(ValueError, match=f"threads must be an integer >= 1 and <= 64, got {threads!r}"):
        dense_crf(*_good(), threads=threads)


def test_concurrent_calls_and_released_memory_give_the_same_result():
    # dense_crf releases the GIL: a second call while one runs works in memory of its own (the first keeps the
    # cached workspace); release_memory frees that cache, and the next call builds it again.
    from concurrent.futures import ThreadPoolExecutor

    from keras_deeplab.crf import release_memory

    image, probabilities = many_class_case(60, 80)
    expected = dense_crf(image, probabilities, threads=1)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: dense_crf(image, probabilities, threads=2), range(8)))
    for result in results:
        np.testing.assert_allclose(result, expected, atol=2e-6)
    release_memory()
    np.testing.assert_allclose(dense_crf(image, probabilities), expected, atol=2e-6)


@pytest.mark.parametrize(
    ("argument", "value", "shape", "message"),
    [
        # Issue 24 row 1: stds this small put positions past 2^31 lattice units (SIGSEGV in embed()).
        ("bi_xy_std", 1e-10, (2, 2), r"bi_xy_std must be at least 1.53e-05 for a 2x2 image .*, got 1e-10"),
        ("pos_xy_std", 1e-6, (375, 500), r"pos_xy_std must be at least 0.00761 for a 375x500 image"),
        ("pos_xy_std", 499 / MAX_FEATURE * 0.999, (375, 500), "pos_xy_std must be at least"),
        ("bi_rgb_std", 1e-6, (2, 2), r"bi_rgb_std must be at least 0.00389 \(the lattice takes levels"),
        # Row 2: a weight past float32's range made "probabilities" that sum to 0.875.
        ("bi_w", 3.5e38, (2, 2), "bi_w must be at most 10000"),
        ("pos_w", 1e39, (2, 2), "pos_w must be at most 10000"),
        ("iterations", 3e9, (2, 2), "iterations must be a non-negative integer and <= 1000, got 3000000000"),
    ],
)
def test_parameters_past_the_lattices_range_are_refused_naming_them(argument, value, shape, message):
    image = np.zeros((*shape, 3), np.uint8)
    with pytest.raises(ValueError, match=message):
        dense_crf(image, np.full((*shape, 2), 0.5, np.float32), **{argument: value})


def test_parameters_at_their_bounds_work():
    image, probabilities = _good()  # 8x10: the longest position is 9 pixels
    for parameters in (
        {"bi_xy_std": 9 / MAX_FEATURE, "pos_xy_std": 9 / MAX_FEATURE, "bi_rgb_std": 255 / MAX_FEATURE},
        {"bi_w": MAX_WEIGHT, "pos_w": MAX_WEIGHT, "iterations": 2},
        {"bi_xy_std": 1e38, "pos_xy_std": 1e38, "bi_rgb_std": 1e38},
    ):
        refined = dense_crf(image, probabilities, **parameters)
        assert np.all(np.isfinite(refined)), parameters
        np.testing.assert_allclose(refined.sum(-1), 1.0, atol=1e-4, err_msg=str(parameters))
    assert check_parameter("iterations", MAX_ITERATIONS) == MAX_ITERATIONS
    # Without an image a position std is checked against the smallest one it could refine (two pixels).
    with pytest.raises(ValueError, match=r"bi_xy_std must be at least 1\.53e-05 "):
        check_parameter("bi_xy_std", 1e-7)


EXTENSION_PROBE = """
import numpy as np
from keras_deeplab import _crf_mean_field
image = np.zeros((375, 500, 3), np.uint8); image[::2] = 255
probabilities = np.full((375, 500, 2), 0.5, np.float32)
out = np.empty_like(probabilities)
bi_w, bi_xy_std, bi_rgb_std, pos_w, pos_xy_std = {parameters}
try:
    _crf_mean_field.mean_field(
        image, probabilities, out, 375, 500, 2, {iterations}, 2, bi_w, bi_xy_std, bi_rgb_std, pos_w, pos_xy_std, 1e-8
    )
    print("ran", float(out.sum()))
except ValueError as error:
    print("refused:", error)
"""


@pytest.mark.parametrize(
    ("parameters", "iterations", "answer"),
    [
        ((4, 1e-7, 5, 3, 3), 2, "refused: mean_field: a std is so small"),
        ((4, 49, 1e-6, 3, 3), 2, "refused: mean_field: a std is so small"),
        ((4, 49, 5, 3, 1e-6), 2, "refused: mean_field: a std is so small"),
        ((4, 49, 5, 3, float("nan")), 2, "refused: mean_field: the standard deviations must be finite"),
        ((1e39, 49, 5, 3, 3), 2, "refused: mean_field: the weights must be from 0 to 1e4"),
        ((4, 49, 5, float("nan"), 3), 2, "refused: mean_field: the weights"),
        ((4, 49, 5, 3, 3), 1001, "refused: mean_field: height, width, classes (1-1024), iterations (0-1000)"),
        ((4, 499 / MAX_FEATURE, 255 / MAX_FEATURE, MAX_WEIGHT, 499 / MAX_FEATURE), 1, "ran 187500"),
    ],
)
def test_the_extension_itself_refuses_what_would_overflow_its_lattice(parameters, iterations, answer):
    # The Python checks are the first guard, not the only one: called directly, the extension refuses the same
    # values (it crashed with SIGSEGV before). A child process, so that a crash fails this test only.
    code = EXTENSION_PROBE.format(parameters=repr(parameters).replace("nan", "float('nan')"), iterations=iterations)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip().startswith(answer), done.stdout
