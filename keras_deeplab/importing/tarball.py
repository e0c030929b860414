"""Model-zoo tarballs (`deeplabv3_*.tar.gz`): the checkpoint inside, else the frozen graph inside."""

from __future__ import annotations

import os
import tarfile
import tempfile

from keras_deeplab.importing import checkpoint, frozen_graph
from keras_deeplab.importing.sources import SourceWeights, WeightImportError


def read(path: str) -> SourceWeights:
    """The weights of the TF1 checkpoint a tarball holds (the one with the highest step when several), or of
    its `frozen_inference_graph.pb` when it holds no checkpoint. Extracted to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="deeplab-tarball-") as folder:
        try:
            with tarfile.open(path) as archive:
                archive.extractall(folder, filter="data")
        except (tarfile.TarError, OSError) as error:
            raise WeightImportError(f"{path}: not a readable tarball ({error})") from error
        indexes, graphs = [], []
        for root, _, files in os.walk(folder):
            indexes += [os.path.join(root, name) for name in files if name.endswith(".index")]
            graphs += [os.path.join(root, name) for name in files if name.endswith(".pb")]
        if indexes:
            source = checkpoint.read(max(indexes, key=_step))
        elif graphs:
            source = frozen_graph.read(sorted(graphs)[0])
        else:
            raise WeightImportError(f"{path}: the tarball holds no TF checkpoint (.index) and no frozen graph (.pb)")
    inner = os.path.relpath(source.path, folder)
    return SourceWeights(
        path=path, kind=f"tarball ({source.kind} {inner})", tensors=source.tensors, notes=[f"read {inner}"]
    )


def _step(index_path: str) -> int:
    stem = os.path.basename(index_path)[: -len(".index")]
    digits = stem.rsplit("-", 1)[-1]
    return int(digits) if digits.isdigit() else -1
