"""DeepLab TFLite files (TensorFlow's published float32, float16 and uint8-quantized models).

Such a file has no variables: each CONV_2D / DEPTHWISE_CONV_2D op holds a constant kernel (float32; float16
behind a DEQUANTIZE op; or uint8/int8 with scale and zero point) and a constant bias, the conv's batch norm
folded into both. The official scope is read from the names on the kernel's way into the conv: the constant's
own ("MobilenetV2/Conv/weights", "aspp0/Conv2D_Fold;aspp0/weights_quant/FakeQuantWithMinMaxVars", ...), else the
output of the DEQUANTIZE between them, else the conv's output, whose ';'-joined parts name the ops folded into it
("...;MobilenetV2/expanded_conv_9/depthwise/depthwise;...": today's converter leaves a float16 constant
unnamed); the bias is named `scope/biases`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from keras_deeplab import constants
from keras_deeplab.importing.sources import SourceWeights, WeightImportError
from keras_deeplab.litert import open_interpreter

CONV_OPS = {"CONV_2D": "weights", "DEPTHWISE_CONV_2D": "depthwise_weights"}
_KERNEL_NAME = re.compile(r"^(?P<scope>.+?)/(?:depthwise_)?weights(?:_quant/.*)?$")
# A TF1 conv op under its scope: slim's conv2d ("Conv2D", "convolution" when atrous), separable_conv2d's depthwise
# half ("depthwise"), the quantized graphs' folded convs ("Conv2D_Fold", "depthwise_Fold"), the logits' "BiasAdd".
_CONV_OP_NAME = re.compile(r"^(?P<scope>.+)/(?:Conv2D|convolution|depthwise|Conv2D_Fold|depthwise_Fold|BiasAdd)$")


def kernel_scope(*tensor_names: str) -> str | None:
    """The official scope a kernel belongs to, from the names on its way into the conv (the constant's, a
    DEQUANTIZE's output, the conv's output; each with ';'-joined parts): a weight variable's name in any of them,
    else a conv op's name; None when neither is there."""
    for pattern in (_KERNEL_NAME, _CONV_OP_NAME):
        for name in tensor_names:
            for part in name.split(";"):
                match = pattern.match(part)
                if match:
                    return match.group("scope")
    return None


def dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A constant tensor as float32: integers through their (per-tensor or per-axis) scale and zero point."""
    if np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float32)
    parameters = detail["quantization_parameters"]
    scales, zero_points = parameters["scales"], parameters["zero_points"]
    if len(scales) == 0:
        raise ValueError(f"integer tensor {detail['name']!r} has no quantization parameters")
    shape = [1] * value.ndim
    if len(scales) > 1:
        shape[parameters["quantized_dimension"]] = len(scales)
    scales = np.reshape(scales, shape).astype(np.float64)
    zero_points = np.reshape(zero_points, shape).astype(np.float64)
    return ((value.astype(np.float64) - zero_points) * scales).astype(np.float32)


def read(path: str) -> SourceWeights:
    """Every conv kernel and bias of the file, dequantized, kernels in TensorFlow's layout; the output
    stride from the input size and the logits' size."""
    try:
        interpreter, _, _ = open_interpreter(path)
    except ValueError as error:
        raise WeightImportError(str(error)) from error
    details = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    operations = interpreter._get_ops_details()  # LiteRT's only view of the graph's ops and their tensors
    producers = {int(output): op for op in operations for output in op["outputs"]}

    def constant(index: int) -> tuple[np.ndarray, list[str]]:
        """The constant behind input tensor `index` and the names on its way, the constant's own first."""
        names = [details[index]["name"]]
        producer = producers.get(index)
        if producer is not None and producer["op_name"] == "DEQUANTIZE":  # float16 weights
            index = int(producer["inputs"][0])
            names.insert(0, details[index]["name"])
        elif producer is not None:
            raise WeightImportError(f"{path}: tensor {details[index]['name']!r} is not a constant")
        return dequantize(interpreter.get_tensor(index), details[index]), names

    tensors: dict[str, np.ndarray] = {}
    logits_height = None
    for op in operations:
        suffix = CONV_OPS.get(op["op_name"])
        if suffix is None:
            continue
        kernel, names = constant(int(op["inputs"][1]))
        names.append(details[int(op["outputs"][0])]["name"])
        scope = kernel_scope(*names)
        if scope is None:
            raise WeightImportError(
                f"{path}: conv kernel {names[0]!r} carries no official scope name, nor do the tensors on its way "
                f"({', '.join(repr(name) for name in names[1:])})"
            )
        if f"{scope}/{suffix}" in tensors:
            raise WeightImportError(f"{path}: two convs read the kernel of scope {scope!r}")
        # TFLite kernels are (out, kh, kw, in) and depthwise (1, kh, kw, C): both to (kh, kw, ., .)
        tensors[f"{scope}/{suffix}"] = np.transpose(kernel, (1, 2, 3, 0))
        if len(op["inputs"]) > 2 and int(op["inputs"][2]) >= 0:
            tensors[f"{scope}/biases"] = constant(int(op["inputs"][2]))[0]
        if scope.startswith("logits/"):
            logits_height = int(details[int(op["outputs"][0])]["shape"][1])
    if not tensors:
        raise WeightImportError(f"{path}: the TFLite model holds no convolutions")
    input_shape = interpreter.get_input_details()[0]["shape"]
    input_size = (int(input_shape[1]), int(input_shape[2]))
    strides = [
        stride
        for stride in constants.OUTPUT_STRIDES
        if logits_height and math.ceil(input_size[0] / stride) == logits_height
    ]
    return SourceWeights(
        path=path,
        kind="tflite",
        tensors=tensors,
        output_stride=strides[0] if len(strides) == 1 else None,
        input_size=input_size,
    )
