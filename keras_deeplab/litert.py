"""The LiteRT interpreter, opened the one way the project opens it (serving and weight import alike)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from keras_deeplab import quiet

# The most bytes a model's tensors may add up to beyond the file's own size (its constants): LiteRT's arena
# holds at most that sum, so a small file that names huge tensors (a 1 KB model of 8192x8192 images asks for
# GBs) is refused from its shapes before allocate_tensors. TensorFlow's published DeepLab at 257x257: 57 MiB.
MAX_TENSOR_BYTES = 4 * 2**30


def open_interpreter(
    model: str | os.PathLike | bytes, num_threads: int | None = None, max_input_pixels: int | None = None
) -> tuple[Any, str, bytes]:
    """A LiteRT `Interpreter` of a .tflite file or flatbuffer, tensors allocated.

    Returns (interpreter, name, flatbuffer bytes); `name` is the path, or "<tflite bytes>". Raises ValueError
    naming the file when LiteRT cannot read it, when its tensors add up to more than `MAX_TENSOR_BYTES`, or when
    an image input (B, H, W, C) has more than `max_input_pixels` pixels (H x W) -- both before any allocation.
    """
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, bytes):
        name, content = "<tflite bytes>", model
    else:
        name = os.fspath(model)
        with open(name, "rb") as file:
            content = file.read()
    try:
        with quiet.filtered_stderr():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
            interpreter = Interpreter(model_content=content, num_threads=num_threads)
        details = interpreter.get_tensor_details()
    except Exception as error:  # LiteRT raises ValueError/RuntimeError for anything unreadable
        raise ValueError(f"{name}: not a readable TFLite model ({error})") from error
    for detail in interpreter.get_input_details() if max_input_pixels is not None else ():
        shape = [int(size) for size in detail["shape"]]
        if len(shape) == 4 and shape[1] * shape[2] > max_input_pixels:
            raise ValueError(
                f"{name}: its input takes {shape[1]}x{shape[2]} images, over the pixel limit of {max_input_pixels}"
            )
    needed = sum(
        int(np.prod(detail["shape"], dtype=np.int64)) * np.dtype(detail["dtype"]).itemsize for detail in details
    )
    if needed - len(content) > MAX_TENSOR_BYTES:
        raise ValueError(
            f"{name}: its tensors need {needed / 2**30:.1f} GiB, over the limit of {MAX_TENSOR_BYTES / 2**30:g} GiB"
        )
    try:
        with quiet.filtered_stderr():
            interpreter.allocate_tensors()
    except Exception as error:
        raise ValueError(f"{name}: not a readable TFLite model ({error})") from error
    return interpreter, name, content
