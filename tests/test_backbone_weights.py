"""ImageNet initialisation from a local keras.applications weight file: exact features, clear mismatches."""

import keras
import numpy as np
import pytest
from weight_files import randomize_batch_norm, write_legacy_h5_weights

from keras_deeplab import WeightFileError, build_model


@pytest.fixture(scope="module")
def resnet101_file(tmp_path_factory):
    """keras.applications' ResNet101 (no top), random weights and BN statistics, in the published file layout."""
    reference = keras.applications.ResNet101(weights=None, include_top=False, input_shape=(None, None, 3))
    randomize_batch_norm(reference)
    path = tmp_path_factory.mktemp("weights") / "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_legacy_h5_weights(reference, path)
    return reference, path


@pytest.mark.slow
def test_resnet101_file_gives_keras_applications_features_at_output_stride_32(resnet101_file):
    reference, path = resnet101_file
    model = build_model(32, backbone="resnet101", multi_grid=None, backbone_weights=str(path))
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 97, 129, 3)).astype("float32")
    expected = reference(keras.applications.resnet.preprocess_input(pixels.copy())).numpy()
    features = model.feature_model()(pixels)["high_level"].numpy()
    assert features.shape == expected.shape == (2, 4, 5, 2048)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_loaded_backbone_runs_at_output_stride_16_with_the_same_weights(resnet101_file):
    reference, path = resnet101_file
    model = build_model(16, backbone="resnet101", decoder=True, backbone_weights=str(path))
    kernel = model.get_layer("conv4_block23_3_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, reference.get_layer("conv4_block23_3_conv").get_weights()[0])
    assert np.isfinite(model(np.zeros((1, 65, 65, 3), "float32")).numpy()).all()


def test_file_of_another_depth_names_the_first_layer_missing(tmp_path):
    resnet50 = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(None, None, 3))
    path = tmp_path / "resnet50.h5"
    write_legacy_h5_weights(resnet50, path)
    # a ResNet-50 file lacks nothing a ResNet-101 has in conv2/conv3, but its layers are narrower than a
    # width-0.5 model's from the first conv on
    with pytest.raises(WeightFileError, match=r"'conv1_conv' has weights of shapes .*expects"):
        build_model(16, backbone="resnet50", width_multiplier=0.5, backbone_weights=str(path))
    with pytest.raises(WeightFileError, match=r"layer 'conv1_conv' of the file has no layer of that name"):
        build_model(16, backbone="resnet50", stem="beta", backbone_weights=str(path))


def test_resnet101_file_into_resnet50_names_the_extra_layer(resnet101_file):
    _, path = resnet101_file
    with pytest.raises(WeightFileError, match=r"'conv4_block7_1_conv' of the file has no layer"):
        build_model(16, backbone="resnet50", backbone_weights=str(path))


def test_files_that_are_not_weight_files_are_named(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(WeightFileError, match=r"notes\.h5: not an HDF5 file"):
        build_model(16, backbone="resnet50", width_multiplier=0.125, backbone_weights=str(text))
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        build_model(16, backbone="resnet50", width_multiplier=0.125, backbone_weights=str(tmp_path / "missing.h5"))
