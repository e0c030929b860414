"""Multi-scale and flipped inference, and the class-map pictures."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_deeplab.inference import class_probabilities, fit_to_square, predict_class_map
from keras_deeplab.visualize import colorize, overlay, save_palette_png


def _left_half_is_class_one(images):
    """Logits (B, h/2, w/2, 2) saying class 1 on the left half of the image: not flip-invariant."""
    shape = tf.shape(images)
    columns = tf.cast(tf.range(shape[2] // 2), tf.float32)
    left = tf.cast(columns < tf.cast(shape[2] // 4, tf.float32), tf.float32) * 10.0 - 5.0
    left = tf.broadcast_to(left[None, None, :, None], [shape[0], shape[1] // 2, shape[2] // 2, 1])
    return tf.concat([-left, left], axis=-1)


def test_probabilities_are_averaged_at_full_size_and_flips_are_mirrored_back():
    images = tf.zeros((2, 16, 24, 3))
    single = class_probabilities(_left_half_is_class_one, images)
    assert single.shape == (2, 16, 24, 2)
    np.testing.assert_allclose(tf.reduce_sum(single, -1).numpy(), 1.0, rtol=1e-5)
    assert single[0, 0, 0, 1] > 0.99 and single[0, 0, -1, 0] > 0.99
    flipped = class_probabilities(_left_half_is_class_one, images, flip=True)
    # the mirrored image says "class 1 on the right of the mirror", mirrored back: class 1 on the right
    # of the original: averaging the two gives 0.5 everywhere away from the seam
    np.testing.assert_allclose(flipped[0, :, :4, 1].numpy(), 0.5, atol=1e-3)
    multi = class_probabilities(_left_half_is_class_one, images, scales=(0.5, 1.0, 1.75))
    assert multi.shape == (2, 16, 24, 2)
    np.testing.assert_array_equal(predict_class_map(_left_half_is_class_one, images).numpy()[0, 0, :3], [1, 1, 1])


def test_bad_scales_are_refused():
    with pytest.raises(ValueError, match=r"scales must be a non-empty list of positive numbers, got \[\]"):
        class_probabilities(_left_half_is_class_one, tf.zeros((1, 8, 8, 3)), scales=())
    with pytest.raises(ValueError, match="positive"):
        class_probabilities(_left_half_is_class_one, tf.zeros((1, 8, 8, 3)), scales=(0.0,))


def test_palette_png_holds_class_ids_as_indices_with_the_voc_colours(tmp_path):
    mask = np.random.default_rng(0).integers(0, 21, (7, 9)).astype(np.uint8)
    mask[0, 0] = 255
    save_palette_png(tmp_path / "m.png", mask)
    picture = Image.open(tmp_path / "m.png")
    assert picture.mode == "P"
    np.testing.assert_array_equal(np.array(picture), mask)
    np.testing.assert_array_equal(np.array(picture.convert("RGB")), colorize(mask))
    assert colorize(np.array([[1, 15, 255]]))[0].tolist() == [[128, 0, 0], [192, 128, 128], [224, 224, 192]]
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary left behind
    with pytest.raises(ValueError, match=r"bad\.png"):
        save_palette_png(tmp_path / "bad.png", np.zeros((2, 2, 2)))


def test_overlay_colours_objects_only():
    image = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 255], [0, 1, 0]], np.uint8)
    blended = overlay(image, mask, alpha=0.5)
    np.testing.assert_array_equal(blended[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(blended[0, 2], [100, 100, 100])
    np.testing.assert_array_equal(blended[0, 1], [114, 50, 50])


def test_fit_to_square_resizes_as_the_official_export():
    """Longer side to the size, the other ceil(side * size / longer) in float32; corners aligned (the photo's
    corner pixels land on the fitted part's corners); the rest the mean pixel."""
    image = np.zeros((1, 10, 25, 3), np.float32)
    image[0, :, :, 0] = np.arange(25)  # a ramp along the width
    image[0, -1, -1] = (200, 100, 50)
    padded, fitted = fit_to_square(tf.constant(image), 33)
    assert padded.shape == (1, 33, 33, 3) and tuple(fitted.numpy()) == (14, 33)  # ceil(10 * 33 / 25) = ceil(13.2)
    padded = padded.numpy()
    np.testing.assert_allclose(padded[0, 0, :, 0], np.arange(33) * 24 / 32, atol=1e-5)  # corner-aligned ramp
    np.testing.assert_array_equal(padded[0, 13, 32], (200, 100, 50))
    np.testing.assert_array_equal(padded[0, 14:], 127.5)
    # 131 * (769 / 131) rounds up to 770 in float32: kept at 769 (the official graph fails there)
    padded, fitted = fit_to_square(tf.zeros((1, 131, 20, 3)), 769, pad_pixel=(1.0, 2.0, 3.0))
    assert int(fitted[0]) == 769 and padded.shape == (1, 769, 769, 3)
    np.testing.assert_array_equal(padded[0, 0, -1], (1.0, 2.0, 3.0))  # another network's mean pixel
