"""Evaluation: full-resolution mIoU of every example, multi-scale and flipped, and the `evaluate` command."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab import MeanIoU, build_model, cli
from keras_deeplab.descriptors import make_descriptor
from keras_deeplab.evaluation import evaluate_model, format_table
from keras_deeplab.inference import class_probabilities
from pipelines import ArraySource, synthetic_source

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def model():
    return build_model(16, num_classes=NUM_CLASSES, backbone="resnet50", width_multiplier=0.125, aspp_filters=16)


def odd_sized_source(count=3):
    """Examples of 45x67 pixels (nothing divides by 16) with 255 boundaries."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 45, 67, 3), dtype=np.uint8)
    masks = rng.integers(0, NUM_CLASSES, (count, 45, 67)).astype(np.uint8)
    masks[:, ::7] = 255
    names = [f"odd_{index}" for index in range(count)]
    return ArraySource("odd", images, masks, names, descriptor=make_descriptor("odd", list("abcde")))


@pytest.mark.parametrize(("scales", "flip"), [((1.0,), False), ((0.75,), True)])
def test_every_pixel_of_every_example_is_scored_at_full_resolution(model, scales, flip):
    source = odd_sized_source()
    results = evaluate_model(model, source, scales=scales, flip=flip)
    reference = MeanIoU(NUM_CLASSES)
    for image, mask, _ in source.examples():
        probabilities = class_probabilities(model, tf.constant(image[None], tf.float32), scales=scales, flip=flip)
        assert probabilities.shape == (1, 45, 67, NUM_CLASSES)
        reference.update_state(mask[None], tf.argmax(probabilities, axis=-1))
    assert results["examples"] == 3 and results["scales"] == list(scales) and results["flip"] == flip
    assert results["miou"] == pytest.approx(reference.results()["miou"], abs=1e-6)
    assert results["per_class_iou"] == pytest.approx(reference.results()["per_class_iou"], abs=1e-6)
    assert results["pixel_accuracy"] == pytest.approx(reference.results()["pixel_accuracy"], abs=1e-6)


def test_table_lists_every_class_then_miou(model):
    table = format_table(evaluate_model(model, odd_sized_source(), max_examples=1))
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[1:6]] == list("abcde")
    assert lines[6].startswith("mIoU") and "1 images, output stride 16, scales 1" in lines[-1]


def test_empty_or_mismatched_datasets_fail_before_predicting(model):
    with pytest.raises(ValueError, match="synthetic/val: the dataset has no examples"):
        evaluate_model(model, synthetic_source("val", num_examples=0, image_size=64))
    other = build_model(16, num_classes=3, backbone="resnet50", width_multiplier=0.125, aspp_filters=16)
    with pytest.raises(ValueError, match="the dataset has 5 classes, the model 3"):
        evaluate_model(other, synthetic_source("val", num_examples=1, image_size=64))


def test_evaluate_command_prints_json_with_the_issue_keys(model, tmp_path, capsys):
    model.save(tmp_path / "model.keras")
    argv = ["evaluate", "--model", str(tmp_path / "model.keras"), "--format", "synthetic", "--split", "val"]
    argv += ["--output-stride", "8", "--scales", "0.5,1.0", "--flip", "--max-examples", "2", "--json"]
    assert cli.main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert {"miou", "pixel_accuracy", "per_class_iou"} <= set(results)
    assert len(results["per_class_iou"]) == NUM_CLASSES and 0.0 <= results["miou"] <= 1.0
    assert (results["examples"], results["output_stride"], results["scales"], results["flip"]) == (
        2,
        8,
        [0.5, 1.0],
        True,
    )
