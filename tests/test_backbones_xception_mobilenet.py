"""Xception-65 and MobileNetV2 backbones: shapes, strides, dilation, OS switch, round trip, ImageNet file, counts."""

import json
import math

import keras
import numpy as np
import pytest
from weight_files import randomize_batch_norm, write_legacy_h5_weights

from keras_deeplab import WeightFileError, build_model, constants
from keras_deeplab.cli import main

HEAD = {"aspp_filters": 16, "num_classes": 5}
XCEPTION = {"backbone": "xception65", "width_multiplier": 1 / 16, **HEAD}
MOBILENET = {"backbone": "mobilenetv2", "width_multiplier": 0.35, **HEAD}
# (options, high-level channels, low-level channels) at those widths
VARIANTS = {
    "xception65": (XCEPTION, 2048 // 16, 256 // 16),
    "mobilenetv2": (MOBILENET, 112, 48),  # keras' rounding: 320 * 0.35 -> 112; 6 * (24 * 0.35 -> 8) = 48
}
SIZES = ((65, 65), (97, 129))


@pytest.fixture(scope="module")
def tiny_models():
    """(backbone, output stride) -> the tiny DeepLabv3+ with separable convs, built once per module."""
    cache = {}

    def get(backbone, output_stride):
        if (backbone, output_stride) not in cache:
            options = VARIANTS[backbone][0]
            cache[backbone, output_stride] = build_model(output_stride, decoder=True, separable=True, **options)
        return cache[backbone, output_stride]

    return get


def _pixels(height, width, batch=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def _depthwise(model, name):
    """(stride, rate) of a depthwise conv."""
    layer = model.get_layer(name)
    return layer.strides[0], layer.dilation_rate[0]


CASES = [(backbone, True, output_stride) for backbone in VARIANTS for output_stride in constants.OUTPUT_STRIDES]
CASES += [(backbone, False, 16) for backbone in VARIANTS]


@pytest.mark.parametrize(("backbone", "decoder", "output_stride"), CASES)
def test_logits_at_input_size_and_features_at_output_stride(backbone, decoder, output_stride, tiny_models):
    options, high_channels, low_channels = VARIANTS[backbone]
    model = tiny_models(backbone, output_stride) if decoder else build_model(output_stride, **options)
    features = model.feature_model()
    for height, width in SIZES:
        out = features(_pixels(height, width))
        assert tuple(out["logits"].shape) == (1, height, width, 5)
        assert out["logits"].dtype == "float32"
        assert np.isfinite(out["logits"]).all()
        expected_high = (1, math.ceil(height / output_stride), math.ceil(width / output_stride), high_channels)
        assert tuple(out["high_level"].shape) == expected_high
        assert tuple(out["low_level"].shape) == (1, math.ceil(height / 4), math.ceil(width / 4), low_channels)


@pytest.mark.parametrize(
    ("output_stride", "block3", "exit1", "middle_rate", "exit2_rate"),
    [(32, (2, 1), (2, 1), 1, 1), (16, (2, 1), (1, 1), 1, 2), (8, (1, 1), (1, 2), 2, 4)],
)
def test_xception_strides_turn_into_rates_after_the_output_stride(
    output_stride, block3, exit1, middle_rate, exit2_rate, tiny_models
):
    model = tiny_models("xception65", output_stride)
    # a unit that would stride past the output stride runs at stride 1, at the rate so far; later units dilate
    assert _depthwise(model, "entry_flow_block2_unit1_sepconv3_depthwise") == (2, 1)
    assert _depthwise(model, "entry_flow_block3_unit1_sepconv3_depthwise") == block3
    assert _depthwise(model, "exit_flow_block1_unit1_sepconv3_depthwise") == exit1
    assert model.get_layer("exit_flow_block1_unit1_shortcut").strides[0] == exit1[0]
    for unit in (1, 16):
        assert _depthwise(model, f"middle_flow_block1_unit{unit}_sepconv2_depthwise") == (1, middle_rate)
    for index in (1, 2, 3):
        assert _depthwise(model, f"exit_flow_block2_unit1_sepconv{index}_depthwise") == (1, exit2_rate)
    # separable ASPP and decoder: atrous depthwise 3x3 at the ASPP rates, then 1x1
    aspp_rates = tuple(_depthwise(model, f"aspp_atrous{i}_depthwise")[1] for i in (1, 2, 3))
    assert aspp_rates == constants.aspp_rates(output_stride)
    assert model.get_layer("decoder_conv2_pointwise").kernel_size == (1, 1)
    # no max pooling anywhere: every downsampling is a strided separable conv (or its 1x1 shortcut)
    assert not [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]


@pytest.mark.parametrize(
    ("output_stride", "block6", "block13", "rates_7_to_12", "rates_14_to_16"),
    [(32, (2, 1), (2, 1), 1, 1), (16, (2, 1), (1, 1), 1, 2), (8, (1, 1), (1, 2), 2, 4)],
)
def test_mobilenet_strides_turn_into_rates_and_the_aspp_is_light(
    output_stride, block6, block13, rates_7_to_12, rates_14_to_16, tiny_models
):
    model = tiny_models("mobilenetv2", output_stride)
    assert _depthwise(model, "block_3_depthwise") == (2, 1)
    assert _depthwise(model, "block_6_depthwise") == block6
    assert _depthwise(model, "block_13_depthwise") == block13
    assert {_depthwise(model, f"block_{i}_depthwise") for i in range(7, 13)} == {(1, rates_7_to_12)}
    assert {_depthwise(model, f"block_{i}_depthwise") for i in range(14, 17)} == {(1, rates_14_to_16)}
    # the residual blocks are the same at every output stride
    assert {layer.name for layer in model.layers if layer.name.endswith("_add")} == {
        f"block_{i}_add" for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)
    }
    names = {layer.name for layer in model.layers}
    assert model.build_config["light_aspp"] is True
    assert {"aspp_image_pool_projection_conv", "aspp_conv1x1_conv"} <= names
    assert not [name for name in names if name.startswith("aspp_atrous")]


def test_mobilenet_takes_the_full_aspp_on_request():
    model = build_model(8, light_aspp=False, **MOBILENET)
    assert model.build_config["light_aspp"] is False
    rates = tuple(model.get_layer(f"aspp_atrous{i}_conv").dilation_rate[0] for i in (1, 2, 3))
    assert rates == constants.aspp_rates(8)


@pytest.mark.parametrize("backbone", sorted(VARIANTS))
def test_inputs_are_scaled_to_minus_one_to_one_inside_the_model(backbone, tiny_models):
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], "float32")
    scaled = tiny_models(backbone, 16).get_layer("preprocessing")(pixels).numpy()
    np.testing.assert_allclose(scaled, [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


@pytest.fixture(scope="module", params=[0.35, 1.0])
def mobilenet_file(request, tmp_path_factory):
    """keras.applications' MobileNetV2 (no top) at `alpha`, random BN statistics, in the published file layout."""
    alpha = request.param
    reference = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=alpha, input_shape=(97, 129, 3))
    randomize_batch_norm(reference)
    path = tmp_path_factory.mktemp("weights") / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"
    write_legacy_h5_weights(reference, path)
    return alpha, reference, path


def test_mobilenet_file_gives_keras_applications_features(mobilenet_file):
    alpha, reference, path = mobilenet_file
    pixels = _pixels(97, 129, batch=2, seed=1)
    names = ("block_2_depthwise_relu", "block_12_add", "block_16_project_BN")
    outputs = keras.Model(reference.input, [reference.get_layer(name).output for name in names])
    expected = [e.numpy() for e in outputs(keras.applications.mobilenet_v2.preprocess_input(pixels.copy()))]
    for output_stride in (32, 16):
        model = build_model(output_stride, backbone="mobilenetv2", width_multiplier=alpha, backbone_weights=str(path))
        ours = keras.Model(model.input, [model.get_layer(name).output for name in names])(pixels)
        # block 2 at stride 4 and block 12 at stride 16 match at both output strides; block 16 is dilated at 16
        for name, got, want in list(zip(names, ours, expected, strict=True))[: 3 if output_stride == 32 else 2]:
            assert got.shape == want.shape, name
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=name)
    assert model.features["high_level"].shape[-1] == reference.get_layer("block_16_project_BN").output.shape[-1]


def test_mobilenet_file_of_another_width_is_named(mobilenet_file):
    alpha, _, path = mobilenet_file
    other = 1.0 if alpha == 0.35 else 0.35
    with pytest.raises(WeightFileError, match=r"layer 'Conv1' has weights of shapes .* but the model expects"):
        build_model(16, backbone="mobilenetv2", width_multiplier=other, backbone_weights=str(path))
    with pytest.raises(
        WeightFileError, match=r"layer 'Conv1' of the file has no layer of that name .*another backbone"
    ):
        build_model(16, **XCEPTION, backbone_weights=str(path))


def _info(*args, capsys):
    assert main(["info", "--input-size", "513", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _xception65_parameters():
    """Aligned Xception-65 by hand: the v3+ paper's Fig. 4 widths; every conv without bias, BN 4 per channel."""

    def separable(cin, cout):
        return 9 * cin + 4 * cin + cin * cout + 4 * cout

    total = 3 * 9 * 32 + 4 * 32 + 32 * 9 * 64 + 4 * 64  # entry flow's two 3x3 convs
    cin = 64
    units = [(128, 128, 128)] + [(256, 256, 256)] + [(728, 728, 728)] + [(728, 728, 728)] * 16
    units += [(728, 1024, 1024), (1536, 1536, 2048)]
    for index, widths in enumerate(units):
        unit_input = cin
        for cout in widths:
            total, cin = total + separable(cin, cout), cout
        if index in (0, 1, 2, 19):  # the strided units' shortcut: 1x1 conv + BN
            total += unit_input * cin + 4 * cin
    return total


@pytest.mark.slow
def test_xception65_with_decoder_and_separable_convs_beside_the_paper(capsys):
    info = _info("--backbone", "xception65", "--decoder", "--separable", "--output-stride", "16", capsys=capsys)
    assert info["feature_size"] == [33, 33]
    assert info["output_shape"] == [513, 513, 21]
    bn = 4 * 256
    aspp = 2 * (2048 * 256 + bn) + 3 * (13 * 2048 + 2048 * 256 + bn) + 5 * 256 * 256 + bn
    decoder = 256 * 48 + 4 * 48 + (13 * 304 + 304 * 256 + bn) + (13 * 256 + 256 * 256 + bn)
    assert info["parameters"] == _xception65_parameters() + aspp + decoder + 256 * 21 + 21
    # v3+ paper, Table 5: 54.17B; the count here is conv multiply-adds only (README explains the gap)
    assert info["multiply_adds"] == pytest.approx(54.17e9, rel=0.005)


@pytest.mark.slow
def test_mobilenetv2_beside_the_model_zoo(capsys):
    keras_parameters = keras.applications.MobileNetV2(weights=None, include_top=False).count_params()
    info = _info("--backbone", "mobilenetv2", "--output-stride", "16", capsys=capsys)
    bn = 4 * 256
    light_aspp = 2 * (320 * 256 + bn) + 2 * 256 * 256 + bn
    unused = 320 * 1280 + 4 * 1280  # keras' final Conv_1 + BN, not part of DeepLab's MobileNetV2
    assert info["parameters"] == keras_parameters - unused + light_aspp + 256 * 21 + 21
    assert info["feature_size"] == [33, 33]
    # the model zoo's mobilenetv2_coco_voc_trainaug at eval output stride 16, one scale: 2.75B
    assert info["multiply_adds"] == pytest.approx(2.75e9, rel=0.005)
