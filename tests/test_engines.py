"""`convert --to onnx / openvino` (float32 and int8) checked against Keras; `predict` and `evaluate` run the files."""

import gc
import json

import keras
import numpy as np
import pytest
from PIL import Image
from serving_models import ODD_SIZES, TINY_RESNET, encode, export_tiny_model, random_image, varied_tiny_model

from keras_deeplab.cli import main
from keras_deeplab.inference import predict_class_map
from keras_deeplab.loading import load_model
from serving.engines import EngineModel
from serving.tflite import fixed_size_logits

pytest.importorskip("onnxruntime", reason="the engines extra is not installed")
pytest.importorskip("openvino", reason="the engines extra is not installed")
tf2onnx = pytest.importorskip("tf2onnx", reason="the engines extra is not installed")

SIZE = 33


@pytest.mark.slow(16)
@pytest.mark.parametrize(("to", "suffix"), [("onnx", ".onnx"), ("openvino", ".xml")])
def test_convert_writes_float32_and_int8_that_predict_and_evaluate_run(tmp_path, tmp_path_factory, capfd, to, suffix):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    out = tmp_path / "out"
    # int8 of an untrained tiny model agrees poorly with it: converted for its noise, not its accuracy.
    convert = ["convert", "--to", to, "--model", keras_path, "--out", str(out), "--input-size", str(SIZE)]
    checks = ["--num-images", "1", "--representative-images", "1", "--min-agreement", "int8=0"]
    assert main([*convert, *checks]) == 0
    printed, noise = capfd.readouterr()
    assert noise == ""  # no converter, tf2onnx, NNCF or engine lines
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines() if line.startswith(("float32", "int8"))}
    assert float(rows["float32"][1]) >= 0.999  # the default threshold held: float32 is exact
    float32, int8 = EngineModel(out / f"tiny_float32_{SIZE}{suffix}"), EngineModel(out / f"tiny_int8_{SIZE}{suffix}")
    assert float32.metadata["quantization"] == "float32" and int8.metadata["quantization"] == "int8"
    assert float32.input_size == SIZE and float32.num_classes == 5 and float32.build_config["output_stride"] == 16
    assert int8.size_bytes < float32.size_bytes / 2
    # 7-bit weights in every layer: 8 bits saturate the uint8 x int8 kernels of CPUs without VNNI
    assert largest_int8_weight(out / f"tiny_int8_{SIZE}{suffix}") == 64

    # predict: the photo fitted and padded, the class map at the photo's size, as Keras gives it fitted alike
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(random_image(*ODD_SIZES[0])))
    model_file = str(out / f"tiny_float32_{SIZE}{suffix}")
    assert main(["predict", str(photo), "--model", model_file, "--out", str(tmp_path / "masks"), "--flip"]) == 0
    mask = np.array(Image.open(tmp_path / "masks" / "photo.png"))
    model = load_model(keras_path)
    keras_logits = fixed_size_logits(lambda pixels: model(pixels, training=False), SIZE)
    expected = predict_class_map(keras_logits, random_image(*ODD_SIZES[0])[np.newaxis], flip=True)[0].numpy()
    assert mask.shape == ODD_SIZES[0] and np.mean(mask == expected) >= 0.999

    capfd.readouterr()
    int8_file = str(out / f"tiny_int8_{SIZE}{suffix}")
    assert main(["evaluate", "--model", int8_file, "--format", "synthetic", "--max-examples", "2", "--json"]) == 0
    result = json.loads(capfd.readouterr().out)
    assert result["examples"] == 2 and result["output_stride"] == 16 and 0 <= result["miou"] <= 1


def largest_int8_weight(path) -> int:
    """The largest magnitude among the int8 tensors (weights, zero points) of an ONNX or OpenVINO file."""
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        tensors = onnx.load(path).graph.initializer
        values = [numpy_helper.to_array(tensor) for tensor in tensors if tensor.data_type == onnx.TensorProto.INT8]
    else:
        import openvino

        operations = openvino.Core().read_model(path).get_ordered_ops()
        values = [
            operation.get_data()
            for operation in operations
            if operation.get_type_name() == "Constant" and operation.get_element_type() == openvino.Type.i8
        ]
    return max(int(np.abs(value.astype(np.int32)).max()) for value in values)


def test_engine_files_and_options_refused_with_one_line(tmp_path, tmp_path_factory, capsys):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(random_image(8, 8)))
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    (tmp_path / "alone.xml").write_text('<?xml version="1.0"?><net/>')
    expected = {
        str(tmp_path / "bad.onnx"): "not a readable onnx model ([ONNXRuntimeError]",
        str(tmp_path / "alone.xml"): "not a readable openvino model (no alone.bin beside it",
        str(tmp_path / "absent.onnx"): "no such model file",
    }
    for path, message in expected.items():
        assert main(["predict", str(photo), "--model", path, "--out", str(tmp_path / "masks")]) == 1
        assert f"{path}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "masks").exists()
    assert main(["convert", "--to", "onnx", "--model", keras_path, "--out", "x", "--quantization", "full_int8"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "keras-deeplab convert: error: --quantization full_int8: not a variant of onnx (its variants: float32 int8)"
    )


def test_onnx_int8_bias_correction_pulls_the_mean_logits_to_float32s(tmp_path, monkeypatch):
    import serving.engines as engines

    # a ResNet's batch norms, made to shift (a trained model's do; a fresh one's fold into convs without a bias)
    model = varied_tiny_model(**TINY_RESNET)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.beta.assign(rng.normal(0, 0.5, layer.beta.shape).astype("float32"))
    float_path = tmp_path / "tiny.onnx"
    collections = []
    gc_collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(1) or gc_collect(*args))
    engines.convert_onnx(model, float_path, input_size=SIZE)
    # tf2onnx's dropped graph copies collected before each of its optimizers (ResNet-101: 18.1 -> 5.6 GiB peak)
    assert len(collections) >= len(tf2onnx.optimizer._get_optimizers())
    monkeypatch.setattr(gc, "collect", gc_collect)
    calibration = [rng.uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32) for _ in range(4)]
    engines._quantize_onnx(str(float_path), str(tmp_path / "corrected.onnx"), calibration)
    monkeypatch.setattr(engines, "_correct_biases", lambda *args: None)
    engines._quantize_onnx(str(float_path), str(tmp_path / "plain.onnx"), calibration)

    def mean_logits(name: str) -> np.ndarray:
        model = EngineModel(tmp_path / name)
        return np.mean([model.run(pixels).mean(axis=(0, 1, 2)) for pixels in calibration], axis=0)

    reference = mean_logits("tiny.onnx")
    plain, corrected = (np.abs(mean_logits(name) - reference).mean() for name in ("plain.onnx", "corrected.onnx"))
    assert corrected < 0.5 * plain  # 0.25 of it when measured (without the correction: 1.0)
