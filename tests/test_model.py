"""DeepLab model core: shapes, strides, dilation rates, output-stride switch, save/load, mixed precision."""

import math

import keras
import numpy as np
import pytest

from keras_deeplab import build_model, constants

TINY = {"width_multiplier": 0.125, "aspp_filters": 16, "num_classes": 5}
SIZES = ((65, 65), (97, 129))


def _pixels(height, width, batch=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def _rates(model, name):
    return tuple(model.get_layer(name).dilation_rate)


# ResNet-101 differs from ResNet-50 only in block3's length: its strides are in tests/test_backbone_contract.py
CASES = [
    ("resnet50", "keras", decoder, output_stride)
    for decoder in (False, True)
    for output_stride in constants.OUTPUT_STRIDES
] + [("resnet50", "beta", True, output_stride) for output_stride in constants.OUTPUT_STRIDES]


@pytest.mark.parametrize(("backbone", "stem", "decoder", "output_stride"), CASES)
def test_logits_at_input_size_and_features_at_output_stride(backbone, stem, decoder, output_stride):
    model = build_model(output_stride, backbone=backbone, stem=stem, decoder=decoder, **TINY)
    features = model.feature_model()
    for height, width in SIZES:
        out = features(_pixels(height, width))
        assert tuple(out["logits"].shape) == (1, height, width, 5)
        assert out["logits"].dtype == "float32"
        assert np.isfinite(out["logits"]).all()
        high = tuple(out["high_level"].shape[1:3])
        assert high == (math.ceil(height / output_stride), math.ceil(width / output_stride))
        assert tuple(out["low_level"].shape[1:3]) == (math.ceil(height / 4), math.ceil(width / 4))
        assert out["high_level"].shape[-1] == round(2048 * 0.125)


@pytest.mark.parametrize(
    ("output_stride", "aspp", "conv4", "conv5"),
    [(32, (3, 6, 9), 1, (1, 2, 4)), (16, (6, 12, 18), 1, (2, 4, 8)), (8, (12, 24, 36), 2, (4, 8, 16))],
)
def test_dilation_rates_follow_output_stride(output_stride, aspp, conv4, conv5):
    model = build_model(output_stride, backbone="resnet50", **TINY)
    assert tuple(_rates(model, f"aspp_atrous{i}_conv")[0] for i in (1, 2, 3)) == aspp
    assert _rates(model, "conv4_block1_2_conv") == (conv4, conv4)
    assert tuple(_rates(model, f"conv5_block{u}_2_conv")[0] for u in (1, 2, 3)) == conv5
    # the stride sits in the first 1x1 conv of a stage until the output stride is reached
    assert model.get_layer("conv4_block1_1_conv").strides == ((2, 2) if output_stride >= 16 else (1, 1))
    assert model.get_layer("conv5_block1_1_conv").strides == ((2, 2) if output_stride == 32 else (1, 1))


def test_cascade_blocks_double_their_rates_and_keep_the_stride():
    model = build_model(16, backbone="resnet50", extra_blocks=3, multi_grid=(1, 2, 1), **TINY)
    for stage, rate in (("conv5", 2), ("conv6", 4), ("conv7", 8), ("conv8", 16)):
        assert tuple(_rates(model, f"{stage}_block{u}_2_conv")[0] for u in (1, 2, 3)) == (rate, 2 * rate, rate)
    out = model.feature_model()(_pixels(65, 65))
    assert tuple(out["high_level"].shape[1:3]) == (5, 5)
    with pytest.raises(ValueError, match="extra_blocks"):
        build_model(16, backbone="resnet50", extra_blocks=4, **TINY)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_returns_float32_logits(policy):
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(16, backbone="resnet50", decoder=True, **TINY)
    assert model.get_layer("conv2_block1_2_conv").compute_dtype == policy.removeprefix("mixed_")
    logits = model(_pixels(33, 33))
    assert logits.dtype == "float32"
    assert np.isfinite(logits.numpy()).all()


def test_sync_batch_norm_and_momentum_reach_every_batch_norm_layer():
    model = build_model(16, backbone="resnet50", sync_batch_norm=True, batch_norm_momentum=0.9, **TINY)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.synchronized and layer.momentum == 0.9 for layer in norms)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output_stride": 4}, "output_stride"),
        ({"backbone": "resnet18"}, "backbone"),
        ({"stem": "gamma"}, "stem"),
        ({"multi_grid": (1, 2)}, "multi_grid"),
    ],
)
def test_bad_configuration_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        build_model(**{"backbone": "resnet50", **TINY, **options})


def _bottleneck_parameters(in_channels, width, conv_shortcut):
    convs = in_channels * width + width + 9 * width * width + width + width * 4 * width + 4 * width
    norms = 4 * (width + width + 4 * width)
    shortcut = (in_channels * 4 * width + 4 * width + 4 * 4 * width) if conv_shortcut else 0
    return convs + norms + shortcut


def _resnet_parameters(stage_blocks):
    total = 3 * 49 * 64 + 64 + 4 * 64  # 7x7 stem conv (with bias) + BN
    in_channels = 64
    for width, blocks in zip(constants.RESNET_STAGE_FILTERS, stage_blocks, strict=True):
        for unit in range(blocks):
            total += _bottleneck_parameters(in_channels, width, conv_shortcut=unit == 0)
            in_channels = 4 * width
    return total


def _head_parameters(num_classes, decoder):
    bn = 4 * 256
    aspp = (2048 * 256 + bn) * 2 + 3 * (9 * 2048 * 256 + bn) + (5 * 256 * 256 + bn)
    decoder_params = (256 * 48 + 4 * 48) + (9 * 304 * 256 + bn) + (9 * 256 * 256 + bn) if decoder else 0
    return aspp + decoder_params + 256 * num_classes + num_classes


@pytest.mark.parametrize(
    ("backbone", "keras_applications_parameters"), [("resnet50", 23_587_712), ("resnet101", 42_658_176)]
)
@pytest.mark.parametrize("decoder", [False, True])
def test_full_size_parameter_counts(backbone, keras_applications_parameters, decoder):
    stage_blocks = constants.RESNET_STAGE_BLOCKS[backbone]
    assert _resnet_parameters(stage_blocks) == keras_applications_parameters  # the formula is right
    model = build_model(16, backbone=backbone, decoder=decoder, input_shape=(513, 513, 3))
    assert model.count_params() == keras_applications_parameters + _head_parameters(21, decoder)
    assert tuple(model.features["high_level"].shape[1:]) == (33, 33, 2048)
    assert tuple(model.output.shape[1:]) == (513, 513, 21)
