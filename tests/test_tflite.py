"""TFLite: the four variants of a trained small model agree with Keras; fitting, metadata, the CLI's check."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from serving_models import TINY_RESNET, export_tiny_model, random_image

from keras_deeplab import build_model, constants
from keras_deeplab.cli import main
from pipelines import synthetic_source
from serving.tflite import (
    TFLiteModel,
    compare_with_keras,
    convert,
    fit_and_pad,
    read_metadata,
)

SIZE = 64
# The trained model's backbone: TINY_RESNET, whose full int8 file agrees with it at 0.97 after these steps (VGG-16
# ones trained alike agree at 0.74, or 0.93 with the v3+ decoder: their class margins are too thin for 8-bit logits).


def _trained_small_model(train):
    """The tiny DeepLab after 160 steps on synthetic 64x64 images: confident enough for agreement to mean
    something (batch-norm momentum 0.9 so that its statistics settle in so few steps).

    Grappler is off while it trains: optimizing the training graph takes about 40 s on 2 busy cores, and
    the steps run faster without it on this CPU. The option is restored before anything else runs.
    """
    keras.utils.set_random_seed(0)
    model = build_model(16, num_classes=len(train.class_names), batch_norm_momentum=0.9, **TINY_RESNET)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=constants.IGNORE_LABEL)
    model.compile(keras.optimizers.Adam(1e-2), loss, jit_compile=False)
    # Its slots made here, eagerly: fit would create them inside its first trace, which makes tf.function trace the
    # step twice (the first epoch: 48 s -> 23 s; the same zeros either way).
    model.optimizer.build(model.trainable_variables)
    images, masks = zip(*[(image, mask) for image, mask, _ in train.examples()], strict=True)
    saved = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        model.fit(np.stack(images).astype("float32"), np.stack(masks), batch_size=8, epochs=20, verbose=0)
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": saved})
    return model


@pytest.mark.slow(40)
def test_variants_of_a_trained_model_agree_with_keras():
    train = synthetic_source("train", 64, image_size=SIZE)
    model = _trained_small_model(train)
    representative = [image for image, _, _ in list(train.examples())[:16]]
    variants = {name: TFLiteModel(convert(model, name, SIZE, representative)) for name in ("float32", "full_int8")}
    report = compare_with_keras(model, variants, synthetic_source("val", 8, image_size=SIZE).examples())
    assert report["float32"]["agreement"] >= 0.999, report
    assert report["full_int8"]["agreement"] >= 0.95, report
    assert abs(report["float32"]["miou"] - report["keras"]["miou"]) < 1e-3
    assert report["full_int8"]["size_mb"] < report["float32"]["size_mb"] / 2.5
    # full int8: uint8 pixels in, int8 logits out, and the RGB->BGR flip keeps its input's scale
    full = variants["full_int8"]
    assert full._input["dtype"] == np.uint8 and full._output["dtype"] == np.int8
    tensors = full.interpreter.get_tensor_details()
    for operator in full.interpreter._get_ops_details():
        if operator["op_name"] == "REVERSE_V2":
            source, target = tensors[operator["inputs"][0]], tensors[operator["outputs"][0]]
            assert source["quantization"] == target["quantization"]


def test_fit_and_pad_keeps_the_aspect_and_pads_with_the_mean_pixel():
    image = random_image(30, 60)
    padded, (height, width) = fit_and_pad(image, 90)
    assert padded.shape == (90, 90, 3) and (height, width) == (45, 90)
    np.testing.assert_array_equal(padded[45:], np.broadcast_to(constants.MEAN_PIXEL_RGB, (45, 90, 3)))
    same, size = fit_and_pad(image[:, :30], 30)
    assert size == (30, 30)
    np.testing.assert_array_equal(same, image[:, :30])


def test_convert_command_writes_variants_with_metadata_and_fails_below_its_threshold(tmp_path, tmp_path_factory, capfd):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    common = ["convert-tflite", "--model", keras_path, "--out", str(tmp_path), "--input-size", "33", "--split", "val"]
    # full_int8 of an untrained tiny model agrees poorly with it: converted for its noise, not its accuracy.
    variants = ["--quantization", "float32", "dynamic_int8", "full_int8", "--representative-images", "1"]
    variants += ["--min-agreement", "full_int8=0"]
    assert main([*common, *variants, "--num-images", "2"]) == 0
    printed, noise = capfd.readouterr()
    assert "float32" in printed and "full_int8" in printed and "agreement" in printed and "FAILED" not in printed
    # Nothing but its own table: no converter line ("fully_quantize: ..."), no UserWarning, no LiteRT line.
    assert noise == ""
    path = tmp_path / "tiny_float32_33.tflite"
    metadata = read_metadata(path.read_bytes())
    assert metadata["input_range"] == [0.0, 255.0] and metadata["input_size"] == 33
    assert metadata["quantization"] == "float32" and metadata["num_classes"] == 5
    tflite = TFLiteModel(str(path))
    assert tflite.input_range == (0.0, 255.0) and tflite.input_size == 33
    assert (tmp_path / "tiny_dynamic_int8_33.tflite").stat().st_size < path.stat().st_size / 2.5
    strict = ["--quantization", "float32", "--num-images", "1", "--min-agreement", "float32=1.01"]
    assert main([*common, *strict]) == 1
    assert "FAILED float32: pixel agreement 1.00000 is below 1.01" in capfd.readouterr().out
    assert main([*common, "--format", "voc", "--root", str(tmp_path / "absent")]) == 1
    assert "error:" in capfd.readouterr().err
