"""Stride-1 convolutions with their gradient computed by TensorFlow's fastest CPU kernels (`stride1_conv2d`).

TensorFlow's CPU kernels have no dilated conv gradient, and its own path for one (space-to-batch) took over half of
a ResNet-101 training step; here the inputs' gradient is a conv of the upstream gradient by the flipped kernel and
the kernel's gradient one matrix product per tap. `keras_deeplab.layers.Conv2D` runs every stride-1 conv through
this; docs/performance.md has the measurements.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def onednn_on() -> bool:
    """Whether TensorFlow runs its CPU ops through oneDNN in this process: its default on CPUs with AVX-512 VNNI,
    bfloat16 or AMX, and wherever `TF_ENABLE_ONEDNN_OPTS=1`. Its kernels, unlike TensorFlow's own, compute
    dilated conv gradients."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def tensorflow_gradients_fastest(inputs: tf.Tensor, rate: Sequence[int]) -> bool:
    """Whether TensorFlow's own conv gradients beat this module's for `inputs` at dilation `rate`: on a GPU (the
    inputs not pinned to the CPU), where cuDNN has dilated kernels forward and backward; and on a CPU where oneDNN
    is on, for undilated convs, whose oneDNN gradients measured at least as fast as ours (1x1 and 3x3;
    `benchmarks/gradient_kernels.py`, docs/performance.md). Dilated convs keep ours there too: oneDNN computes
    their gradients only where its graph rewrite reaches the op, and elsewhere (eager steps, replicas of a
    distribution strategy) TensorFlow's own CPU kernel runs and refuses dilation."""
    if tf.config.list_logical_devices("GPU") and "CPU" not in inputs.device.upper():
        return True
    return max(rate) == 1 and onednn_on()


def conv_padding(kernel_size: int, rate: int, padding: str) -> tuple[int, int]:
    """(before, after): the zeros a stride-1 conv pads along one side: none for VALID; for SAME,
    (kernel_size - 1) * rate in all, the odd one after, as TensorFlow does."""
    if padding == "VALID":
        return 0, 0
    total = (kernel_size - 1) * rate
    return total // 2, total - total // 2


def conv2d_input_gradient(upstream: tf.Tensor, kernel: tf.Tensor, rate: Sequence[int], padding: str):
    """d(loss)/d(inputs) of `stride1_conv2d` from d(loss)/d(outputs) `upstream` (B, Ho, Wo, F): the full
    correlation of `upstream` with the kernel flipped in space and transposed in channels, itself a dilated,
    stride-1 conv (TensorFlow's fast forward kernel), padded so that its output has the inputs' size; for a 1x1
    kernel, one matrix product."""
    kernel_h, kernel_w = int(kernel.shape[0]), int(kernel.shape[1])
    if kernel_h == kernel_w == 1:  # a matrix product: (pixels x F) @ (F x C)
        channels, filters = int(kernel.shape[2]), int(kernel.shape[3])
        pixels = tf.linalg.matmul(
            tf.reshape(upstream, [-1, filters]), tf.reshape(kernel, [channels, filters]), transpose_b=True
        )
        return tf.reshape(pixels, tf.concat([tf.shape(upstream)[:3], [channels]], 0))
    if padding == "SAME" and kernel_h % 2 == 1 and kernel_w % 2 == 1:
        pads = "SAME"  # symmetric padding: the flipped kernel pads alike
    else:
        pads = [[0, 0]]
        for kernel_size, dilation in ((kernel_h, rate[0]), (kernel_w, rate[1])):
            before, after = conv_padding(kernel_size, dilation, padding)
            reach = (kernel_size - 1) * dilation
            pads.append([reach - before, reach - after])
        pads.append([0, 0])
    flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
    return tf.nn.conv2d(upstream, flipped, strides=1, padding=pads, dilations=list(rate))


def conv2d_kernel_gradient(inputs: tf.Tensor, upstream: tf.Tensor, kernel_shape, rate, padding: str):
    """d(loss)/d(kernel) of `stride1_conv2d`: for a 1x1 kernel one (C x pixels) @ (pixels x F) matrix product;
    undilated, TensorFlow's Conv2DBackpropFilter; dilated (which TensorFlow's CPU kernels cannot), the inputs
    shifted by (i, j) * rate against `upstream` for each tap (i, j), one matrix product per tap."""
    kernel_h, kernel_w, channels, filters = (int(d) for d in kernel_shape)
    if kernel_h == kernel_w == 1:
        pixels = tf.reshape(inputs, [-1, channels])
        return tf.linalg.matmul(pixels, tf.reshape(upstream, [-1, filters]), transpose_a=True)[None, None]
    if max(rate) == 1:
        return tf.raw_ops.Conv2DBackpropFilter(
            input=inputs, filter_sizes=kernel_shape, out_backprop=upstream, strides=[1, 1, 1, 1], padding=padding
        )
    out_h, out_w = tf.shape(upstream)[1], tf.shape(upstream)[2]
    pad_h = conv_padding(kernel_h, rate[0], padding)
    pad_w = conv_padding(kernel_w, rate[1], padding)
    padded = tf.pad(inputs, [[0, 0], list(pad_h), list(pad_w), [0, 0]])
    upstream = tf.reshape(upstream, [-1, filters])
    taps = []
    for i in range(kernel_h):
        for j in range(kernel_w):
            window = padded[:, i * rate[0] : i * rate[0] + out_h, j * rate[1] : j * rate[1] + out_w, :]
            taps.append(tf.linalg.matmul(tf.reshape(window, [-1, channels]), upstream, transpose_a=True))
    return tf.reshape(tf.stack(taps), [kernel_h, kernel_w, channels, filters])


def stride1_conv2d(
    inputs: tf.Tensor, kernel: tf.Tensor, rate: Sequence[int], padding: str, bias: tf.Tensor | None = None
) -> tf.Tensor:
    """Stride-1 conv of `inputs` (B, H, W, C) by `kernel` (kh, kw, C, F) at dilation `rate` (2 ints), plus
    `bias` (F,) if given, with the gradient computed by TensorFlow's fastest CPU kernels for it.

    The forward pass is TensorFlow's Conv2D kernel itself, dilated or not; `tf.nn.convolution` (what Keras
    calls) instead wraps a dilated conv in SpaceToBatchND/BatchToSpaceND, whose reshuffles cost as much as 60%
    of the conv on CPU at the ASPP's rate 18 (`benchmarks/profile_forward.py`). TensorFlow's CPU kernels have no
    dilated gradient, and the space-to-batch form's gradient runs Conv2DBackpropInput on hundreds of tiny images
    (over half of a ResNet-101 training step at crop 513, `benchmarks/profile_train_step.py`); even undilated,
    its Conv2DBackpropInput is slower than the forward conv of the same arithmetic. So the inputs' gradient is
    a (dilated) conv of the upstream gradient by the flipped kernel, and the kernel's `conv2d_kernel_gradient`.
    Where `tensorflow_gradients_fastest` says so (a GPU's cuDNN; oneDNN's kernels for an undilated conv), the conv
    is TensorFlow's own with its own gradient: nothing of this reaches it. The bias is added inside the
    conv's gradient function, so TensorFlow still fuses the two into one kernel.
    """
    inputs, kernel = tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel)
    rate, padding = [int(r) for r in rate], padding.upper()

    def conv(x, k, *b):
        outputs = tf.nn.conv2d(x, k, strides=1, padding=padding, dilations=rate)
        return tf.nn.bias_add(outputs, b[0]) if b else outputs

    operands = (inputs, kernel) if bias is None else (inputs, kernel, tf.convert_to_tensor(bias))
    if tensorflow_gradients_fastest(inputs, rate):
        return conv(*operands)

    @tf.custom_gradient
    def convolve(x, k, *b):
        def gradient(upstream):
            upstream = tf.convert_to_tensor(upstream)
            gradients = [
                conv2d_input_gradient(upstream, k, rate, padding),
                conv2d_kernel_gradient(x, upstream, k.shape, rate, padding),
            ]
            return gradients + [tf.reduce_sum(upstream, axis=[0, 1, 2])] * len(b)

        return conv(x, k, *b), gradient

    return convolve(*operands)
