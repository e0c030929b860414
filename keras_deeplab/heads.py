"""DeepLab heads: ASPP (v3) and the decoder (v3+), on backbone features."""

from __future__ import annotations

from keras import layers

from keras_deeplab import constants
from keras_deeplab.layers import NormSettings, ResizeLike, conv_bn_relu


def aspp(
    features,
    *,
    output_stride: int,
    norm: NormSettings,
    filters: int = constants.ASPP_FILTERS,
    separable: bool = False,
    dropout_rate: float = constants.ASPP_DROPOUT_RATE,
    light: bool = False,
):
    """Atrous spatial pyramid pooling: (B, h, w, C) -> (B, h, w, filters).

    Five parallel branches, each `filters` wide with BN and ReLU: image-level pooling (global average,
    1x1 conv, bilinear back to h x w), a 1x1 conv and three 3x3 atrous convs at `aspp_rates(output_stride)`;
    concatenated, fused by a 1x1 conv, then dropout. Branch names carry no rate, so the same weights fit
    every output stride. `light` keeps only the image pooling and 1x1 branches (the official MobileNetV2
    configuration, which sets no atrous rates).
    """
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(features)
    pooled = conv_bn_relu(pooled, filters, 1, name="aspp_image_pool_projection", norm=norm)
    branches = [ResizeLike(name="aspp_image_pool_upsample")([pooled, features])]
    branches.append(conv_bn_relu(features, filters, 1, name="aspp_conv1x1", norm=norm))
    for index, rate in enumerate(() if light else constants.aspp_rates(output_stride), start=1):
        branches.append(
            conv_bn_relu(features, filters, 3, rate=rate, separable=separable, name=f"aspp_atrous{index}", norm=norm)
        )
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, filters, 1, name="aspp_projection", norm=norm)
    return layers.Dropout(dropout_rate, name="aspp_dropout")(x)


def decoder(
    aspp_output,
    low_level,
    *,
    norm: NormSettings,
    filters: int = constants.DECODER_FILTERS,
    low_level_filters: int = constants.DECODER_LOW_LEVEL_FILTERS,
    separable: bool = False,
):
    """The v3+ decoder: (B, h, w, C) ASPP output and (B, H4, W4, C') stride-4 feature -> (B, H4, W4, filters).

    The low-level feature is projected to 48 channels (1x1 conv), the ASPP output is upsampled bilinearly to
    its size (x4 at output stride 16), the two are concatenated and refined by two 3x3 convs.
    """
    low_level = conv_bn_relu(low_level, low_level_filters, 1, name="decoder_low_level_projection", norm=norm)
    x = ResizeLike(name="decoder_upsample")([aspp_output, low_level])
    x = layers.Concatenate(name="decoder_concat")([x, low_level])
    for index in (1, 2):
        x = conv_bn_relu(x, filters, 3, separable=separable, name=f"decoder_conv{index}", norm=norm)
    return x
