"""The contract every backbone keeps, checked for each one in the registry and for tests/example_backbone.py.

Strides and feature_info agree with the features it builds; the model runs at every output stride with the
same weights; a saved model loads back through Keras with its options; every weighted layer falls in one of
its layer groups; its options pass through `build_model` and are checked. A new backbone passes this file
once it is registered (example_backbone.py shows it takes that file and one REGISTRY line).
"""

import math

import keras
import numpy as np
import pytest

from keras_deeplab import build_model
from keras_deeplab.backbones import REGISTRY, all_specs, backbone_spec
from keras_deeplab.complexity import HEAD_PARTS, multiply_adds_by_part
from keras_deeplab.layers import NormSettings

# Small enough to build in about a second: (width multiplier, input size)
TINY = {
    "resnet50": 0.125,
    "resnet101": 0.125,
    "xception65": 1 / 16,
    "mobilenetv2": 0.35,
    "vgg16": 0.125,
    "example": 1.0,
}
SIZE = (65, 97)
BACKBONES = [*REGISTRY, "example"]
# Each backbone's own layers at width 1, from an independent source: keras.applications' no-top networks
# (MobileNetV2 less its final Conv_1 and Conv_1_bn: 409,600 + 5,120, which DeepLab leaves out), and for the
# example the sum of its convs and batch norms by hand. Xception-65 has no keras.applications counterpart.
REFERENCE_PARAMETERS = {
    "resnet50": 23_587_712,
    "resnet101": 42_658_176,
    "mobilenetv2": 2_257_984 - 409_600 - 5_120,
    "vgg16": 14_714_688,
    "example": sum(
        9 * c_in * c_out + 4 * c_out for c_in, c_out in zip((3, 8, 16, 24, 32), (8, 16, 24, 32, 48), strict=True)
    ),
}


@pytest.fixture(scope="module", autouse=True)
def example_registered():
    """The one line a new backbone adds to the registry, for the example (removed again after this module)."""
    REGISTRY["example"] = "example_backbone"
    yield
    del REGISTRY["example"]


@pytest.fixture(scope="module")
def tiny_models():
    """(backbone, output stride) -> a tiny DeepLabv3+ at SIZE, built once per module."""
    cache = {}

    def get(backbone, output_stride=16):
        if (backbone, output_stride) not in cache:
            cache[backbone, output_stride] = _tiny_model(backbone, output_stride)
        return cache[backbone, output_stride]

    return get


def _tiny_model(backbone, output_stride=16, **options):
    return build_model(
        output_stride,
        backbone=backbone,
        decoder=True,
        width_multiplier=TINY[backbone],
        aspp_filters=8,
        num_classes=3,
        input_shape=(*SIZE, 3),
        **options,
    )


def _pixels(batch=1):
    return np.random.default_rng(0).uniform(0, 255, (batch, *SIZE, 3)).astype("float32")


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_features_have_the_strides_and_channels_their_feature_info_says(backbone, output_stride):
    spec = backbone_spec(backbone)
    inputs = keras.Input((*SIZE, 3))
    features = spec.build(
        inputs, output_stride=output_stride, norm=NormSettings(), width_multiplier=TINY[backbone], **spec.options
    )
    info = {entry.name: entry for entry in features.feature_info()}
    assert info["low_level"].reduction == 4 and info["high_level"].reduction == output_stride
    for name, tensor in features.tensors().items():
        expected = (math.ceil(SIZE[0] / info[name].reduction), math.ceil(SIZE[1] / info[name].reduction))
        assert tuple(tensor.shape[1:]) == (*expected, info[name].channels), name


@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_same_weights_run_at_another_output_stride(backbone, tiny_models):
    model = tiny_models(backbone)
    x = _pixels()
    at16 = model(x).numpy()
    rebuilt = model.with_output_stride(8)
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]
    assert rebuilt.build_config == {**model.build_config, "output_stride": 8}
    at8 = rebuilt(x).numpy()
    assert at8.shape == at16.shape == (1, *SIZE, 3)
    assert np.isfinite(at8).all()
    # the dilated graph really is another one
    assert tuple(rebuilt.features["high_level"].shape[1:3]) == (math.ceil(SIZE[0] / 8), math.ceil(SIZE[1] / 8))
    assert np.abs(at8 - at16).max() > 0


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_saved_model_loads_through_keras_with_its_options(backbone, tiny_models, tmp_path):
    model = tiny_models(backbone)
    spec = backbone_spec(backbone)
    other_options = {option for other in all_specs() for option in other.options} - set(spec.options)
    assert set(spec.options) <= set(model.build_config)
    assert not other_options & set(model.build_config)  # only its own options are saved
    x = _pixels(batch=2)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded).__name__ == "DeepLab"
    assert loaded.build_config == model.build_config
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_weighted_layer_is_in_a_layer_group_or_a_head_part(backbone, tiny_models):
    model = tiny_models(backbone)
    spec = backbone_spec(backbone)
    by_part = multiply_adds_by_part(model, {**spec.layer_groups, **HEAD_PARTS})
    assert by_part["other"] == 0
    assert by_part["backbone"] > 0 and by_part["aspp"] > 0 and by_part["decoder"] > 0


@pytest.mark.parametrize("backbone", BACKBONES)
def test_options_pass_through_build_model_and_are_checked(backbone, tiny_models):
    spec = backbone_spec(backbone)
    default = tiny_models(backbone).build_config
    assert _tiny_model(backbone, **spec.options).build_config == default
    with pytest.raises(TypeError, match="no_such_option"):
        build_model(backbone=backbone, width_multiplier=TINY[backbone], no_such_option=1)
    foreign = next(other for other in all_specs() if other.options and not set(other.options) & set(spec.options))
    option = next(iter(foreign.options))
    with pytest.raises(ValueError, match=f"{option} applies to the backbones .*{foreign.name}.* not to '{backbone}'"):
        build_model(backbone=backbone, width_multiplier=TINY[backbone], **{option: ["not", "the", "default"]})


def test_the_example_backbone_option_reaches_its_builder():
    model = build_model(backbone="example", units=2, num_classes=3, aspp_filters=8, input_shape=(*SIZE, 3))
    assert model.build_config["units"] == 2
    assert "stage5_unit2_conv" in {layer.name for layer in model.layers}
    with pytest.raises(ValueError, match=r"units must be in 1\.\.4"):
        build_model(backbone="example", units=5)


@pytest.mark.parametrize("backbone", sorted(REFERENCE_PARAMETERS))
def test_backbone_parameters_at_width_1_match_the_reference(backbone):
    spec = backbone_spec(backbone)
    inputs = keras.Input((None, None, 3))
    features = spec.build(inputs, output_stride=16, norm=NormSettings(), width_multiplier=1.0, **spec.options)
    assert keras.Model(inputs, features.tensors()).count_params() == REFERENCE_PARAMETERS[backbone]
