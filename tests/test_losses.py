"""The segmentation loss: exact ignore label, NumPy references for weights and bootstrapping, no label resizing."""

import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab.losses import SegmentationLoss, segmentation_loss, segmentation_loss_terms

NUM_CLASSES = 5


def random_batch(seed=0, shape=(2, 9, 11), ignored_fraction=0.25):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, shape).astype(np.uint8)
    labels[rng.random(shape) < ignored_fraction] = 255
    logits = rng.normal(scale=3.0, size=(*shape, NUM_CLASSES)).astype(np.float32)
    return labels, logits


def numpy_pixel_losses(labels, logits):
    """Cross-entropy of each counted pixel (N,) and its label (N,), in float64."""
    valid = labels != 255
    flat_logits = logits[valid].astype(np.float64)
    flat_labels = labels[valid].astype(np.int64)
    log_softmax = flat_logits - np.log(np.exp(flat_logits).sum(-1, keepdims=True))
    return -log_softmax[np.arange(len(flat_labels)), flat_labels], flat_labels


def test_loss_is_the_mean_cross_entropy_of_the_counted_pixels():
    labels, logits = random_batch()
    losses, _ = numpy_pixel_losses(labels, logits)
    np.testing.assert_allclose(float(segmentation_loss(labels, logits)), losses.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(segmentation_loss(labels[..., None], logits)), losses.mean(), rtol=1e-5)


def test_pixels_labelled_255_change_neither_loss_nor_gradient():
    labels, logits = random_batch(seed=1)
    changed = logits.copy()
    ignored = labels == 255
    changed[ignored] = np.random.default_rng(2).normal(scale=50.0, size=changed[ignored].shape)

    def loss_and_gradient(values):
        values = tf.constant(values)
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = segmentation_loss(labels, values, class_weights=[1, 2, 3, 0.5, 1], hard_pixel_fraction=0.5)
        return loss.numpy(), tape.gradient(loss, values).numpy()

    loss, gradient = loss_and_gradient(logits)
    changed_loss, changed_gradient = loss_and_gradient(changed)
    assert ignored.any() and loss > 0
    assert loss == changed_loss  # bit for bit
    np.testing.assert_array_equal(gradient, changed_gradient)
    assert not gradient[ignored].any()
    assert np.abs(gradient[~ignored]).sum() > 0


def test_all_ignored_gives_zero_loss_not_nan():
    labels = np.full((1, 4, 4), 255, np.uint8)
    logits = np.zeros((1, 4, 4, NUM_CLASSES), np.float32)
    assert float(segmentation_loss(labels, logits)) == 0.0


def test_class_weights_weight_each_pixel_by_its_true_class():
    labels, logits = random_batch(seed=3)
    weights = np.array([0.5, 1.0, 2.0, 3.0, 0.0])
    losses, classes = numpy_pixel_losses(labels, logits)
    expected = (losses * weights[classes]).sum() / weights[classes].sum()
    np.testing.assert_allclose(float(segmentation_loss(labels, logits, class_weights=weights)), expected, rtol=1e-5)


def test_hard_pixel_fraction_keeps_the_hardest_pixels():
    labels, logits = random_batch(seed=4)
    losses, _ = numpy_pixel_losses(labels, logits)
    keep = int(np.ceil(0.3 * len(losses)))
    total, normalizer = segmentation_loss_terms(labels, logits, hard_pixel_fraction=0.3)
    assert float(normalizer) == keep
    np.testing.assert_allclose(float(total), np.sort(losses)[-keep:].sum(), rtol=1e-5)


def test_low_resolution_logits_are_upsampled_to_the_labels():
    labels, _ = random_batch(seed=5, shape=(1, 17, 13))
    small = np.random.default_rng(6).normal(size=(1, 5, 4, NUM_CLASSES)).astype(np.float32)
    upsampled = tf.image.resize(small, (17, 13), method="bilinear").numpy()
    losses, _ = numpy_pixel_losses(labels, upsampled)
    np.testing.assert_allclose(float(segmentation_loss(labels, small)), losses.mean(), rtol=1e-5)


def test_keras_loss_matches_the_function_and_round_trips_its_config():
    labels, logits = random_batch(seed=7)
    loss = SegmentationLoss(class_weights=[1, 1, 2, 2, 1], hard_pixel_fraction=0.8)
    expected = segmentation_loss(labels, logits, class_weights=[1, 1, 2, 2, 1], hard_pixel_fraction=0.8)
    np.testing.assert_allclose(float(loss(labels, logits)), float(expected), rtol=1e-6)
    again = SegmentationLoss.from_config(loss.get_config())
    assert again.class_weights == [1, 1, 2, 2, 1] and again.hard_pixel_fraction == 0.8


def test_bad_arguments_raise_clear_errors():
    labels, logits = random_batch()
    with pytest.raises(ValueError, match="hard_pixel_fraction"):
        segmentation_loss(labels, logits, hard_pixel_fraction=0.0)
    with pytest.raises(ValueError, match="class_weights has 2 entries for 5 classes"):
        segmentation_loss(labels, logits, class_weights=[1, 2])
    labels[0, 0, 0] = 7
    with pytest.raises(tf.errors.InvalidArgumentError, match="class ids below 5"):
        segmentation_loss(labels, logits)
