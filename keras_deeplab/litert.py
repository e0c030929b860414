"""The LiteRT interpreter, opened the one way the project opens it (serving and weight import alike)."""

from __future__ import annotations

import os
from typing import Any

from keras_deeplab import quiet


def open_interpreter(model: str | os.PathLike | bytes, num_threads: int | None = None) -> tuple[Any, str, bytes]:
    """A LiteRT `Interpreter` of a .tflite file or flatbuffer, tensors allocated.

    Returns (interpreter, name, flatbuffer bytes); `name` is the path, or "<tflite bytes>". Raises ValueError
    naming the file when LiteRT cannot read it.
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
            interpreter.allocate_tensors()
    except Exception as error:  # LiteRT raises ValueError/RuntimeError for anything unreadable
        raise ValueError(f"{name}: not a readable TFLite model ({error})") from error
    return interpreter, name, content
