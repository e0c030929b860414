"""Test helper: a DeepLab as Google's tools wrote it, computed by real ops under the official names.

`official_graph_def` traces a model of ours, freezes it and renames its nodes: every weight constant to its
official variable name (`MobilenetV2/expanded_conv_9/depthwise/depthwise_weights`) and every op of a layer under
that layer's official scope (`MobilenetV2/expanded_conv_9/depthwise/...`), so the graph is what the official code
computes (atrous convs as the dilations or SpaceToBatchND blocks TensorFlow emits for them) and what its frozen
graphs and TFLite conversions name. `exported_graph_def` wraps it as research/deeplab's export_model.py does
(uint8 `ImageTensor`, the photo's longer side to the crop size with corner-aligned bilinear resizing, mean-pixel
padding, argmax, crop, nearest-neighbour resize back, `SemanticPredictions`).
"""

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from keras_deeplab.importing.mapping import official_weight_table

MEAN_PIXEL = 127.5


def _use_official_epsilons(model):
    """Give the model's batch norms the official epsilons, so the traced graph normalises as the official one does
    with the statistics the importer reads (it shifts the variances by the difference of the epsilons)."""
    _, epsilons = official_weight_table(model.build_config)
    built = {layer.name: layer for layer in model.layers}  # the table covers variants this model does not build
    for name, epsilon in epsilons.items():
        if name in built:
            built[name].epsilon = epsilon


def _freeze(model, function, input_signature):
    """The frozen GraphDef of `function` with every node renamed to the official names (see the module)."""
    table, _ = official_weight_table(model.build_config)
    official = {entry: name for name, entry in table.items()}
    concrete = tf.function(function, input_signature=input_signature).get_concrete_function()
    handles = {id(variable.value.handle): variable for variable in model.weights}
    by_placeholder = {}
    for external, internal in concrete.graph.captures:
        variable = handles.get(id(external))
        if variable is not None:
            layer = variable.path.split("/")[-2]
            by_placeholder[internal.op.name] = official[(layer, variable.name)]
    graph = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    renames, prefixes = {}, {}
    for node in graph.node:
        name = by_placeholder.get(node.name)
        if name is not None:
            renames[node.name] = name
            scope = name.rsplit("/", 1)[0]  # the conv's scope, or a batch norm's `scope/BatchNorm`
            prefixes["/".join(node.name.split("/")[:2]) + "/"] = scope + "/"  # model/layer/...
    for node in graph.node:
        if node.name not in renames:
            for prefix, scope in prefixes.items():
                if node.name.startswith(prefix):
                    renames[node.name] = scope + node.name[len(prefix) :]
                    break

    def renamed(reference):
        control = reference.startswith("^")
        name, _, port = reference.lstrip("^").partition(":")
        name = renames.get(name, name)
        return ("^" if control else "") + name + (f":{port}" if port else "")

    for node in graph.node:
        node.name = renames.get(node.name, node.name)
        node.input[:] = [renamed(reference) for reference in node.input]
    return graph


def official_graph_def(model, size=None):
    """(GraphDef, input name, output name): float32 pixels in [0, 255] (1, size, size, 3), or any size, to logits."""
    _use_official_epsilons(model)
    shape = [1, size, size, 3] if size else [1, None, None, 3]
    spec = tf.TensorSpec(shape, tf.float32, name="images")
    graph = _freeze(model, lambda images: tf.identity(model(images, training=False), name="logits_out"), [spec])
    return graph, "images:0", "logits_out:0"


def exported_graph_def(model, crop_size):
    """GraphDef of research/deeplab's export: `ImageTensor:0` (1, H, W, 3) uint8 -> `SemanticPredictions:0`."""
    _use_official_epsilons(model)

    def export(image):
        image_size = tf.shape(image)[1:3]
        sides = tf.cast(image_size, tf.float32)
        resized_size = tf.cast(tf.math.ceil(sides * (crop_size / tf.reduce_max(sides))), tf.int32)
        resized = tf.raw_ops.ResizeBilinear(images=tf.cast(image, tf.float32), size=resized_size, align_corners=True)
        padding = [[0, 0], [0, crop_size - resized_size[0]], [0, crop_size - resized_size[1]], [0, 0]]
        padded = tf.pad(resized - MEAN_PIXEL, padding) + MEAN_PIXEL
        logits = model(tf.ensure_shape(padded, [1, crop_size, crop_size, 3]), training=False)
        logits = tf.raw_ops.ResizeBilinear(images=logits, size=[crop_size, crop_size], align_corners=True)
        predictions = tf.argmax(logits, 3)[:, : resized_size[0], : resized_size[1]]
        label = tf.raw_ops.ResizeNearestNeighbor(images=predictions[..., None], size=image_size, align_corners=True)
        return tf.identity(label[..., 0], name="SemanticPredictions")

    spec = tf.TensorSpec([1, None, None, 3], tf.uint8, name="ImageTensor")
    return _freeze(model, export, [spec])


def graph_function(graph, input_name, output_name):
    """A function running `graph` from `input_name` to `output_name`, as a TF1 session would."""
    function = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph, name=""), [])
    return function.prune(function.graph.get_tensor_by_name(input_name), function.graph.get_tensor_by_name(output_name))


def run_graph_def(graph, inputs, input_name, output_name):
    """The value of `output_name` for `inputs` fed to `input_name`."""
    return graph_function(graph, input_name, output_name)(tf.convert_to_tensor(inputs)).numpy()


def write(graph, path):
    with open(path, "wb") as file:
        file.write(graph.SerializeToString())
    return str(path)


def float16_tflite(graph, input_name, output_name):
    """The float16 TFLite flatbuffer that today's converter makes of a frozen GraphDef."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [graph_function(graph, input_name, output_name)], tf.Module()
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def random_statistics(model, seed=0):
    """Random batch-norm statistics and biases, so that a mix-up of any two tensors changes the answers."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.name in ("gamma", "moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))
        elif variable.name in ("beta", "moving_mean", "bias"):
            variable.assign(rng.normal(0, 0.1, variable.shape).astype(np.float32))


def unname_dequantized_constants(flatbuffer):
    """The flatbuffer with every DEQUANTIZE's constant input named 'std.constant', as the converter left the
    float16 weights of TensorFlow's published float16 DeepLab files (their names only on the way through)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    renamed = 0
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            if codes[operator.opcodeIndex] == schema.BuiltinOperator.DEQUANTIZE:
                subgraph.tensors[operator.inputs[0]].name = b"std.constant"
                renamed += 1
    assert renamed, "the converter wrote no DEQUANTIZE ops"
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def balance_logits(model, size=65):
    """Logits scaled to a spread of about 1 and biased to give every class its share of a smooth colour ramp's
    pixels, so that a small untrained network's class maps change across a photo instead of naming one class
    everywhere (its raw logits are ~1e-10 apart: the same class after a softmax)."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], ramp[::-1, None]), axis=-1)[np.newaxis]
    logits = model(image).numpy().reshape(-1, model.output.shape[-1])
    layer = model.get_layer("logits")
    kernel, bias = layer.get_weights()
    median = np.median(logits, axis=0)
    scale = 1.0 / float(np.std(logits - median))
    layer.set_weights([kernel * scale, (bias - median) * scale])
