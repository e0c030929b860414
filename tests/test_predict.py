"""`keras-deeplab predict` over .keras, SavedModel and .tflite (ours and TensorFlow's published layout)."""

import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from serving_models import ODD_SIZES, encode, export_tiny_model, keras_class_map, random_image

from keras_deeplab.cli import main
from keras_deeplab.crf import dense_crf
from keras_deeplab.descriptors import VOC, VOC_COLORMAP, make_descriptor
from keras_deeplab.inference import class_probabilities, predict_class_map
from keras_deeplab.loading import load_model
from keras_deeplab.model import build_model
from keras_deeplab.visualize import class_shares, format_share, legend_strip, with_legend
from serving.predict import load_predictor, predict_files
from serving.settings import DEFAULT_MAX_PIXELS, predict_max_pixels


@pytest.fixture
def photos(tmp_path):
    paths = []
    for index, size in enumerate(ODD_SIZES):
        path = tmp_path / f"photo{index}.png"
        path.write_bytes(encode(random_image(*size, seed=index)))
        paths.append(str(path))
    return paths


def _mask(path):
    return np.array(Image.open(path))


def test_keras_model_writes_palette_png_and_overlay(tmp_path, tmp_path_factory, photos, capsys):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    out = tmp_path / "out"
    assert main(["predict", *photos, "--model", keras_path, "--out", str(out)]) == 0
    model = load_model(keras_path)
    for index, size in enumerate(ODD_SIZES):
        mask = Image.open(out / f"photo{index}.png")
        assert mask.mode == "P" and mask.size == size[::-1]
        assert mask.getpalette()[: 3 * 21] == [value for color in VOC_COLORMAP[:21] for value in color]
        image = random_image(*size, seed=index)
        np.testing.assert_array_equal(np.array(mask), keras_class_map(model, image))
        overlay = Image.open(out / f"photo{index}_overlay.jpg")
        assert overlay.format == "JPEG" and overlay.width == size[1] and overlay.height > size[0]  # + legend
    assert "photo1_overlay.jpg" in capsys.readouterr().out


def test_scales_and_flip_average_probabilities(tmp_path, tmp_path_factory, photos):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    model = load_model(keras_path)
    predictor = load_predictor(keras_path)
    [(mask_path, _)] = list(predict_files(photos[:1], predictor, tmp_path / "out", scales=(0.5, 1.25), flip=True))
    image = random_image(*ODD_SIZES[0], seed=0)[np.newaxis]
    expected = predict_class_map(lambda x: model(x, training=False), image, (0.5, 1.25), True)[0].numpy()
    np.testing.assert_array_equal(_mask(mask_path), expected)
    assert not np.array_equal(expected, keras_class_map(model, image[0]))  # the options changed the answer


def test_saved_model_folder_gives_the_keras_answer(tmp_path, tmp_path_factory, photos):
    keras_path, base_path = export_tiny_model(tmp_path_factory)
    for model in (keras_path, base_path):  # the export base path: its highest version
        assert main(["predict", *photos, "--model", model, "--out", str(tmp_path / model[-5:])]) == 0
    for index in range(2):
        np.testing.assert_array_equal(
            _mask(tmp_path / keras_path[-5:] / f"photo{index}.png"),
            _mask(tmp_path / base_path[-5:] / f"photo{index}.png"),
        )


def _published_style_tflite(path):
    """A stand-in for TensorFlow's published DeepLab TFLite (no download here): (1, 257, 257, 3) float32 in
    [-1, 1] -> (1, 257, 257, 21) logits, no metadata. Class c wins where the red channel is nearest -1 + c/10."""
    centers = tf.constant(np.linspace(-1, 1, 21), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 257, 257, 3], tf.float32)])
    def logits(pixels):
        return -100.0 * tf.square(pixels[..., :1] - centers)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([logits.get_concrete_function()], tf.Module())
    path.write_bytes(converter.convert())
    return str(path)


def test_published_style_tflite_takes_inputs_in_minus_one_to_one(tmp_path):
    model = _published_style_tflite(tmp_path / "deeplabv3_257_mv_gpu.tflite")
    image = np.zeros((90, 150, 3), np.uint8)
    image[:, 75:, 0] = 255  # left half red 0 -> -1 -> class 0; right half red 255 -> +1 -> class 20
    image[:, :, 1] = 128
    photo = tmp_path / "half.png"
    photo.write_bytes(encode(image))
    assert main(["predict", str(photo), "--model", model, "--out", str(tmp_path / "out"), "--flip"]) == 0
    mask = _mask(tmp_path / "out" / "half.png")
    assert mask.shape == (90, 150)
    assert np.all(mask[:, :70] == 0) and np.all(mask[:, 80:] == 20)
    # read as [0, 255] (--input-range 0,255), red 0 stays 0: class 10 on the left
    predictor = load_predictor(model, input_range=(0, 255))
    [(mask_path, _)] = list(predict_files([str(photo)], predictor, tmp_path / "as255"))
    assert np.all(_mask(mask_path)[:, :70] == 10) and np.all(_mask(mask_path)[:, 80:] == 20)


def test_tflite_refuses_scales_and_bad_inputs_are_named(tmp_path, tmp_path_factory, photos, capsys):
    model = _published_style_tflite(tmp_path / "m.tflite")
    assert main(["predict", photos[0], "--model", model, "--out", str(tmp_path / "o"), "--scales", "0.5,1"]) == 1
    assert "--scales" in capsys.readouterr().err
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(encode(random_image(30, 30), "JPEG")[:100])
    keras_path, _ = export_tiny_model(tmp_path_factory)
    assert main(["predict", str(broken), "--model", keras_path, "--out", str(tmp_path / "o")]) == 1
    assert "broken.jpg: not a readable" in capsys.readouterr().err
    not_model = tmp_path / "weights.h5"
    not_model.write_bytes(b"x")
    assert main(["predict", photos[0], "--model", str(not_model), "--out", str(tmp_path / "o")]) == 1
    assert (
        "expected a .keras file, a training run folder, a .tflite, .onnx or OpenVINO .xml file or a SavedModel folder"
        in capsys.readouterr().err
    )
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer")
    assert main(["predict", photos[0], "--model", str(garbage), "--out", str(tmp_path / "o")]) == 1
    assert "not a readable TFLite model" in capsys.readouterr().err


def test_crf_refines_the_probabilities_before_the_argmax(tmp_path, tmp_path_factory, photos):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    model = load_model(keras_path)
    argv = ["predict", photos[0], "--model", keras_path, "--out", str(tmp_path / "crf")]
    assert main([*argv, "--crf", "--crf-param", "iterations=2"]) == 0
    image = random_image(*ODD_SIZES[0], seed=0)
    probabilities = class_probabilities(model, tf.constant(image[None], tf.float32))[0].numpy()
    expected = dense_crf(image, probabilities, iterations=2).argmax(-1)
    np.testing.assert_array_equal(_mask(tmp_path / "crf" / "photo0.png"), expected)


def test_legend_names_each_class_present_with_its_colour_and_share():
    mask = np.zeros((40, 400), np.uint8)
    mask[:, :100] = 15  # person
    mask[:10, 100:104] = 255  # ignored: not counted
    mask[0, 399] = 3  # a trace of bird
    counted = 40 * 400 - 40
    assert class_shares(mask) == [(0, (counted - 4001) / counted), (15, 4000 / counted), (3, 1 / counted)]
    assert [format_share(share) for _, share in class_shares(mask)] == ["74.9%", "25.1%", "<0.1%"]
    strip = legend_strip(mask, 400)
    assert strip.dtype == np.uint8 and strip.shape[1:] == (400, 3) and 10 < strip.shape[0] < 60  # one row
    colours = set(map(tuple, strip.reshape(-1, 3).tolist()))
    assert {VOC.palette[15], VOC.palette[3]} <= colours and VOC.palette[1] not in colours
    assert legend_strip(mask, 60).shape[0] > 2 * strip.shape[0]  # a narrow picture: one entry per row
    picture = np.full((40, 400, 3), 7, np.uint8)
    np.testing.assert_array_equal(with_legend(picture, mask)[:40], picture)
    with pytest.raises(ValueError, match=r"class ids must be in 0\.\.20, got 30\.\.30"):
        class_shares(np.array([[30]]))


def test_predict_overlays_carry_the_legend_unless_no_legend(tmp_path, tmp_path_factory, photos, capsys):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    assert main(["predict", photos[0], "--model", keras_path, "--out", str(tmp_path / "legend")]) == 0
    assert main(["predict", photos[0], "--model", keras_path, "--out", str(tmp_path / "bare"), "--no-legend"]) == 0
    height, width = ODD_SIZES[0]
    bare = np.array(Image.open(tmp_path / "bare" / "photo0_overlay.jpg"), np.int64)
    legend = np.array(Image.open(tmp_path / "legend" / "photo0_overlay.jpg"), np.int64)
    assert bare.shape == (height, width, 3)
    assert legend.shape[0] > height and legend.shape[1:] == (width, 3)
    assert np.abs(legend[:height] - bare).mean() < 4  # the same overlay above the strip, up to JPEG
    assert legend[height + 2 :].mean() > 150  # a white strip with dark text and swatches
    capsys.readouterr()
    assert main(["predict", photos[0], "--model", keras_path, "--out", str(tmp_path / "voc"), "--dataset", "voc"]) == 1
    assert "the model has 5 classes, dataset voc has 21" in capsys.readouterr().err
    assert not (tmp_path / "voc" / "photo0.png").exists()
    labelme = tmp_path / "labelme"  # a dataset's own class list names the legend's classes (labelme's export)
    labelme.mkdir()
    (labelme / "class_names.txt").write_text("_background_\nkelp\nseal\nrock\nbuoy")
    own = ["--out", str(tmp_path / "own"), "--dataset", str(labelme)]
    assert main(["predict", photos[0], "--model", keras_path, *own]) == 0
    named = np.array(Image.open(tmp_path / "own" / "photo0_overlay.jpg"), np.int64)
    assert named.shape == legend.shape and np.abs(named[height:] - legend[height:]).mean() > 1  # other names
    palette = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250)]
    five = make_descriptor("five", ["sky", "sea", "sand", "sun", "boat"], palette=palette)
    predictor = load_predictor(keras_path)
    [(mask_path, _)] = predict_files(photos[:1], predictor, tmp_path / "five", dataset=five)
    assert Image.open(mask_path).getpalette()[:15] == [value for color in palette for value in color]


def test_the_default_pixel_limit_keeps_a_many_class_model_within_a_24_gb_machine(tmp_path, capsys):
    """Issue 24 row 8: the class probabilities of a 150-class model take 1.86 KB per pixel (measured), about 30 GB
    at 4096x4096; the default limit follows the model's classes, and a refusal names the option."""
    assert predict_max_pixels(21) == predict_max_pixels(64) == DEFAULT_MAX_PIXELS
    assert predict_max_pixels(150) == 12 * 2**30 // (12 * 150) == 7_158_278  # 2675 x 2675
    model = build_model(backbone="mobilenetv2", width_multiplier=0.35, aspp_filters=8, num_classes=150)
    model.save(tmp_path / "ade.keras")
    assert load_predictor(tmp_path / "ade.keras").num_classes == 150
    png = encode(random_image(8, 8))
    big = tmp_path / "big.png"  # the header of a 3000x3000 image (9 M pixels, under 4096x4096), no pixel data
    big.write_bytes(png[:16] + struct.pack(">II", 3000, 3000) + png[24:33])
    argv = ["predict", str(big), "--model", str(tmp_path / "ade.keras"), "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.endswith(
        "image of 3000x3000 = 9000000 pixels is over the limit of 7158278 "
        "(predict --max-pixels, the default for 150 classes)"
    )
    assert len(error.splitlines()) == 1


def test_tflite_whose_output_is_a_class_map_predicts(tmp_path):
    """As Coral's deeplabv3_mnv2_dm05_pascal_quant.tflite: the argmax taken in the graph, (1, S, S) class ids out.
    Class c wins where the red channel is nearest -1 + c/10 (pixels in [-1, 1])."""
    centers = tf.constant(np.linspace(-1, 1, 21), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 33, 33, 3], tf.float32)])
    def class_map(pixels):
        return tf.cast(tf.argmax(-100.0 * tf.square(pixels[..., :1] - centers), axis=-1), tf.uint8)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([class_map.get_concrete_function()], tf.Module())
    model = tmp_path / "class_map.tflite"
    model.write_bytes(converter.convert())
    image = np.zeros((40, 66, 3), np.uint8)
    image[:, 33:, 0] = 255  # left half red 0 -> class 0; right half red 255 -> class 20
    photo = tmp_path / "half.png"
    photo.write_bytes(encode(image))
    predictor = load_predictor(str(model))
    assert predictor.num_classes == 21  # the channels its ARG_MAX reads
    assert main(["predict", str(photo), "--model", str(model), "--out", str(tmp_path / "out")]) == 0
    mask = _mask(tmp_path / "out" / "half.png")
    assert mask.shape == (40, 66) and np.all(mask[:, :30] == 0) and np.all(mask[:, 36:] == 20)
