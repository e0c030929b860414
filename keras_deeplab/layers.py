"""Building blocks shared by the backbones and the heads: custom layers and conv + BN + ReLU units.

Every layer runs on each Keras 3 backend (TensorFlow, JAX, PyTorch) through `keras.ops`; where TensorFlow has a
faster kernel of the same numbers (its corner-aligned resize, the CPU conv gradients of `conv_gradients`, the
fused batch norm), the layer takes it when the backend is TensorFlow. TensorFlow is imported only then, so the
model builds on a machine with JAX or PyTorch and no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from keras_deeplab import constants


def on_tensorflow() -> bool:
    """True when Keras runs on TensorFlow (the backend whose own kernels the layers below may take)."""
    return keras.backend.backend() == "tensorflow"


def bilinear_resize(images: Any, size: Any, align_corners: bool) -> Any:
    """Bilinear resize of (B, h, w, C) to `size` (2 ints, or on TensorFlow an int tensor): TF1's corner-aligned
    form (the official DeepLab code's) when `align_corners`, else TF2's half-pixel one."""
    if on_tensorflow():
        import tensorflow as tf

        if align_corners:
            return tf.raw_ops.ResizeBilinear(images=images, size=size, align_corners=True)
        return tf.image.resize(images, size, method="bilinear")
    size = tuple(int(side) for side in size)
    if not align_corners:
        return ops.image.resize(images, size, interpolation="bilinear")
    images = ops.cast(images, "float32")
    for axis, side in ((1, size[0]), (2, size[1])):
        images = _align_corners_1d(images, axis, int(images.shape[axis]), side)
    return images


def _align_corners_1d(images: Any, axis: int, old: int, new: int) -> Any:
    """Linear interpolation along `axis` from `old` to `new` samples, corner samples on corner samples (TF1's
    `resize_bilinear(align_corners=True)`: source coordinate i * (old - 1) / (new - 1), in float32)."""
    step = np.float32((old - 1) / (new - 1)) if new > 1 else np.float32(0.0)
    source = np.arange(new, dtype=np.float32) * step
    low = np.minimum(np.floor(source).astype(np.int32), old - 1)
    high = np.minimum(low + 1, old - 1)
    fraction = ops.convert_to_tensor((source - low).reshape([-1 if d == axis else 1 for d in range(4)]), "float32")
    below, above = ops.take(images, low, axis=axis), ops.take(images, high, axis=axis)
    return below + (above - below) * fraction


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
        size = spatial_size(reference)
        return ops.cast(bilinear_resize(x, size, self.align_corners), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "align_corners": self.align_corners}

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


def spatial_size(images: Any) -> Any:
    """(H, W) of images (B, H, W, C): a TensorFlow int tensor on TensorFlow (any size known only at run time), two
    ints on the other backends (whose traced shapes are static)."""
    if on_tensorflow():
        import tensorflow as tf

        return tf.shape(images)[1:3]
    return tuple(int(side) for side in images.shape[1:3])


def scaled_size(size: Any, scale: float) -> Any:
    """The side of an image of side `size` (int, or a TensorFlow int tensor) at `scale`: floor((size - 1) * scale)
    + 1 computed in float32, Caffe's Interp rule in DeepLab v2's multi-scale inputs (321 -> 241 at 0.75, 161 at
    0.5; corners stay aligned)."""
    if on_tensorflow():
        import tensorflow as tf

        return tf.cast(tf.math.floor(tf.cast(size - 1, tf.float32) * scale), tf.int32) + 1
    return tuple(int(np.floor(np.float32(side - 1) * np.float32(scale))) + 1 for side in size)


@keras.saving.register_keras_serializable(package="keras_deeplab")
class ScaleImage(layers.Layer):
    """Bilinear resize of images (B, H, W, C) to `scaled_size` of H and W at `scale` (v2's multi-scale inputs)."""

    def __init__(self, scale: float, align_corners: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        size = scaled_size(spatial_size(inputs), self.scale)
        return ops.cast(bilinear_resize(inputs, size, self.align_corners), self.compute_dtype)

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

    @property
    def input_mean(self) -> tuple[float, float, float]:
        """The RGB pixel in [0, 255] that normalises to zero (the official code's padding value, `mean_pixel`)."""
        return tuple(reversed(self.mean)) if self.reverse_channels else self.mean

    def call(self, inputs):
        x = ops.flip(inputs, axis=-1) if self.reverse_channels else inputs
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        return (x - mean) * ops.cast(self.scale, x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), scale=self.scale, reverse_channels=self.reverse_channels)
        return config


@keras.saving.register_keras_serializable(package="keras_deeplab")
class Conv2D(layers.Conv2D):
    """keras' `Conv2D` whose stride-1 form runs, on TensorFlow, through `stride1_conv2d`: a faster forward pass
    (dilated) and a faster gradient on CPU, TensorFlow's own kernels on GPU, the same results; keras' own on the
    other backends. Same variables and the same class name: `.keras` files store weights under paths made from
    class names, so models saved with keras' Conv2D load into this one and back."""

    def call(self, inputs):
        if not on_tensorflow() or max(self.strides) > 1 or self.data_format != "channels_last" or self.groups != 1:
            return super().call(inputs)
        from keras_deeplab.conv_gradients import stride1_conv2d

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
    path, and so do the backends other than TensorFlow.
    Same variables and class name as keras' (see `Conv2D`)."""

    def call(self, inputs, training=None, mask=None):
        fused = (
            on_tensorflow()
            and training
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
        import tensorflow as tf

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

    def _moments(self, inputs, mask):
        """keras' batch moments, the variance as the mean squared deviation from the mean: keras' PyTorch backend
        takes E[x^2] - E[x]^2, which cancels to a negative variance (NaN after the normalization's square root)
        on a channel whose values are nearly equal beside their mean, as a tiny model's 2x2 features can be.
        TensorFlow's own moments, masks and synchronized statistics stay keras'."""
        if on_tensorflow() or mask is not None or self.synchronized:
            return super()._moments(inputs, mask)
        x = ops.cast(inputs, "float32") if inputs.dtype in ("float16", "bfloat16") else inputs
        mean = ops.mean(x, axis=self._reduction_axes)
        variance = ops.var(x, axis=self._reduction_axes)
        return ops.cast(mean, inputs.dtype), ops.cast(variance, inputs.dtype)


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
