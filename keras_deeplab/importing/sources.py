"""What every weight reader returns, the error they raise, and the choice of reader by file kind."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

# Last name component of the variables a TF1 slim DeepLab holds (optimizer slots, global_step and the like
# end otherwise and are not weights).
VARIABLE_SUFFIXES = ("weights", "depthwise_weights", "biases", "gamma", "beta", "moving_mean", "moving_variance")
TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class WeightImportError(ValueError):
    """A weight source that cannot become a DeepLab: unreadable, or with tensors that do not fit the model.
    The message names the file and the tensor or layer at fault."""


@dataclass
class SourceWeights:
    """Weights read from one published file.

    `tensors`: official TF1 variable name -> float32 array in TensorFlow's layout (conv kernels
    (kh, kw, in, out), depthwise kernels (kh, kw, C, 1)). A source whose batch norm was folded into its
    convolutions (TFLite) names each conv's bias `scope/biases`, like a conv that had one.
    `output_stride` and `input_size` (H, W): what the file itself says, when it says it.
    """

    path: str
    kind: str
    tensors: dict[str, np.ndarray]
    output_stride: int | None = None
    input_size: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)


def is_variable_name(name: str) -> bool:
    """Whether `name` looks like a weight variable of a TF1 slim model (not an optimizer slot or a constant)."""
    return name.rsplit("/", 1)[-1] in VARIABLE_SUFFIXES


def source_kind(path: str) -> str:
    """ "tarball", "tflite", "frozen_graph" or "checkpoint" by the name of `path`; WeightImportError otherwise."""
    lowered = path.lower()
    if lowered.endswith(TARBALL_SUFFIXES):
        return "tarball"
    if lowered.endswith(".tflite"):
        return "tflite"
    if lowered.endswith(".pb"):
        return "frozen_graph"
    if lowered.endswith(".index") or os.path.exists(f"{path}.index"):
        return "checkpoint"
    raise WeightImportError(
        f"{path}: not a DeepLab weight source (expected a TF1 checkpoint prefix or .index, a .tar.gz model-zoo "
        "tarball, a frozen graph .pb or a .tflite file)"
    )


def read_source(path: str | os.PathLike) -> SourceWeights:
    """The weights of a published DeepLab file, by its kind (see `source_kind`)."""
    path = os.fspath(path)
    kind = source_kind(path)
    if kind != "checkpoint" and not os.path.isfile(path):
        raise WeightImportError(f"{path}: no such file")
    if kind == "tarball":
        from keras_deeplab.importing import tarball

        return tarball.read(path)
    if kind == "tflite":
        from keras_deeplab.importing import tflite

        return tflite.read(path)
    if kind == "frozen_graph":
        from keras_deeplab.importing import frozen_graph

        return frozen_graph.read(path)
    from keras_deeplab.importing import checkpoint

    return checkpoint.read(path)
