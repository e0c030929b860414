"""The v3+ backbones through the serving path: SavedModel export and TFLite, like the ResNets."""

import numpy as np
import pytest
import tensorflow as tf
from serving_models import ODD_SIZES, encode, keras_class_map, random_image, varied_tiny_model

from serving.export import export_saved_model
from serving.tflite import TFLiteModel, convert

SEED = 2  # a seed whose tiny untrained models give several classes on ODD_SIZES (seed 0: one for xception65)
TINY_V3PLUS = {
    "xception65": {"decoder": True, "separable": True, "width_multiplier": 0.0625, "aspp_filters": 16},
    "mobilenetv2": {"decoder": True, "separable": True, "width_multiplier": 0.35, "aspp_filters": 16},
}


@pytest.mark.slow(25)
@pytest.mark.parametrize("backbone", sorted(TINY_V3PLUS))
def test_export_gives_keras_class_maps_for_odd_sizes(backbone, tmp_path):
    model = varied_tiny_model(SEED, backbone=backbone, **TINY_V3PLUS[backbone])
    loaded = tf.saved_model.load(export_saved_model(model, tmp_path / "deeplab", version=1))
    images = [random_image(*size, seed=index) for index, size in enumerate(ODD_SIZES)]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant([encode(image) for image in images]))
    for index, image in enumerate(images):
        expected = keras_class_map(model, image)
        assert len(np.unique(expected)) >= 2
        height, width = image.shape[:2]
        np.testing.assert_array_equal(outputs["class_map"][index].numpy()[:height, :width], expected)


@pytest.mark.slow
def test_mobilenetv2_phone_configuration_converts_to_float32_tflite_exactly():
    model = varied_tiny_model(SEED, backbone="mobilenetv2", **TINY_V3PLUS["mobilenetv2"])
    tflite = TFLiteModel(convert(model, "float32", 65))
    pixels = random_image(65, 65, seed=7)[np.newaxis].astype("float32")
    expected = model(pixels, training=False).numpy()
    np.testing.assert_allclose(tflite.run(pixels), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
