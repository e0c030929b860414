"""Building blocks shared by the backbones and the heads: custom layers and conv + BN + ReLU units."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf
from keras import layers, ops

from keras_deeplab import constants


def bilinear_resize(images: tf.Tensor, size: tf.Tensor, align_corners: bool) -> tf.Tensor:
    """Bilinear resize of (B, h, w, C) to `size`: TF1's corner-aligned form (the official DeepLab code's) when
    `align_corners`, else TF2's half-pixel one."""
    if align_corners:
        return tf.raw_ops.ResizeBilinear(images=images, size=size, align_corners=True)
    return tf.image.resize(images, size, method="bilinear")


@keras.saving.register_keras_serializable(package="keras_deeplab")
class ResizeLike(layers.Layer):
    """Bilinear resize of `x` (B, h, w, C) to the height and width of `reference` (B, H, W, any).

    Works for any spatial size known only at run time, so one model serves every input size.
    `align_corners=True` maps corner pixels onto corner pixels, as TF1's `resize_bilinear` in the official
    DeepLab code does (False: TF2's half-pixel centres).
    """

    def __init__(self, align_corners: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        x, reference = inputs
        return tf.cast(bilinear_resize(x, tf.shape(reference)[1:3], self.align_corners), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "align_corners": self.align_corners}

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


def scaled_size(size, scale: float):
    """The side of an image of side `size` (int or int tensor) at `scale`: floor((size - 1) * scale) + 1, Caffe's
    Interp rule in DeepLab v2's multi-scale inputs (321 -> 241 at 0.75, 161 at 0.5; corners stay aligned)."""
    return tf.cast(tf.math.floor(tf.cast(size - 1, tf.float32) * scale), tf.int32) + 1


@keras.saving.register_keras_serializable(package="keras_deeplab")
class ScaleImage(layers.Layer):
    """Bilinear resize of images (B, H, W, C) to `scaled_size` of H and W at `scale` (v2's multi-scale inputs)."""

    def __init__(self, scale: float, align_corners: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        size = scaled_size(tf.shape(inputs)[1:3], self.scale)
        return tf.cast(bilinear_resize(inputs, size, self.align_corners), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "align_corners": self.align_corners}

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape

        def side(value):
            return None if value is None else int((value - 1) * self.scale) + 1

        return (batch, side(height), side(width), channels)


@keras.saving.register_keras_serializable(package="keras_deeplab")
class PixelNormalization(layers.Layer):
    """RGB pixels in [0, 255] (B, H, W, 3) -> `(pixels[..., order] - mean) * scale`, the backbone's convention.

    `reverse_channels=True` feeds BGR, as keras.applications' ResNets ("caffe" mode) expect.
    """

    def __init__(self, mean: Sequence[float], scale: float = 1.0, reverse_channels: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mean = tuple(float(value) for value in mean)
        self.scale = float(scale)
        self.reverse_channels = bool(reverse_channels)

    def call(self, inputs):
        x = ops.flip(inputs, axis=-1) if self.reverse_channels else inputs
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        return (x - mean) * ops.cast(self.scale, x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), scale=self.scale, reverse_channels=self.reverse_channels)
        return config


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
    On a GPU (one is visible and the inputs are not pinned to the CPU) cuDNN has fast kernels for all three, so
    the conv is TensorFlow's own with its own gradient: nothing of this reaches it. The bias is added inside the
    conv's gradient function, so TensorFlow still fuses the two into one kernel.
    """
    inputs, kernel = tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel)
    rate, padding = [int(r) for r in rate], padding.upper()

    def conv(x, k, *b):
        outputs = tf.nn.conv2d(x, k, strides=1, padding=padding, dilations=rate)
        return tf.nn.bias_add(outputs, b[0]) if b else outputs

    operands = (inputs, kernel) if bias is None else (inputs, kernel, tf.convert_to_tensor(bias))
    if tf.config.list_logical_devices("GPU") and "CPU" not in inputs.device.upper():
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


@keras.saving.register_keras_serializable(package="keras_deeplab")
class Conv2D(layers.Conv2D):
    """keras' `Conv2D` whose stride-1 form runs through `stride1_conv2d`: a faster forward pass (dilated) and a
    faster gradient on CPU, TensorFlow's own kernels on GPU, the same results. Same variables and the same class name:
    `.keras` files store weights under paths made from class names, so models saved with keras' Conv2D load into
    this one and back."""

    def call(self, inputs):
        if max(self.strides) > 1 or self.data_format != "channels_last" or self.groups != 1:
            return super().call(inputs)
        bias = self.bias if self.use_bias else None
        outputs = stride1_conv2d(inputs, self.kernel, self.dilation_rate, self.padding, bias)
        return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package="keras_deeplab")
class BatchNormalization(layers.BatchNormalization):
    """keras' `BatchNormalization` whose training-mode pass over images (B, H, W, C) runs TensorFlow's fused
    kernel (statistics, normalization and their gradient in one op each, oneDNN's on CPU, cuDNN's on GPU) where
    keras runs a dozen element-wise ops forward and backward (a quarter of a ResNet-101 training step on CPU,
    `benchmarks/profile_train_step.py`). The same numbers: the batch's biased variance normalizes and updates the
    moving variance, as in keras. Synchronized batch norm, masks, renorm, float64 and other layouts take keras'
    path.
    Same variables and class name as keras' (see `Conv2D`)."""

    def call(self, inputs, training=None, mask=None):
        fused = (
            training
            and self.trainable
            and mask is None
            and not self.synchronized
            and not self.renorm
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.variable_dtype == "float32"  # the fused kernel computes in float32, not float64
        )
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        empty = tf.constant([], tf.float32)
        y, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=tf.cast(self.gamma, tf.float32),
            offset=tf.cast(self.beta, tf.float32),
            mean=empty,
            variance=empty,
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        # The fused kernel returns the variance with Bessel's correction; keras (and its normalization) uses the
        # biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


@dataclass(frozen=True)
class NormSettings:
    """How every batch-norm layer of a model is made (the same settings in every replica)."""

    momentum: float = constants.BATCH_NORM_MOMENTUM
    epsilon: float = constants.BATCH_NORM_EPSILON
    synchronized: bool = False

    def __call__(self, name: str, epsilon: float | None = None) -> BatchNormalization:
        return BatchNormalization(
            momentum=self.momentum,
            epsilon=self.epsilon if epsilon is None else epsilon,
            synchronized=self.synchronized,
            name=name,
        )


def conv_bn_relu(
    x,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    norm: NormSettings,
    rate: int = 1,
    separable: bool = False,
):
    """Conv (no bias) + BN + ReLU; with `separable` and a kernel over 1, an atrous separable conv.

    The separable form is the v3+ paper's: depthwise kxk at `rate` + BN + ReLU, then pointwise 1x1 + BN + ReLU.
    Shapes: (B, H, W, C) -> (B, H, W, filters); padding keeps H and W.
    """
    if separable and kernel_size > 1:
        x = layers.DepthwiseConv2D(
            kernel_size, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}_depthwise"
        )(x)
        x = norm(f"{name}_depthwise_bn")(x)
        x = layers.Activation("relu", name=f"{name}_depthwise_relu")(x)
        kernel_size, rate, conv_name, bn_name = 1, 1, f"{name}_pointwise", f"{name}_pointwise_bn"
    else:
        conv_name, bn_name = f"{name}_conv", f"{name}_bn"
    x = Conv2D(filters, kernel_size, padding="same", dilation_rate=rate, use_bias=False, name=conv_name)(x)
    x = norm(bn_name)(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)
