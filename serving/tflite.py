"""TFLite: convert a DeepLab model at a fixed input size, run it with LiteRT, and check it against Keras.

Variants: `float32`; `float16` (weights stored in float16); `dynamic_int8` (weights int8, activations float);
`full_int8` (weights and activations int8, calibrated on representative images from the input pipeline;
uint8 pixels in, int8 logits out). Every converted model takes (1, S, S, 3) RGB pixels and returns logits
(1, S, S, C), and carries a `keras_deeplab` metadata entry (JSON) saying its input range ([0, 255]).

A TFLite model has one input size, so any image is fitted to it: resized (bilinear, aspect kept) so that its
longer side is S, padded on the bottom and right with the mean pixel; the logits of the image's part are
then resized back to the image's size (`fixed_size_logits`). The same holds for the Keras model when the two
are compared, so the comparison measures the conversion alone. TensorFlow's published DeepLab TFLite models
(e.g. MobileNetV2 DeepLabv3 at 257x257, 21 VOC logits) carry no such metadata and take pixels in [-1, 1].
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from keras_deeplab import constants, quiet
from keras_deeplab.inference import PredictLogits, predict_class_map
from keras_deeplab.litert import open_interpreter
from keras_deeplab.metrics import MeanIoU
from pipelines.formats import open_source
from serving.settings import DEFAULT_MAX_PIXELS, QUANTIZATIONS

METADATA_NAME = "keras_deeplab"
MODEL_INPUT_RANGE = (0.0, 255.0)  # this project's models normalise pixels themselves
PUBLISHED_INPUT_RANGE = (-1.0, 1.0)  # TensorFlow's published DeepLab TFLite models: pixel / 127.5 - 1


def fit_and_pad(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB (H, W, 3) -> float32 (size, size, 3): resized so the longer side is `size`, padded with the mean pixel.

    Returns the padded image and the (height, width) of the image's part at its top left.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    fitted = (max(1, min(size, round(height * scale))), max(1, min(size, round(width * scale))))
    pixels = tf.convert_to_tensor(image, tf.float32)
    if fitted != (height, width):
        pixels = tf.image.resize(pixels, fitted, method="bilinear")
    padding = [[0, size - fitted[0]], [0, size - fitted[1]], [0, 0]]
    channels = [
        tf.pad(pixels[..., channel], padding[:2], constant_values=mean)
        for channel, mean in enumerate(constants.MEAN_PIXEL_RGB)
    ]
    return tf.stack(channels, axis=-1).numpy(), fitted


def fixed_size_logits(run_fixed: Callable[[np.ndarray], np.ndarray], size: int) -> PredictLogits:
    """A `predict_logits` for `keras_deeplab.inference` from a model that only takes (1, size, size, 3).

    Each image of the batch is fitted and padded (`fit_and_pad`); the returned logits (B, h, w, C) cover the
    image's part only, at the model's output resolution (the caller resizes them to the image's size).
    """

    def predict_logits(images: tf.Tensor) -> tf.Tensor:
        results = []
        for image in np.asarray(images):
            padded, (height, width) = fit_and_pad(image, size)
            logits = np.asarray(run_fixed(padded[np.newaxis]), dtype=np.float32)[0]
            out_height, out_width = logits.shape[:2]
            cut_height = max(1, round(height * out_height / size))
            cut_width = max(1, round(width * out_width / size))
            results.append(logits[:cut_height, :cut_width])
        return tf.convert_to_tensor(np.stack(results))

    return predict_logits


def frozen_function(model: keras.Model, input_size: int) -> Any:
    """The model's forward pass at (1, input_size, input_size, 3) float32 -> float32 logits, as a concrete
    function with its variables frozen to constants: what the TFLite and OpenVINO converters read."""
    spec = tf.TensorSpec([1, input_size, input_size, 3], tf.float32, name="images")
    function = tf.function(lambda images: tf.cast(model(images, training=False), tf.float32), input_signature=[spec])
    return convert_variables_to_constants_v2(function.get_concrete_function())


def convert(
    model: keras.Model,
    quantization: str,
    input_size: int = constants.CROP_SIZE,
    representative_images: Iterable[np.ndarray] | None = None,
) -> bytes:
    """A .tflite flatbuffer of `model` at (1, input_size, input_size, 3) float32 [0, 255] -> (1, S, S, C) logits.

    `full_int8` needs `representative_images` (RGB arrays of any size, fitted like every input).
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization == "full_int8" and representative_images is None:
        raise ValueError("full_int8 needs representative images to calibrate the activation ranges")
    # Variables frozen to constants first: converting the model's function with the model as its trackable
    # object keeps them as resource variables (a 0.2 MB file that reads nothing), and without any trackable
    # object TF 2.21 warns of a deprecated path.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_function(model, input_size)], tf.Module())
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "full_int8":
        images = list(representative_images)
        if not images:
            raise ValueError("full_int8 needs at least one representative image, got none")

        def representative_dataset() -> Iterator[list[np.ndarray]]:
            for image in images:
                yield [fit_and_pad(image, input_size)[0][np.newaxis]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    metadata = converted_metadata(model, quantization, input_size)
    with warnings.catch_warnings(), quiet.filtered_stderr():  # the converter's "fully_quantize: ..." line
        # Said of every full_int8 conversion with uint8 inputs: the calibration gives the input's scale.
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected", UserWarning)
        flatbuffer = converter.convert()
    return finish_flatbuffer(flatbuffer, json.dumps(metadata).encode("utf-8"))


def converted_metadata(model: keras.Model, quantization: str, input_size: int) -> dict[str, Any]:
    """The `keras_deeplab` metadata every converted file carries (.tflite, .onnx, OpenVINO .xml): how to feed it
    and what it computes."""
    return {
        "input_range": list(MODEL_INPUT_RANGE),
        "input_size": input_size,
        "num_classes": int(model.output.shape[-1]),
        "quantization": quantization,
        "build_config": getattr(model, "build_config", None),
    }


def finish_flatbuffer(flatbuffer: bytes, metadata: bytes) -> bytes:
    """The converter's flatbuffer with `metadata` as the `keras_deeplab` entry and one quantizer fix.

    The fix: TF 2.21's quantizer can give a REVERSE_V2 (the model's RGB -> BGR flip) an output scale other
    than its input's, but the int8 kernel copies bytes without rescaling, so every pixel after it was read
    with the wrong scale (full int8 pixel agreement 0.67 instead of 0.98 on a small trained model). A pure
    reordering keeps its input's quantization; setting the output's to it makes the kernel exact.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            if codes[operator.opcodeIndex] == schema.BuiltinOperator.REVERSE_V2:
                source = subgraph.tensors[operator.inputs[0]].quantization
                target = subgraph.tensors[operator.outputs[0]].quantization
                if source is not None and target is not None and source.scale is not None:
                    target.scale, target.zeroPoint = source.scale, source.zeroPoint
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(flatbuffer: bytes, name: str = METADATA_NAME) -> dict[str, Any] | None:
    """The JSON metadata entry `name` of a .tflite flatbuffer, or None when it has none."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name().decode("utf-8") == name:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


class TFLiteModel:
    """A .tflite segmentation model run by the LiteRT interpreter.

    `run(pixels)`: RGB [0, 255] float32 (1, S, S, 3) -> float32 logits (1, h, w, C), with the input mapped to
    the model's input range and (de)quantized as its tensors require. A model whose output is a class map
    (1, h, w), the argmax taken in the graph as Coral's published DeepLab does, gives its class map one-hot
    (`class_map` True; `num_classes` the channels of its ARG_MAX). `predict_logits(images)`: any image
    size, for `keras_deeplab.inference` (see `fixed_size_logits`). Calls are serialised (one interpreter).
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        input_range: Sequence[float] | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.interpreter, self.name, content = open_interpreter(model, num_threads, max_input_pixels=DEFAULT_MAX_PIXELS)
        try:
            self.metadata = read_metadata(content)
        except Exception as error:  # a flatbuffer LiteRT runs but whose metadata does not parse
            raise ValueError(f"{self.name}: not a readable TFLite model ({error})") from error
        self.size_bytes = len(content)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.name}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(self._input["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] != shape[2]:
            raise ValueError(f"{self.name}: expected a square (1, S, S, 3) image input, got {shape}")
        output_shape = tuple(int(size) for size in self._output["shape"])
        self.input_size = int(shape[1])
        if len(output_shape) == 4:
            self.num_classes, self.class_map = output_shape[3], False
        elif len(output_shape) == 3 and np.issubdtype(np.dtype(self._output["dtype"]), np.integer):
            self.num_classes, self.class_map = self._argmax_classes(), True
        else:
            raise ValueError(
                f"{self.name}: expected (1, h, w, classes) logits or a (1, h, w) class map, got {output_shape}"
            )
        if input_range is None:
            input_range = self.metadata["input_range"] if self.metadata else PUBLISHED_INPUT_RANGE
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self._lock = threading.Lock()

    def _argmax_classes(self) -> int:
        """The number of classes of a model whose output is a class map: the channels its ARG_MAX reads (the
        Coral models' `deeplabv3_mnv2_dm05_pascal_quant.tflite` takes the argmax of 21 logits in the graph)."""
        details = {detail["index"]: detail for detail in self.interpreter.get_tensor_details()}
        producers = {int(out): op for op in self.interpreter._get_ops_details() for out in op["outputs"]}
        op = producers.get(int(self._output["index"]))
        while op is not None and op["op_name"] in ("CAST", "RESHAPE", "SQUEEZE", "QUANTIZE", "DEQUANTIZE"):
            op = producers.get(int(op["inputs"][0]))
        if op is None or op["op_name"] != "ARG_MAX":
            raise ValueError(
                f"{self.name}: its (1, h, w) output is no ARG_MAX of logits; expected logits or a class map"
            )
        return int(details[int(op["inputs"][0])]["shape"][-1])

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Logits (1, h, w, C) float32; a model whose output is a class map gives its one-hot encoding."""
        low, high = self.input_range
        values = low + np.asarray(pixels, np.float32) * ((high - low) / 255.0)
        with self._lock:
            self.interpreter.set_tensor(self._input["index"], _quantize(values, self._input))
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(self._output["index"])
        if self.class_map:
            return np.eye(self.num_classes, dtype=np.float32)[np.clip(raw, 0, self.num_classes - 1)]
        return _dequantize(raw, self._output)

    def predict_logits(self, images: tf.Tensor) -> tf.Tensor:
        return fixed_size_logits(self.run, self.input_size)(images)


def _quantize(values: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), limits.min, limits.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def compare_with_keras(
    model: keras.Model,
    variants: Mapping[str, TFLiteModel],
    examples: Iterable[tuple[np.ndarray, np.ndarray, str]],
) -> dict[str, dict[str, float]]:
    """Pixel agreement with the Keras model and mIoU against the labels, of TFLite variants of one input size.

    `examples`: (image uint8 (H, W, 3), mask uint8 (H, W) class ids or 255, name). Every model, Keras too,
    sees the image fitted to the input size; class maps are compared at the image's size over all its pixels.
    Returns {"keras": {"miou"}, variant: {"agreement", "miou", "size_mb"}}.
    """
    sizes = {variant.input_size for variant in variants.values()}
    if len(sizes) != 1:
        raise ValueError(f"variants must share one input size, got {sorted(sizes)}")
    keras_logits = fixed_size_logits(lambda pixels: model(pixels, training=False), sizes.pop())
    num_classes = int(model.output.shape[-1])
    keras_metric = MeanIoU(num_classes)
    metrics = {name: MeanIoU(num_classes) for name in variants}
    agreeing = dict.fromkeys(variants, 0)
    pixels = 0
    for image, mask, _ in examples:
        reference = predict_class_map(keras_logits, image[np.newaxis])
        keras_metric.update_state(mask[np.newaxis], reference)
        pixels += mask.size
        for name, variant in variants.items():
            class_map = predict_class_map(variant.predict_logits, image[np.newaxis])
            agreeing[name] += int(np.sum(class_map.numpy() == reference.numpy()))
            metrics[name].update_state(mask[np.newaxis], class_map)
    if not pixels:
        raise ValueError("no examples to compare on")
    report = {"keras": {"miou": float(keras_metric.result())}}
    for name, variant in variants.items():
        report[name] = {
            "agreement": agreeing[name] / pixels,
            "miou": float(metrics[name].result()),
            "size_mb": variant.size_bytes / 1e6,
        }
    return report


def dataset_examples(format: str, root: str | None, split: str, count: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The first `count` (image, mask, name) examples of a split, read with `pipelines.open_source`."""
    options = {"num_examples": count} if format == "synthetic" else {}
    examples = list(itertools.islice(open_source(format, root, split, **options).examples(), count))
    if not examples:
        raise ValueError(f"{format} split {split!r} at {root}: no examples")
    return examples
