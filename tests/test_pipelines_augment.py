"""Augmentation and the tf.data streams: alignment, padding, nearest-only masks, seeds, shapes, distribution."""

import numpy as np
import pipelines_fixtures as fixtures
import pytest
import tensorflow as tf

from keras_deeplab.constants import IGNORE_LABEL, MEAN_PIXEL_RGB
from keras_deeplab.descriptors import make_descriptor
from pipelines import ArraySource, evaluation_dataset, open_source, training_dataset
from pipelines.augment import augment_pair, random_scale, scaled_window

CLASS_COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], np.float32)


def colour_coded_source(count=3, height=47, width=61, seed=0):
    """Images painted from their masks: class k is CLASS_COLOURS[k]; 255 marks pixels next to another class.

    So a mask can be recomputed from the image alone: wherever the mask says class k, the image must show
    CLASS_COLOURS[k], and so must its 8 neighbours, which bilinear resampling mixes in. Any misalignment
    between image and mask breaks that.
    """
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(count):
        cells = rng.integers(0, len(CLASS_COLOURS), (height // 6 + 1, width // 6 + 1))
        classes = np.kron(cells, np.ones((6, 6), np.int64))[:height, :width]
        padded = np.pad(classes, 1, mode="edge")
        boundary = np.zeros(classes.shape, bool)
        for dy in range(3):
            for dx in range(3):
                boundary |= padded[dy : dy + height, dx : dx + width] != classes
        images.append(CLASS_COLOURS[classes].astype(np.uint8))
        masks.append(np.where(boundary, IGNORE_LABEL, classes).astype(np.uint8))
    return ArraySource(
        "colour_coded",
        np.stack(images),
        np.stack(masks),
        [f"c{index}" for index in range(count)],
        descriptor=make_descriptor("colour_coded", ["red", "green", "blue", "yellow"]),
    )


def assert_aligned(images: np.ndarray, masks: np.ndarray) -> None:
    """Every labelled pixel shows its class colour (bilinear of a same-colour neighbourhood is exact)."""
    labelled = masks != IGNORE_LABEL
    assert labelled.mean() > 0.2
    np.testing.assert_allclose(images[labelled], CLASS_COLOURS[masks[labelled]], atol=2e-3)


def test_image_and_mask_stay_aligned_through_scale_crop_and_flip():
    source = colour_coded_source()
    batches = training_dataset(source, crop_size=41, batch_size=6, seed=3, min_scale=0.5, max_scale=2.0)
    flipped_seen = set()
    for images, masks in batches.take(8).as_numpy_iterator():
        assert images.dtype == np.float32 and masks.dtype == np.uint8
        assert_aligned(images, masks)
        assert images.min() >= 0 and images.max() <= 255
    for seed in range(12):  # flips happen, and a flipped crop is the mirror of the unflipped one
        image, mask = colour_coded_source().examples().__next__()[:2]
        options = dict(crop_size=61, min_scale=1.0, max_scale=1.0, scale_step=None)
        plain = augment_pair(image, mask, [seed, 0], flip=False, **options)
        maybe = augment_pair(image, mask, [seed, 0], flip=True, **options)
        mirrored = np.array_equal(maybe[1].numpy(), plain[1].numpy()[:, ::-1])
        assert mirrored or np.array_equal(maybe[1].numpy(), plain[1].numpy())
        flipped_seen.add(mirrored)
        assert_aligned(maybe[0].numpy(), maybe[1].numpy())
    assert flipped_seen == {True, False}


def test_scaled_window_equals_resize_then_crop():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, (37, 50, 3)), tf.uint8)
    mask = tf.constant(rng.integers(0, 21, (37, 50)), tf.uint8)
    cases = [((74, 100), (5, 9), (41, 41)), ((19, 25), (0, 0), (19, 25)), ((55, 61), (3, 0), (30, 61))]
    for scaled, offset, window in cases:  # up, down, mixed; (scaled size, window offset, window size)
        window_image, window_mask = scaled_window(image, mask, *(tf.constant(v) for v in (scaled, offset, window)))
        rows, cols = slice(offset[0], offset[0] + window[0]), slice(offset[1], offset[1] + window[1])
        full_image = tf.image.resize(tf.cast(image, tf.float32), scaled, method="bilinear")[rows, cols]
        full_mask = tf.image.resize(mask[..., None], scaled, method="nearest")[rows, cols, 0]
        np.testing.assert_allclose(window_image.numpy(), full_image.numpy(), atol=1e-3)
        np.testing.assert_array_equal(window_mask.numpy(), full_mask.numpy())  # nearest neighbour, exactly


def test_padding_is_the_mean_pixel_and_255():
    source = colour_coded_source(count=1, height=29, width=33)
    image, mask, _ = next(source.examples())
    images, masks = next(
        iter(training_dataset(source, crop_size=65, batch_size=2, min_scale=1.0, max_scale=1.0, flip=False))
    )
    images, masks = images.numpy(), masks.numpy()
    np.testing.assert_array_equal(images[0, :29, :33], image.astype(np.float32))  # unchanged at the top left
    np.testing.assert_array_equal(masks[0, :29, :33], mask)
    padded = np.ones((65, 65), bool)
    padded[:29, :33] = False
    assert np.all(masks[:, padded] == IGNORE_LABEL)
    np.testing.assert_array_equal(images[:, padded], np.broadcast_to(MEAN_PIXEL_RGB, images[:, padded].shape))


def test_masks_are_never_interpolated():
    mask = np.where(np.arange(23 * 19).reshape(23, 19) % 7 < 3, 3, 7).astype(np.uint8)
    mask[5:9] = 0
    image = np.zeros((23, 19, 3), np.uint8)
    values = set()
    for seed in range(20):
        _, out = augment_pair(
            image, mask, [seed, 1], crop_size=31, min_scale=0.5, max_scale=2.0, scale_step=None, flip=True
        )
        values |= set(np.unique(out.numpy()).tolist())
    assert values == {0, 3, 7, IGNORE_LABEL}


def test_random_scale_steps_and_range():
    draws = tf.random.stateless_uniform([2000], seed=[0, 0])
    stepped = np.unique(np.round(random_scale(draws, 0.5, 2.0, 0.25).numpy(), 6))
    np.testing.assert_allclose(stepped, [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    continuous = random_scale(draws, 0.5, 2.0, None).numpy()
    assert 0.5 <= continuous.min() < 0.51 and 1.99 < continuous.max() <= 2.0 and len(np.unique(continuous)) > 1900
    with pytest.raises(ValueError, match="min_scale"):
        random_scale(draws, 2.0, 0.5, None)


def test_one_seed_makes_a_run_repeatable(tmp_path):
    fixtures.write_voc(str(tmp_path))
    source = open_source("voc", str(tmp_path), "train")

    def first_batches(seed):
        batches = training_dataset(source, crop_size=25, batch_size=2, seed=seed)
        return [batch for batch in batches.take(3).as_numpy_iterator()]

    first, again, other = first_batches(7), first_batches(7), first_batches(8)
    for (images, masks), (images_again, masks_again) in zip(first, again, strict=True):
        np.testing.assert_array_equal(images, images_again)
        np.testing.assert_array_equal(masks, masks_again)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_cached_training_dataset_matches_shapes_and_alignment():
    batches = training_dataset(colour_coded_source(), crop_size=33, batch_size=4, cache=True, seed=2)
    for images, masks in batches.take(4).as_numpy_iterator():
        assert images.shape == (4, 33, 33, 3) and masks.shape == (4, 33, 33)
        assert_aligned(images, masks)


def test_training_dataset_distributes_over_two_replicas():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    batches = training_dataset(colour_coded_source(), crop_size=17, batch_size=4, seed=0)
    assert batches.element_spec[0].shape == (4, 17, 17, 3)  # static batch size: drop_remainder
    images, masks = next(iter(strategy.experimental_distribute_dataset(batches)))
    per_replica = [strategy.experimental_local_results(images), strategy.experimental_local_results(masks)]
    assert [tuple(tensor.shape) for tensor in per_replica[0]] == [(2, 17, 17, 3)] * 2
    assert [tuple(tensor.shape) for tensor in per_replica[1]] == [(2, 17, 17)] * 2


def test_evaluation_dataset_keeps_every_pixel(tmp_path):
    fixtures.write_voc(str(tmp_path))
    source = open_source("voc", str(tmp_path), "train")
    stream = list(evaluation_dataset(source).as_numpy_iterator())
    assert [name.decode() for _, _, name in stream] == [name for _, _, name in source.examples()]
    for (image, mask, _), (source_image, source_mask, _) in zip(stream, source.examples(), strict=True):
        assert image.shape == (1, *source_image.shape) and image.dtype == np.float32
        assert mask.shape == (1, *source_mask.shape) and mask.dtype == np.uint8
        np.testing.assert_array_equal(image[0], source_image)
        np.testing.assert_array_equal(mask[0], source_mask)
