"""keras_deeplab.layers.Conv2D: the same numbers, gradients and weight files as keras' Conv2D, by a faster kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab.layers import Conv2D


@pytest.mark.parametrize(
    ("size", "rate", "kernel_size", "padding"),
    [
        ((17, 19), (3, 5), 3, "same"),
        ((9, 9), (12, 12), 3, "same"),
        ((33, 31), (2, 2), 3, "same"),
        ((21, 18), (4, 8), 4, "same"),  # even kernel: SAME pads the odd zero after (v1's 4x4 fc6)
        ((23, 25), (4, 4), 7, "same"),  # v1's 7x7 fc6 at rate 4
        ((19, 21), (2, 3), (3, 2), "valid"),
        ((15, 17), (1, 1), 3, "same"),  # undilated: TensorFlow's filter gradient, the inputs' as a conv
        ((15, 17), (1, 1), 1, "valid"),  # 1x1: the kernel's gradient one matrix product
    ],
)
def test_dilated_conv_matches_keras_conv2d_forward_and_gradient(monkeypatch, size, rate, kernel_size, padding):
    """Our CPU gradient kernels, the ones a CPU without oneDNN runs (pinned here, so that a machine where
    TensorFlow turns oneDNN on checks them too)."""
    from keras_deeplab import conv_gradients

    monkeypatch.setattr(conv_gradients, "onednn_on", lambda: False)
    pixels = tf.constant(np.random.default_rng(0).normal(size=(2, *size, 6)).astype("float32"))
    options = {"filters": 4, "kernel_size": kernel_size, "padding": padding, "dilation_rate": rate}
    atrous, plain = Conv2D(**options), keras.layers.Conv2D(**options)
    atrous.build(pixels.shape)
    plain.build(pixels.shape)
    plain.set_weights([np.random.default_rng(1).normal(size=w.shape).astype("float32") for w in plain.weights])
    atrous.set_weights(plain.get_weights())

    def output_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            output = layer(pixels)
            loss = tf.reduce_sum(output**3)  # a non-linear loss: the upstream gradient varies per pixel
        return output, tape.gradient(loss, [pixels, *layer.trainable_weights])

    atrous_output, atrous_gradients = output_and_gradients(atrous)
    plain_output, plain_gradients = output_and_gradients(plain)
    np.testing.assert_allclose(atrous_output, plain_output, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(atrous_gradients, plain_gradients, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3 * float(tf.reduce_max(tf.abs(theirs))))
    forward = tf.function(atrous).get_concrete_function(pixels).graph.as_graph_def()
    convs = [list(node.attr["dilations"].list.i) for node in forward.node if node.op == "Conv2D"]
    assert convs == [[1, *rate, 1]]  # one (dilated) conv kernel, no SpaceToBatchND around it
    assert "SpaceToBatchND" not in {node.op for node in forward.node}
    backward = tf.function(lambda: output_and_gradients(atrous)[1]).get_concrete_function().graph
    ops_and_functions = {node.op for node in backward.as_graph_def().node} | {
        node.op for function in backward.as_graph_def().library.function for node in function.node_def
    }
    assert not {"SpaceToBatchND", "Conv2DBackpropInput"} & ops_and_functions
    assert ("Conv2DBackpropFilter" in ops_and_functions) == (rate == (1, 1) and kernel_size == 3)


@pytest.mark.parametrize("rate", [1, 2])
@pytest.mark.parametrize("where", ["gpu", "onednn"])
def test_conv_is_tensorflows_own_on_a_gpu_and_undilated_with_onednn(monkeypatch, rate, where):
    """Where a GPU is visible, cuDNN's kernels run forward and backward: the gradient graph holds the dilated
    Conv2DBackpropInput/Filter (built here, not run: no GPU here). Where oneDNN is on, undilated convs take
    TensorFlow's own gradients (oneDNN's, measured faster: benchmarks/gradient_kernels.py) and dilated ones ours,
    since outside oneDNN's graph rewrite TensorFlow's CPU kernel refuses a dilated gradient."""
    from keras_deeplab import conv_gradients

    if where == "gpu":
        real = tf.config.list_logical_devices
        monkeypatch.setattr(
            tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind)
        )
    else:
        monkeypatch.setattr(conv_gradients, "onednn_on", lambda: True)
    pixels, kernel = tf.zeros((1, 9, 9, 2)), tf.zeros((3, 3, 2, 2))

    def gradients(x, k):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = conv_gradients.stride1_conv2d(x, k, (rate, rate), "same")
        return tape.gradient(y, [x, k])

    graph = tf.function(gradients).get_concrete_function(pixels, kernel).graph.as_graph_def()
    dilated = {node.op: list(node.attr["dilations"].list.i) for node in graph.node if "Conv2D" in node.op}
    if where == "onednn" and rate > 1:  # ours: the inputs' gradient a dilated conv, the kernel's matrix products
        assert dilated == {"Conv2D": [1, rate, rate, 1]}
        return
    assert dilated == {op: [1, rate, rate, 1] for op in ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")}
    assert "SpaceToBatchND" not in {node.op for node in graph.node}


def test_strided_conv_is_keras_own():
    layer = Conv2D(4, 3, strides=2, padding="same")
    pixels = tf.zeros((1, 8, 8, 3))
    graph = tf.function(layer).get_concrete_function(pixels).graph.as_graph_def()
    assert "IdentityN" not in {node.op for node in graph.node}  # no custom gradient: TensorFlow's own


def test_models_saved_with_keras_conv2d_load_with_their_weights(tmp_path, monkeypatch):
    """A .keras file written by a build that used keras' own Conv2D (as keras-deeplab did before) still loads."""
    from keras_deeplab import build_model, layers
    from keras_deeplab.backbones import resnet

    with monkeypatch.context() as patch:
        patch.setattr(layers, "Conv2D", keras.layers.Conv2D)
        patch.setattr(resnet, "Conv2D", keras.layers.Conv2D)
        old = build_model(16, num_classes=3, backbone="resnet50", width_multiplier=0.125, aspp_filters=8)
    assert type(old.get_layer("aspp_atrous1_conv")) is keras.layers.Conv2D
    for weight in old.weights:
        weight.assign(np.random.default_rng(len(weight.path)).normal(size=weight.shape).astype("float32"))
    old.save(tmp_path / "old.keras")
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert type(loaded.get_layer("aspp_atrous1_conv")) is Conv2D
    for ours, theirs in zip(loaded.weights, old.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_matches_keras_batch_norm_in_training(policy):
    """keras_deeplab.layers.BatchNormalization trains through TensorFlow's fused kernel: the outputs, the
    gradients of inputs, gamma and beta, and the moving statistics after the step equal keras' own layer's."""
    from keras_deeplab.layers import BatchNormalization
    from keras_deeplab.precision import dtype_policy

    rng = np.random.default_rng(2)
    pixels = tf.constant(rng.normal(3.0, 2.0, size=(2, 7, 9, 5)).astype("float32"))
    options = {"momentum": 0.9, "epsilon": 1e-5}
    with dtype_policy(policy):
        fused, plain = BatchNormalization(**options), keras.layers.BatchNormalization(**options)
    for layer in (fused, plain):
        layer.build(pixels.shape)
    plain.set_weights([rng.normal(size=w.shape).astype("float32") ** 2 + 0.5 for w in plain.weights])
    fused.set_weights(plain.get_weights())
    weights = tf.constant(rng.normal(size=(2, 7, 9, 5)).astype("float32"))

    @tf.function
    def step(layer):
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            output = tf.cast(layer(pixels, training=True), tf.float32)
            loss = tf.reduce_sum(output * weights)
        return output, tape.gradient(loss, [pixels, *layer.trainable_weights])

    tolerance = 1e-4 if policy == "float32" else 2e-2
    (fused_output, fused_gradients), (plain_output, plain_gradients) = step(fused), step(plain)
    graph = step.get_concrete_function(fused).graph.as_graph_def()
    assert "FusedBatchNormV3" in {node.op for node in graph.node}
    np.testing.assert_allclose(fused_output, plain_output, rtol=tolerance, atol=tolerance)
    for ours, theirs in zip(fused_gradients, plain_gradients, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance * float(tf.reduce_max(tf.abs(theirs))))
    for ours, theirs in zip(fused.non_trainable_weights, plain.non_trainable_weights, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, err_msg=ours.path)
    np.testing.assert_allclose(fused(pixels, training=False), plain(pixels, training=False), rtol=1e-5, atol=1e-5)
