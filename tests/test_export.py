"""SavedModel export: class maps at each image's size from encoded batches, size on disk, CLI options."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from serving_models import ODD_SIZES, encode, export_tiny_model, keras_class_map, random_image

from keras_deeplab import constants
from keras_deeplab.cli import main
from keras_deeplab.loading import load_model
from serving.export import export_saved_model, folder_bytes
from serving.settings import DEFAULT_MAX_PIXELS, model_versions


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras_path, base_path = export_tiny_model(tmp_path_factory)
    return load_model(keras_path), tf.saved_model.load(os.path.join(base_path, "1")), base_path


def test_serving_default_gives_keras_argmax_for_two_odd_sizes(exported):
    model, loaded, _ = exported
    images = [random_image(*size, seed=index) for index, size in enumerate(ODD_SIZES)]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant([encode(image) for image in images]))
    assert outputs["class_map"].shape == (2, 51, 47)
    for index, image in enumerate(images):
        height, width = int(outputs["height"][index]), int(outputs["width"][index])
        assert (height, width) == image.shape[:2]
        expected = keras_class_map(model, image)
        assert len(np.unique(expected)) >= 2  # the comparison can fail
        class_map = outputs["class_map"][index].numpy()
        np.testing.assert_array_equal(class_map[:height, :width], expected)
        assert np.all(class_map[height:] == constants.IGNORE_LABEL)
        assert np.all(class_map[:, width:] == constants.IGNORE_LABEL)
        png = np.array(Image.open(io.BytesIO(outputs["class_map_png_bytes"][index].numpy())))
        np.testing.assert_array_equal(png, expected)


def test_same_size_batch_and_jpeg_match_keras(exported):
    model, loaded, _ = exported
    images = [random_image(41, 35, seed=3), random_image(41, 35, seed=4)]
    jpegs = [encode(image, "JPEG") for image in images]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(jpegs))
    for index, jpeg in enumerate(jpegs):
        decoded = tf.io.decode_image(jpeg, channels=3).numpy()
        np.testing.assert_array_equal(outputs["class_map"][index].numpy(), keras_class_map(model, decoded))


def test_images_signature_takes_float_pixels(exported):
    model, loaded, _ = exported
    images = np.stack([random_image(37, 45, seed=5), random_image(37, 45, seed=6)]).astype("float32")
    outputs = loaded.signatures["serving_images"](images=tf.constant(images))
    np.testing.assert_array_equal(outputs["height"].numpy(), [37, 37])
    np.testing.assert_array_equal(outputs["width"].numpy(), [45, 45])
    for index in range(2):
        np.testing.assert_array_equal(outputs["class_map"][index].numpy(), keras_class_map(model, images[index]))
    np.testing.assert_allclose(loaded.logits(images).numpy(), model(images).numpy(), atol=1e-4)


def test_saved_model_stores_each_variable_once(exported):
    model, _, base_path = exported
    version = os.path.join(base_path, "1")
    parameters = model.count_params()
    variables = folder_bytes(os.path.join(version, "variables"))
    assert 4.0 <= variables / parameters <= 4.5, variables / parameters  # float32, once; model.export() gives ~8
    assert not any("all_variables" in name for name in os.listdir(version))
    graph = os.path.getsize(os.path.join(version, "saved_model.pb"))
    assert folder_bytes(version) <= variables + graph + 1024


def test_bad_images_are_refused(exported):
    _, loaded, _ = exported
    jpeg = encode(random_image(40, 40), "JPEG")
    for bad in (jpeg[: len(jpeg) // 2], b"not an image", b""):
        with pytest.raises(tf.errors.InvalidArgumentError):
            loaded.signatures["serving_default"](image_bytes=tf.constant([bad]))


def test_versions_are_numbered_folders_and_never_overwritten(tmp_path, exported):
    model, _, _ = exported
    for name in ("1", "3", "10", ".tmp-4-x", "latest"):
        (tmp_path / name).mkdir()
    assert model_versions(tmp_path) == [1, 3, 10]
    assert model_versions(tmp_path / "absent") == []
    with pytest.raises(FileExistsError, match="version 3 already exists"):
        export_saved_model(model, tmp_path, 3)
    assert DEFAULT_MAX_PIXELS >= 2048 * 2048


@pytest.mark.slow(10)
def test_export_command_with_scores_output_stride_and_pixel_limit(tmp_path, tmp_path_factory, capsys):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    base = tmp_path / "deeplab"
    argv = ["export", "--model", keras_path, "--out", str(base), "--version", "7", "--scores"]
    assert main([*argv, "--output-stride", "8", "--max-pixels", str(51 * 47)]) == 0
    assert "bytes per parameter" in capsys.readouterr().out
    loaded = tf.saved_model.load(str(base / "7"))
    model = load_model(keras_path).with_output_stride(8)
    images = [random_image(*size, seed=index) for index, size in enumerate(ODD_SIZES)]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant([encode(image) for image in images]))
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        probabilities = tf.nn.softmax(model(image[np.newaxis].astype("float32"))).numpy()[0]
        np.testing.assert_allclose(outputs["scores"][index, :height, :width].numpy(), probabilities, atol=1e-5)
        assert np.all(outputs["scores"][index, height:].numpy() == 0)
        np.testing.assert_array_equal(outputs["class_map"][index, :height, :width].numpy(), probabilities.argmax(-1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more pixels"):
        loaded.signatures["serving_default"](image_bytes=tf.constant([encode(random_image(52, 47))]))
    assert main(["export", "--model", keras_path, "--out", str(base), "--version", "7"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "missing.keras"), "--out", str(base)]) == 1
    assert "no such model file" in capsys.readouterr().err
