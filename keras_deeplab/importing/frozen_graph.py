"""Frozen inference graphs (`frozen_inference_graph.pb`): the constants that were the weight variables, and the
atrous rate each convolution runs at (its `dilations`, or the block shape of the SpaceToBatchND before it, as
TF1 wrote atrous convolutions), from which `mapping` reads the output stride the graph was exported at."""

from __future__ import annotations

import os

import numpy as np

from keras_deeplab.importing.sources import MAX_GRAPH_BYTES, SourceWeights, WeightImportError, is_variable_name

# Ops between a weight constant and its conv, or a conv's input and the SpaceToBatchND before it, that do not change
# which tensor it is.
PASS_THROUGH_OPS = ("Identity", "FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel")


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
    return SourceWeights(path=path, kind="frozen_graph", tensors=tensors, atrous_rates=atrous_rates(graph, tensors))


def atrous_rates(graph, tensors: dict[str, np.ndarray]) -> dict[str, int]:
    """{official kernel name: the rate its Conv2D / DepthwiseConv2dNative runs at} for every conv of `graph`
    whose kernel is one of `tensors`: the op's `dilations`, else the block shape of a SpaceToBatchND feeding it."""
    import tensorflow as tf

    nodes = {node.name: node for node in graph.node}

    def source(reference: str):
        """The node behind an input, through Identity nodes (`.../read`) and the fake quantization of the 8-bit
        models (`.../weights_quant/FakeQuantWithMinMaxVars`)."""
        node = nodes.get(reference.lstrip("^").split(":")[0])
        while node is not None and node.op in PASS_THROUGH_OPS and node.input:
            node = nodes.get(node.input[0].lstrip("^").split(":")[0])
        return node

    rates = {}
    for node in graph.node:
        if node.op not in ("Conv2D", "DepthwiseConv2dNative") or len(node.input) < 2:
            continue
        kernel = source(node.input[1])
        if kernel is None or kernel.name not in tensors:
            continue
        dilations = list(node.attr["dilations"].list.i) if "dilations" in node.attr else []
        rate = max(dilations[1:3]) if len(dilations) == 4 else 1
        feeding = source(node.input[0])
        if rate == 1 and feeding is not None and feeding.op == "SpaceToBatchND" and len(feeding.input) > 1:
            block = source(feeding.input[1])
            if block is not None and block.op == "Const":
                rate = int(np.max(tf.make_ndarray(block.attr["value"].tensor)))
        rates[kernel.name] = int(rate)
    return rates
