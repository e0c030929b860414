"""The choice of weight reader by file kind: `read_source(path)`."""

from __future__ import annotations

import os

from keras_deeplab.importing import checkpoint, frozen_graph, tarball, tflite
from keras_deeplab.importing.sources import SourceWeights, WeightImportError

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def source_kind(path: str) -> str:
    """ "tarball", "tflite", "frozen_graph" or "checkpoint" by the name of `path`; WeightImportError otherwise."""
    lowered = path.lower()
    if lowered.endswith(TARBALL_SUFFIXES):
        return "tarball"
    if lowered.endswith(".tflite"):
        return "tflite"
    if lowered.endswith(".pb"):
        return "frozen_graph"
    if lowered.endswith(".index") or os.path.isfile(f"{path}.index"):
        return "checkpoint"
    raise WeightImportError(
        f"{path}: not a DeepLab weight source (expected a TF1 checkpoint prefix or .index, a .tar.gz model-zoo "
        "tarball, a frozen graph .pb or a .tflite file)"
    )


def read_source(path: str | os.PathLike) -> SourceWeights:
    """The weights of a published DeepLab file, by its kind (see `source_kind`)."""
    path = os.fspath(path)
    if not os.path.exists(path) and not os.path.isfile(f"{path}.index"):  # before its kind, told by its name
        raise WeightImportError(f"{path}: no such file (nor a TF1 checkpoint {path}.index)")
    kind = source_kind(path)
    if kind != "checkpoint" and not os.path.isfile(path):
        raise WeightImportError(f"{path}: not a file")
    if kind == "tarball":
        return tarball.read(path)
    if kind == "tflite":
        return tflite.read(path)
    if kind == "frozen_graph":
        return frozen_graph.read(path)
    return checkpoint.read(path)
