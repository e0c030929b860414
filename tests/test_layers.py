"""keras_deeplab.layers.Conv2D: the same numbers, gradients and weight files as keras' Conv2D, by a faster kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab.layers import Conv2D


@pytest.mark.parametrize(("size", "rate"), [((17, 19), (3, 5)), ((9, 9), (12, 12)), ((33, 31), (2, 2))])
def test_dilated_conv_matches_keras_conv2d_forward_and_gradient(size, rate):
    pixels = tf.constant(np.random.default_rng(0).normal(size=(2, *size, 6)).astype("float32"))
    options = {"filters": 4, "kernel_size": 3, "padding": "same", "dilation_rate": rate}
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
    assert convs == [[1, *rate, 1]]  # one dilated conv kernel, no SpaceToBatchND around it
    assert "SpaceToBatchND" not in {node.op for node in forward.node}


def test_strided_or_undilated_conv_is_plain_conv2d():
    layer = Conv2D(4, 3, padding="same")
    pixels = tf.zeros((1, 8, 8, 3))
    graph = tf.function(layer).get_concrete_function(pixels).graph.as_graph_def()
    assert "IdentityN" not in {node.op for node in graph.node}  # no custom gradient when there is no dilation


def test_models_saved_with_keras_conv2d_load_with_their_weights(tmp_path, monkeypatch):
    """A .keras file written by a build that used keras' own Conv2D (as keras-deeplab did before) still loads."""
    from keras_deeplab import backbones, build_model, layers

    with monkeypatch.context() as patch:
        patch.setattr(layers, "Conv2D", keras.layers.Conv2D)
        patch.setattr(backbones.resnet, "Conv2D", keras.layers.Conv2D)
        old = build_model(16, num_classes=3, backbone="resnet50", width_multiplier=0.125, aspp_filters=8)
    assert type(old.get_layer("aspp_atrous1_conv")) is keras.layers.Conv2D
    for weight in old.weights:
        weight.assign(np.random.default_rng(len(weight.path)).normal(size=weight.shape).astype("float32"))
    old.save(tmp_path / "old.keras")
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert type(loaded.get_layer("aspp_atrous1_conv")) is Conv2D
    for ours, theirs in zip(loaded.weights, old.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
