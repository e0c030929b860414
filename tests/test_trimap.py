"""Trimap boundary accuracy: the bands hold exactly the pixels counted by hand, and so do their mIoU figures."""

import numpy as np
import pytest

from keras_deeplab import constants
from keras_deeplab.trimap import TrimapMeanIoU, band_mask, band_masks, boundary_mask


def halves(height=10, width=12, split=6):
    """Class 0 in columns [0, split), class 1 from `split` on."""
    labels = np.zeros((height, width), np.int32)
    labels[:, split:] = 1
    return labels


def square():
    """A 4x4 square of class 1 (rows and columns 4..7) in a 12x12 map of class 0."""
    labels = np.zeros((12, 12), np.int32)
    labels[4:8, 4:8] = 1
    return labels


def test_boundary_of_a_square_is_its_rim_and_the_pixels_touching_it():
    expected = np.zeros((12, 12), bool)
    expected[4:8, 4:8] = True
    expected[5:7, 5:7] = False  # the inside of the square has no other class next to it
    expected[3, 4:8] = expected[8, 4:8] = expected[4:8, 3] = expected[4:8, 8] = True  # 4-neighbours outside
    np.testing.assert_array_equal(boundary_mask(square()), expected)
    np.testing.assert_array_equal(band_mask(square(), 0), expected)


def test_band_of_a_square_by_hand():
    # Width 1 reaches one pixel further in every direction, diagonals included: the 8x8 block of rows and
    # columns 2..9 except its 4 corners, which are 2 rows or columns away from every boundary pixel.
    expected = np.zeros((12, 12), bool)
    expected[2:10, 2:10] = True
    expected[[2, 2, 9, 9], [2, 9, 2, 9]] = False
    band = band_mask(square(), 1)
    np.testing.assert_array_equal(band, expected)
    assert band.sum() == 60
    # Width 2: the 10x10 block of rows and columns 1..10 except its 4 corners; width 4 covers the whole map.
    expected = np.zeros((12, 12), bool)
    expected[1:11, 1:11] = True
    expected[[1, 1, 10, 10], [1, 10, 1, 10]] = False
    np.testing.assert_array_equal(band_mask(square(), 2), expected)
    assert band_mask(square(), 4).all()


@pytest.mark.parametrize("width", [0, 1, 2, 3, 7])
def test_band_of_a_straight_edge_is_a_strip_of_columns(width):
    # The boundary is columns 5 and 6; the band of width N is columns 5 - N .. 6 + N, clipped to the map.
    expected = np.zeros((10, 12), bool)
    expected[:, max(5 - width, 0) : min(6 + width, 11) + 1] = True
    np.testing.assert_array_equal(band_mask(halves(), width), expected)


def test_several_widths_at_once_match_one_at_a_time_and_grow():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (6, 7)).repeat(8, axis=0).repeat(8, axis=1)  # 48x56 blocks of random classes
    labels[20:24, :] = constants.IGNORE_LABEL
    widths = (0, 4, 8, 16, 32)
    bands = band_masks(labels, widths)
    assert bands.shape == (len(widths), 48, 56)
    for band, width in zip(bands, widths, strict=True):
        np.testing.assert_array_equal(band, band_mask(labels, width))
    assert all(np.all(bands[i] <= bands[i + 1]) for i in range(len(widths) - 1))


def test_void_outline_is_a_boundary_but_its_pixels_are_never_counted():
    # VOC style: class 0 | two columns of 255 | class 1. The boundary is where the void band meets a class.
    labels = halves()
    labels[:, 5:7] = constants.IGNORE_LABEL
    expected = np.zeros((10, 12), bool)
    expected[:, 4:8] = True
    np.testing.assert_array_equal(band_mask(labels, 0), expected)
    metric = TrimapMeanIoU(2, widths=(0, 1))
    metric.update(labels, np.zeros_like(labels))  # every prediction 0, the void ones included
    results = metric.results()
    assert results[0]["pixels"] == 20  # columns 4 and 7; columns 5 and 6 are void
    assert results[1]["pixels"] == 40  # columns 3, 4, 7, 8
    assert results[1]["pixel_accuracy"] == pytest.approx(0.5)
    assert results["all"]["pixels"] == 100


def test_miou_within_the_band_by_hand():
    # Truth: class 0 in columns 0..5, class 1 in 6..11. Prediction: the boundary one column to the right.
    labels = halves()
    predictions = halves(split=7)
    metric = TrimapMeanIoU(2, widths=(2, 32))
    metric.update(labels, predictions)
    results = metric.results()
    # Width 2 holds columns 3..8 (60 pixels): class 0 has 30 true pixels all found plus the 10 of column 6
    # wrongly claimed, IoU 30/40; class 1 has 30 true pixels of which 20 found, IoU 20/30.
    assert results[2]["pixels"] == 60
    assert results[2]["per_class_iou"] == pytest.approx([30 / 40, 20 / 30])
    assert results[2]["miou"] == pytest.approx((30 / 40 + 20 / 30) / 2, abs=1e-6)
    assert results[2]["pixel_accuracy"] == pytest.approx(50 / 60, abs=1e-6)
    # Width 32 covers the whole map, which is also the 'all' figure: IoU 60/70 and 50/60.
    for key in (32, "all"):
        assert results[key]["pixels"] == 120
        assert results[key]["miou"] == pytest.approx((60 / 70 + 50 / 60) / 2, abs=1e-6)


def test_batches_logits_and_accumulation():
    labels = np.stack([halves(), halves(split=3)])
    logits = np.stack([np.eye(2)[halves(split=7)], np.eye(2)[halves(split=3)]]).astype(np.float32) * 5
    batched = TrimapMeanIoU(2, widths=(2,))
    batched.update(labels[..., None], logits)
    one_by_one = TrimapMeanIoU(2, widths=(2,))
    for label_map, prediction in zip(labels, logits.argmax(-1), strict=True):
        one_by_one.update(label_map, prediction)
    assert batched.results() == one_by_one.results()
    # The second image is predicted exactly: band (columns 0..5, 60 pixels) adds 60 correct pixels.
    assert batched.results()[2]["pixels"] == 120
    assert batched.results()[2]["pixel_accuracy"] == pytest.approx(110 / 120, abs=1e-6)
    batched.reset()
    assert batched.results()[2]["pixels"] == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: band_mask(np.zeros((2, 3, 4), np.int32), 1), r"one label map \(H, W\)"),
        (lambda: band_mask(np.zeros((3, 4), np.float32), 1), "integer class ids"),
        (lambda: band_mask(np.zeros((3, 4), np.int32), -1), "non-negative integers"),
        (lambda: band_masks(np.zeros((3, 4), np.int32), ()), "at least one band width"),
        (lambda: band_masks(np.zeros((3, 4), np.int32), (4, 4)), "must not repeat"),
        (lambda: TrimapMeanIoU(2).update(np.zeros((4,), np.int32), np.zeros((4,), np.int32)), "labels must be"),
    ],
)
def test_bad_inputs_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
