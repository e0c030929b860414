"""Frozen inference graphs (`frozen_inference_graph.pb`): the constants that were the weight variables."""

from __future__ import annotations

import os

import numpy as np

from keras_deeplab.importing.sources import MAX_GRAPH_BYTES, SourceWeights, WeightImportError, is_variable_name


def read(path: str) -> SourceWeights:
    """Every float constant of the GraphDef whose name is a weight variable's (`scope/weights`,
    `scope/BatchNorm/gamma`, ...), as freezing leaves them; other constants (sizes, preprocessing) are not
    weights and are left out."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise WeightImportError(f"{path}: cannot read it ({error.strerror or error})") from error
    if size > MAX_GRAPH_BYTES:
        raise WeightImportError(
            f"{path}: {size} bytes, over a GraphDef's limit of {MAX_GRAPH_BYTES} (protobuf's 2 GiB)"
        )
    try:
        with open(path, "rb") as file:
            graph.ParseFromString(file.read())
    except Exception as error:  # protobuf's DecodeError, or anything else that is not a GraphDef
        raise WeightImportError(f"{path}: not a readable GraphDef ({error})") from error
    tensors = {}
    for node in graph.node:
        if node.op == "Const" and is_variable_name(node.name):
            value = tf.make_ndarray(node.attr["value"].tensor)
            if np.issubdtype(value.dtype, np.floating):
                tensors[node.name] = value.astype(np.float32)
    if not tensors:
        raise WeightImportError(f"{path}: the graph holds no weight constants (is it a frozen DeepLab graph?)")
    return SourceWeights(path=path, kind="frozen_graph", tensors=tensors)
