"""The embedded synthetic set: seeded, varied, VOC-like boundaries, and too hard for naive predictors."""

import numpy as np
import pytest

from keras_deeplab.cli import main
from keras_deeplab.constants import IGNORE_LABEL
from pipelines import open_source, synthetic_source
from pipelines.synthetic import CLASS_NAMES, NUM_CLASSES, baseline_scores, synthetic_example


def test_examples_depend_only_on_seed_split_and_index():
    few, many = synthetic_source("train", 3), synthetic_source("train", 6)
    np.testing.assert_array_equal(few.images, many.images[:3])
    np.testing.assert_array_equal(few.masks, many.masks[:3])
    image, mask = synthetic_example("train", 0)
    assert not np.array_equal(image, synthetic_example("val", 0)[0])
    assert not np.array_equal(image, synthetic_example("train", 0, seed=1)[0])
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and mask.shape == (128, 128)
    assert synthetic_example("val", 4, image_size=96)[0].shape == (96, 96, 3)
    with pytest.raises(ValueError, match="split must be one of"):
        synthetic_source("test")


def test_classes_scales_and_boundaries_look_like_voc():
    source = synthetic_source("val", 40)
    assert (source.num_classes, source.class_names, len(source)) == (NUM_CLASSES, CLASS_NAMES, 40)
    assert (source.descriptor.name, source.descriptor.background, source.descriptor.palette[1]) == (
        "synthetic",
        0,
        (128, 0, 0),  # VOC's colours
    )
    masks = source.masks
    pixels = np.bincount(masks.ravel(), minlength=256)
    assert np.all(pixels[:NUM_CLASSES] > 0) and pixels[NUM_CLASSES:IGNORE_LABEL].sum() == 0
    assert 0.5 < pixels[0] / masks.size < 0.85 and 0.01 < pixels[IGNORE_LABEL] / masks.size < 0.1
    object_areas = [(mask == label).sum() for mask in masks for label in range(1, NUM_CLASSES) if label in mask]
    assert max(object_areas) > 10 * min(object_areas)  # varied scales (and occlusion)
    for mask in masks:  # two different classes never touch: a 255 band always separates them
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
            touching = (a != b) & (a != IGNORE_LABEL) & (b != IGNORE_LABEL)
            assert not touching.any()
    colours = [source.images[index][source.masks[index] == 1] for index in range(40) if 1 in source.masks[index]]
    means = np.array([region.mean(0) for region in colours])
    assert means.std(0).min() > 25  # a class has no colour of its own


def test_naive_predictors_score_badly():
    scores = baseline_scores(synthetic_source("train", 60), synthetic_source("val", 30))
    assert scores.keys() == {"constant", "colour_threshold"}
    assert scores["constant"] < 0.2  # the background everywhere: its IoU / 5 classes
    assert scores["colour_threshold"] < 0.3


def test_open_source_and_data_check_on_synthetic(capsys):
    source = open_source("synthetic", None, "val", num_examples=5, image_size=64, seed=3)
    assert len(source) == 5 and source.images.shape == (5, 64, 64, 3)
    arguments = ["data", "check", "--format", "synthetic", "--split", "train", "--num-examples", "4"]
    assert main(arguments) == 0
    assert "synthetic/train: 4 examples" in capsys.readouterr().out
