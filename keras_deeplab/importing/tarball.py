"""Model-zoo tarballs (`deeplabv3_*.tar.gz`): the checkpoint inside, else the frozen graph inside."""

from __future__ import annotations

import os
import tarfile
import tempfile

from keras_deeplab.importing import checkpoint, frozen_graph
from keras_deeplab.importing.sources import (
    MAX_EXTRACTED_BYTES,
    MAX_GRAPH_BYTES,
    MAX_TARBALL_MEMBERS,
    SourceWeights,
    WeightImportError,
)

# The members a weight import needs: TF1 checkpoints (the index, its data shards) and frozen graphs.
WEIGHT_FILE_SUFFIXES = (".index", ".pb")
WEIGHT_FILE_PARTS = (".data-",)


def read(path: str) -> SourceWeights:
    """The weights of the TF1 checkpoint a tarball holds (the one with the highest step when several), or of
    its `frozen_inference_graph.pb` when it holds no checkpoint; the atrous rates (the output stride) of that
    graph either way. Only those files are extracted, to a temporary
    folder, after their sizes (from the archive's headers, sparse files at their full size) are checked against
    `MAX_EXTRACTED_BYTES` and, for a graph, `MAX_GRAPH_BYTES`."""
    with tempfile.TemporaryDirectory(prefix="deeplab-tarball-") as folder:
        try:
            with tarfile.open(path) as archive:
                archive.extractall(folder, members=_weight_members(path, archive), filter="data")
        except (tarfile.TarError, OSError, EOFError) as error:
            raise WeightImportError(f"{path}: not a readable tarball ({error})") from error
        indexes, graphs = [], []
        for root, _, files in os.walk(folder):
            indexes += [os.path.join(root, name) for name in files if name.endswith(".index")]
            graphs += [os.path.join(root, name) for name in files if name.endswith(".pb")]
        if indexes:
            source = checkpoint.read(max(indexes, key=_step))
            if graphs:  # the zoo's tarballs hold the graph exported for evaluation beside the checkpoint
                source.atrous_rates = frozen_graph.read(sorted(graphs)[0]).atrous_rates
        elif graphs:
            source = frozen_graph.read(sorted(graphs)[0])
        else:
            raise WeightImportError(f"{path}: the tarball holds no TF checkpoint (.index) and no frozen graph (.pb)")
    inner = os.path.relpath(source.path, folder)
    return SourceWeights(
        path=path,
        kind=f"tarball ({source.kind} {inner})",
        tensors=source.tensors,
        atrous_rates=source.atrous_rates,
        notes=[f"read {inner}"],
    )


def _weight_members(path: str, archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The regular files of `archive` a weight import reads, their sizes checked first (from the headers)."""
    members, total = [], 0
    for count, member in enumerate(archive, start=1):  # headers only: the data of skipped members is not kept
        if count > MAX_TARBALL_MEMBERS:
            raise WeightImportError(f"{path}: more than {MAX_TARBALL_MEMBERS} entries; not a model-zoo tarball")
        name = os.path.basename(member.name)
        if not member.isfile() or not (
            name.endswith(WEIGHT_FILE_SUFFIXES) or any(p in name for p in WEIGHT_FILE_PARTS)
        ):
            continue
        if name.endswith(".pb") and member.size > MAX_GRAPH_BYTES:
            raise WeightImportError(
                f"{path}: {member.name} is {member.size} bytes, over a GraphDef's limit of {MAX_GRAPH_BYTES}"
            )
        total += member.size
        if total > MAX_EXTRACTED_BYTES:
            raise WeightImportError(
                f"{path}: its checkpoint and graph files add up to more than {MAX_EXTRACTED_BYTES} bytes "
                f"({member.name}: {member.size}); not extracted"
            )
        members.append(member)
    return members


def _step(index_path: str) -> int:
    stem = os.path.basename(index_path)[: -len(".index")]
    digits = stem.rsplit("-", 1)[-1]
    return int(digits) if digits.isdigit() else -1
