"""The fully connected CRF: it recovers shapes from a noisy or misplaced unary, and it checks its inputs."""

import inspect

import numpy as np
import pytest

from keras_deeplab import constants
from keras_deeplab.crf import dense_crf

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
        (lambda i, p: (i, p[..., :1] / p[..., :1]), "at least 2 classes"),
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
