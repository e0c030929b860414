"""Multiply-add counting and `keras-deeplab info`."""

import json

import keras
import pytest

from keras_deeplab.cli import main
from keras_deeplab.complexity import layer_multiply_adds, multiply_adds


def test_multiply_adds_of_each_layer_kind_follow_the_formulas():
    inputs = keras.Input((9, 11, 4))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv")(inputs)  # 5x6 output
    x = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=2, name="depthwise")(x)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", name="separable")(x)
    x = keras.layers.Conv2D(8, 1, groups=2, name="grouped")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="dense")(x)
    model = keras.Model(inputs, outputs)
    expected = {
        "conv": 5 * 6 * 6 * 9 * 4,
        "depthwise": 5 * 6 * 6 * 9,
        "separable": 5 * 6 * 6 * 9 + 5 * 6 * 6 * 8,
        "grouped": 5 * 6 * 8 * 4,
        "bn": 0,
        "pool": 0,
        "dense": 8 * 3,
    }
    assert {layer.name: layer_multiply_adds(layer) for layer in model.layers[1:]} == expected
    assert multiply_adds(model) == sum(expected.values())


def test_dynamic_shapes_are_refused_with_the_layer_name():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="dynamic_conv")(inputs))
    with pytest.raises(ValueError, match="dynamic_conv"):
        multiply_adds(model)


@pytest.mark.slow
def test_info_json_for_resnet101_at_513(capsys):
    assert main(["info", "--backbone", "resnet101", "--output-stride", "16", "--input-size", "513", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 58_201_749
    assert info["feature_size"] == [33, 33]
    assert info["multiply_adds"] == sum(info["multiply_adds_by_part"].values())
    # the ASPP at 33x33 by hand: 1x1 + three 3x3 at 2048->256, pooling 1x1 at 1x1, projection 1280->256
    aspp = 33 * 33 * 256 * 2048 * (1 + 3 * 9) + 256 * 2048 + 33 * 33 * 256 * 1280
    assert info["multiply_adds_by_part"]["aspp"] == aspp
    assert 65e9 < info["multiply_adds"] < 85e9  # the v3+ paper's Table 3: 81.02B (README explains the gap)


def test_info_text_output(capsys):
    assert main(["info", "--backbone", "resnet50", "--output-stride", "8", "--input-size", "129", "--decoder"]) == 0
    out = capsys.readouterr().out
    assert "DeepLabv3+ resnet50" in out and "feature map     17x17" in out and "multiply-adds" in out
