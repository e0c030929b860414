"""ONNX Runtime and OpenVINO: a DeepLab converted at a fixed input size, run on the CPU, checked like TFLite.

Formats beside TFLite (serving/tflite.py), each with a float32 and an int8 variant:
- `onnx`: the graph Keras 3's own `model.export(format="onnx")` writes (tf2onnx underneath); `int8` is ONNX
  Runtime's static quantisation (QDQ, per-channel int8 weights, uint8 activations calibrated on images from the
  input pipeline), each conv's bias then corrected for the mean shift its quantisation causes (as NNCF's fast bias
  correction does). Run by ONNX Runtime's CPU provider.
- `openvino`: OpenVINO IR (.xml + .bin) converted from the graph of the frozen function the TFLite converter
  reads; `int8` is NNCF's post-training quantisation on calibration images (7-bit weights in every layer, as
  ONNX's). Run by OpenVINO's CPU plugin, whose execution precision is a run-time hint (`OPENVINO_HINTS`: f32,
  bf16, f16): the same file runs in float32 or, where the CPU has it, in bfloat16.

Every model takes (1, S, S, 3) RGB pixels in [0, 255] float32 and returns logits (1, S, S, C), and carries the
`keras_deeplab` metadata entry (JSON, as in a .tflite file). Images of any size are fitted and padded, the
logits of the image's part resized back (`serving.tflite.fixed_size_logits`), so `predict`, `evaluate` and the
checks of `convert` treat every format alike.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_deeplab import constants, quiet
from serving.settings import FORMAT_QUANTIZATIONS
from serving.tflite import (
    METADATA_NAME,
    TFLiteModel,
    convert,
    converted_metadata,
    fit_and_pad,
    fixed_size_logits,
    frozen_function,
)

SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}
OPENVINO_HINTS = ("f32", "bf16", "f16")  # OpenVINO's INFERENCE_PRECISION_HINT on the CPU
# `--precision` (constants.PRECISIONS) for an OpenVINO model: the hint it runs with; None: OpenVINO's own default
# (bf16 where the CPU has native bfloat16, f32 elsewhere), as "auto" means for a Keras model.
PRECISION_HINTS = {"float32": "f32", "mixed": "bf16", "auto": None}
INPUT_NAME = "images"
MISSING = "the ONNX and OpenVINO engines need the `engines` extra: pip install 'keras-deeplab[engines]'"


def _require(module: str) -> Any:
    """`module` imported, or ImportError saying which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{MISSING} ({error})") from error


def _calibration(images: Iterable[np.ndarray] | None, input_size: int, quantization: str) -> list[np.ndarray]:
    """Calibration inputs (1, S, S, 3) float32, fitted like every input; ValueError when int8 has none."""
    if quantization not in FORMAT_QUANTIZATIONS["onnx"]:
        raise ValueError(f"quantization must be one of {FORMAT_QUANTIZATIONS['onnx']}, got {quantization!r}")
    if quantization == "float32":
        return []
    fitted = [fit_and_pad(image, input_size)[0][np.newaxis] for image in images or ()]
    if not fitted:
        raise ValueError("int8 needs calibration images to set the activation ranges, got none")
    return fitted


def convert_onnx(
    model: keras.Model,
    path: str | os.PathLike,
    quantization: str = "float32",
    input_size: int = constants.CROP_SIZE,
    calibration_images: Iterable[np.ndarray] | None = None,
) -> None:
    """Write `model` at (1, input_size, input_size, 3) as an ONNX file; `int8` quantised on `calibration_images`."""
    _require("onnxruntime")
    import onnx

    path = os.fspath(path)
    calibration = _calibration(calibration_images, input_size, quantization)
    spec = tf.TensorSpec([1, input_size, input_size, 3], tf.float32, name=INPUT_NAME)
    float_path = path if quantization == "float32" else f"{path}.float32.tmp"
    try:
        with quiet.filtered_stderr(), warnings.catch_warnings(), _collected_between_onnx_optimizers():
            warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)  # Keras' patch of tf2onnx
            model.export(float_path, format="onnx", input_signature=[spec], verbose=False)
        if quantization == "int8":
            _quantize_onnx(float_path, path, calibration)
    finally:
        if float_path != path and os.path.exists(float_path):
            os.remove(float_path)
    proto = onnx.load(path)
    onnx.helper.set_model_props(proto, {METADATA_NAME: json.dumps(converted_metadata(model, quantization, input_size))})
    onnx.save(proto, path)


@contextlib.contextmanager
def _collected_between_onnx_optimizers() -> Iterator[None]:
    """tf2onnx's graph optimizers with a garbage collection before each.

    tf2onnx deep-copies the whole graph, weights included, before each of its optimizers, and each copy it drops is
    held in reference cycles until a full collection: exporting ResNet-101 DeepLabv3 peaked at 18.1 GiB of memory,
    5.6 GiB with the collections (and 53 s against 81 s; the same graph, the same outputs).
    """
    import gc

    optimizer = _require("tf2onnx.optimizer")

    def collected(factory: Any) -> Any:
        def make() -> Any:
            gc.collect()
            return factory()

        return make

    optimizers = optimizer._optimizers
    optimizer._optimizers = type(optimizers)((name, collected(factory)) for name, factory in optimizers.items())
    try:
        yield
    finally:
        optimizer._optimizers = optimizers


def _quantize_onnx(float_path: str, path: str, calibration: Sequence[np.ndarray]) -> None:
    """ONNX Runtime's static quantisation: QDQ, int8 per-channel weights (7-bit range), uint8 activations (MinMax
    ranges); then `_correct_biases`."""
    from onnxruntime import quantization as ortq

    source = _require("onnxruntime").InferenceSession(float_path, providers=["CPUExecutionProvider"])
    input_name = source.get_inputs()[0].name
    del source

    class Reader(ortq.CalibrationDataReader):
        def __init__(self) -> None:
            self._inputs = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            pixels = next(self._inputs, None)
            return None if pixels is None else {input_name: pixels}

    prepared = f"{path}.prepared.tmp"
    try:
        ortq.shape_inference.quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        ortq.quantize_static(
            prepared,
            path,
            Reader(),
            quant_format=ortq.QuantFormat.QDQ,
            activation_type=ortq.QuantType.QUInt8,
            weight_type=ortq.QuantType.QInt8,
            per_channel=True,
            # 7-bit weights: on CPUs without VNNI (AVX2, AVX-512 without it) ONNX Runtime's uint8 x int8 kernels
            # add pairs of products in int16 (VPMADDUBSW), which saturate with 8-bit weights. Measured on the
            # published MobileNetV2 (benchmarks/engines.py, AVX2): pixel agreement 0.938 with 8 bits, 0.986 with 7.
            reduce_range=True,
            calibrate_method=ortq.CalibrationMethod.MinMax,
        )
        _correct_biases(prepared, path, calibration)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)


def _correct_biases(float_path: str, path: str, calibration: Sequence[np.ndarray]) -> None:
    """Fast bias correction of the QDQ model at `path` (rewritten in place), as NNCF's for OpenVINO: each conv's
    int32 bias moved by the mean shift, per output channel over the calibration images, that the quantisation of
    its own input and weights puts on its output, measured on the float model's (`float_path`) input to that conv.

    Convs without a bias (a fresh model's, whose batch norms shift nothing) are left as they are. Rounding errors
    of weights and inputs do not average out per output channel: with ONNX Runtime's quantiser alone the published
    MobileNetV2 agreed with float32 on 0.9860 of the VOC photos' pixels, with the correction on 0.9957, at the same
    speed: only the biases' values change (docs/engines.md).
    """
    import onnx
    from onnx import numpy_helper

    quantized, source = onnx.load(path), onnx.load(float_path)
    values = {tensor.name: tensor for tensor in quantized.graph.initializer}
    producer = {output: node for node in quantized.graph.node for output in node.output}
    float_convs = {
        node.name: node for node in source.graph.node if node.op_type == "Conv" and len(node.input) == 3 and node.name
    }  # matched by name: ONNX Runtime's quantiser keeps the names of the nodes it quantises
    opset = next(entry.version for entry in source.opset_import if entry.domain in ("", "ai.onnx"))

    def made_by(name: str, op_type: str) -> Any:
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    biases, probes = [], []
    for node in quantized.graph.node:
        if node.op_type != "Conv" or node.name not in float_convs or len(node.input) < 3:
            continue
        inputs, weights, bias = (made_by(name, "DequantizeLinear") for name in node.input[:3])
        quantize = made_by(inputs.input[0], "QuantizeLinear") if inputs is not None else None
        if quantize is None or weights is None or bias is None or bias.input[0] not in values:
            continue
        arrays = {name: numpy_helper.to_array(values[name]) for name in (*quantize.input[1:], *weights.input)}
        kernel = _dequantized(weights, arrays)
        probes.append(_add_shift_probe(source, float_convs[node.name], quantize, arrays, kernel, opset))
        biases.append(bias)
    if not probes:
        return
    onnxruntime = _require("onnxruntime")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(source.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    totals = [0.0] * len(probes)
    for pixels in calibration:
        totals = [total + shift for total, shift in zip(totals, session.run(probes, {input_name: pixels}), strict=True)]
    for bias, total in zip(biases, totals, strict=True):
        stored, scale = values[bias.input[0]], numpy_helper.to_array(values[bias.input[1]])
        steps = np.round(total / len(calibration) / scale).astype(np.int64)
        corrected = np.clip(numpy_helper.to_array(stored).astype(np.int64) + steps, -(2**31), 2**31 - 1)
        stored.CopyFrom(numpy_helper.from_array(corrected.astype(np.int32), stored.name))
    onnx.save(quantized, path)


def _dequantized(weights: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The float kernel a DequantizeLinear node of per-channel (or per-tensor) int8 weights gives."""
    quantized, scale, zero_point = (arrays[name] for name in weights.input)
    axis = next((attribute.i for attribute in weights.attribute if attribute.name == "axis"), 1)
    shape = [1] * quantized.ndim
    shape[axis] = -1
    return (quantized.astype(np.float32) - zero_point.reshape(shape)) * scale.reshape(shape)


def _add_shift_probe(
    source: Any, conv: Any, quantize: Any, arrays: dict[str, np.ndarray], kernel: np.ndarray, opset: int
) -> str:
    """Add to the float model `source` the conv as it runs quantised (its float input quantised and dequantised
    with the calibrated scale, the dequantised `kernel`, the float bias) and an output: the per-channel mean of the
    float conv's output less that one's. Returns the output's name."""
    from onnx import helper, numpy_helper

    prefix = f"bias_correction/{conv.name}/"
    scale, zero_point = (prefix + "scale", prefix + "zero_point")
    initializers = {scale: arrays[quantize.input[1]], zero_point: arrays[quantize.input[2]], prefix + "kernel": kernel}
    axes, mean_over = [], {"axes": [0, 2, 3]}  # ReduceMean's axes: an attribute, from opset 18 an input
    if opset >= 18:
        initializers[prefix + "axes"] = np.array([0, 2, 3], np.int64)
        axes, mean_over = [prefix + "axes"], {}
    source.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in initializers.items())
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in conv.attribute}
    source.graph.node.extend(
        [
            helper.make_node("QuantizeLinear", [conv.input[0], scale, zero_point], [prefix + "q"]),
            helper.make_node("DequantizeLinear", [prefix + "q", scale, zero_point], [prefix + "x"]),
            helper.make_node("Conv", [prefix + "x", prefix + "kernel", conv.input[2]], [prefix + "y"], **attributes),
            helper.make_node("Sub", [conv.output[0], prefix + "y"], [prefix + "error"]),
            helper.make_node("ReduceMean", [prefix + "error", *axes], [prefix + "shift"], keepdims=0, **mean_over),
        ]
    )
    source.graph.output.append(helper.make_empty_tensor_value_info(prefix + "shift"))
    return prefix + "shift"


def convert_openvino(
    model: keras.Model,
    path: str | os.PathLike,
    quantization: str = "float32",
    input_size: int = constants.CROP_SIZE,
    calibration_images: Iterable[np.ndarray] | None = None,
) -> None:
    """Write `model` at (1, input_size, input_size, 3) as OpenVINO IR (`path` .xml and its .bin), weights in
    float32; `int8` quantised by NNCF on `calibration_images`."""
    openvino = _require("openvino")
    path = os.fspath(path)
    calibration = _calibration(calibration_images, input_size, quantization)
    with quiet.filtered_stderr():
        converted = openvino.convert_model(frozen_function(model, input_size).graph.as_graph_def())
    if quantization == "int8":
        nncf = _require("nncf")
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        # 7-bit weights in every layer, not only the first (NNCF's default): the reason of reduce_range in
        # _quantize_onnx, OpenVINO's uint8 x int8 kernels without VNNI saturate alike. Measured on the published
        # MobileNetV2 (AVX2): agreement with float32 0.9867 -> 0.9960 on the VOC photos, 0.9853 -> 0.9901 on the
        # unscored ones; no layer kept in float gained more (docs/engines.md).
        overflow_fix = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
        with quiet.filtered_stderr(), contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bar
            converted = nncf.quantize(
                converted,
                nncf.Dataset(calibration),
                subset_size=len(calibration),
                preset=nncf.QuantizationPreset.MIXED,
                advanced_parameters=overflow_fix,
            )
    converted.set_rt_info(json.dumps(converted_metadata(model, quantization, input_size)), [METADATA_NAME])
    openvino.save_model(converted, path, compress_to_fp16=False)


class EngineModel:
    """A converted model run by ONNX Runtime (.onnx) or OpenVINO (.xml), with TFLiteModel's interface.

    `run(pixels)`: RGB [0, 255] float32 (1, S, S, 3) -> float32 logits (1, S, S, C). `predict_logits(images)`:
    any image size, for `keras_deeplab.inference`. `hint`: OpenVINO's execution precision (OPENVINO_HINTS; None
    for its default). Calls are serialised (one session or compiled model).
    """

    def __init__(self, path: str | os.PathLike, hint: str | None = "f32", num_threads: int | None = None) -> None:
        self.name = path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such model file")
        self.format = "onnx" if path.endswith(".onnx") else "openvino" if path.endswith(".xml") else None
        if self.format is None:
            raise ValueError(f"{path}: expected an ONNX (.onnx) or OpenVINO (.xml) model file")
        if hint is not None and hint not in OPENVINO_HINTS:
            raise ValueError(f"hint must be one of {OPENVINO_HINTS}, got {hint!r}")
        self.hint = hint if self.format == "openvino" else None
        try:
            with quiet.filtered_stderr():  # OpenVINO's other readers (TensorFlow's) log their failures
                shape, out_shape, metadata = (self._open_onnx if self.format == "onnx" else self._open_openvino)(
                    num_threads
                )
        except (ImportError, OSError):
            raise
        except Exception as error:  # each engine raises its own types for an unreadable file
            raise ValueError(f"{path}: not a readable {self.format} model ({_first_line(error)})") from error
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] != shape[2] or len(out_shape) != 4:
            raise ValueError(f"{path}: expected a (1, S, S, 3) image input and 4-D logits, got {shape} -> {out_shape}")
        self.metadata = json.loads(metadata) if metadata else None
        self.input_size, self.num_classes = int(shape[1]), int(out_shape[3])
        self.build_config = (self.metadata or {}).get("build_config")
        self.size_bytes = sum(os.path.getsize(file) for file in self._files)
        self._lock = threading.Lock()

    def _open_onnx(self, num_threads: int | None) -> tuple[list, list, str | None]:
        onnxruntime = _require("onnxruntime")
        self._files = (self.name,)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if num_threads:
            options.intra_op_num_threads = num_threads
        self._session = onnxruntime.InferenceSession(self.name, options, providers=["CPUExecutionProvider"])
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self._input_name = inputs[0].name
        metadata = self._session.get_modelmeta().custom_metadata_map.get(METADATA_NAME)
        return list(inputs[0].shape), list(outputs[0].shape), metadata

    def _open_openvino(self, num_threads: int | None) -> tuple[list, list, str | None]:
        openvino = _require("openvino")
        weights = self.name[: -len(".xml")] + ".bin"
        self._files = (self.name, weights)
        if not os.path.isfile(weights):
            raise ValueError(f"no {os.path.basename(weights)} beside it (OpenVINO IR is an .xml file and its .bin)")
        core = openvino.Core()
        read = core.read_model(self.name, weights)
        if len(read.inputs) != 1 or len(read.outputs) != 1:
            raise ValueError(f"expected one input and one output, got {len(read.inputs)} and {len(read.outputs)}")
        config: dict[str, Any] = {}
        if self.hint is not None:
            config["INFERENCE_PRECISION_HINT"] = self.hint
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        self._compiled = core.compile_model(read, "CPU", config)
        self._request = self._compiled.create_infer_request()
        metadata = read.get_rt_info([METADATA_NAME]).astype(str) if read.has_rt_info([METADATA_NAME]) else None
        return list(read.inputs[0].get_shape()), list(read.outputs[0].get_shape()), metadata

    def run(self, pixels: np.ndarray) -> np.ndarray:
        values = np.ascontiguousarray(pixels, np.float32)
        with self._lock:
            if self.format == "onnx":
                logits = self._session.run(None, {self._input_name: values})[0]
            else:
                logits = self._request.infer([values])[0]
        return np.asarray(logits, np.float32)

    def predict_logits(self, images: tf.Tensor) -> tf.Tensor:
        return fixed_size_logits(self.run, self.input_size)(images)

    @property
    def description(self) -> str:
        engine = "ONNX Runtime" if self.format == "onnx" else f"OpenVINO ({self.hint or 'default'} hint)"
        return f"{engine} model {self.name} ({self.input_size}x{self.input_size})"


def _first_line(error: Exception) -> str:
    """The line of an engine's error message that says what is wrong (OpenVINO's begin with source locations)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.startswith("Exception from ")]
    return (meaningful or lines or [type(error).__name__])[0]


def convert_variant(
    model: keras.Model,
    format: str,
    quantization: str,
    out_dir: str | os.PathLike,
    model_path: str | os.PathLike,
    input_size: int = constants.CROP_SIZE,
    calibration_images: Sequence[np.ndarray] | None = None,
) -> tuple[str, TFLiteModel | EngineModel]:
    """Convert `model` to one variant of `format` (settings.FORMAT_QUANTIZATIONS) as
    `out_dir/<model stem>_<quantization>_<size>` (.tflite, .onnx, .xml); return its path and the model opened."""
    from keras_deeplab.files import write_bytes

    stem = os.path.splitext(os.path.basename(os.fspath(model_path).rstrip("/")))[0]
    path = os.path.join(os.fspath(out_dir), f"{stem}_{quantization}_{input_size}{SUFFIXES[format]}")
    if format == "tflite":
        write_bytes(path, convert(model, quantization, input_size, calibration_images))
        return path, TFLiteModel(path)
    (convert_onnx if format == "onnx" else convert_openvino)(model, path, quantization, input_size, calibration_images)
    return path, EngineModel(path)


def is_engine_file(path: str | os.PathLike) -> bool:
    """True for a path ending in .onnx or .xml (a model `EngineModel` opens)."""
    return os.fspath(path).endswith((SUFFIXES["onnx"], SUFFIXES["openvino"]))
