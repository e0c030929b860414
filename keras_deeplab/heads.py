"""DeepLab heads on backbone features: LargeFOV (v1), ASPP with summed class scores (v2), ASPP (v3), the decoder
(v3+)."""

from __future__ import annotations

import keras
from keras import layers

from keras_deeplab import constants
from keras_deeplab.backbones.base import official_conv_names
from keras_deeplab.layers import Conv2D, NormSettings, ResizeLike, conv_bn_relu

# Batch-norm epsilon of the official TF1 ASPP and decoder (`batch_norm_params` of tensorflow/models
# research/deeplab/model.py), the same as ours.
OFFICIAL_BATCH_NORM_EPSILON = 1e-5


def aspp(
    features,
    *,
    output_stride: int,
    norm: NormSettings,
    filters: int = constants.ASPP_FILTERS,
    separable: bool = False,
    dropout_rate: float = constants.ASPP_DROPOUT_RATE,
    light: bool = False,
    align_corners: bool = False,
):
    """Atrous spatial pyramid pooling: (B, h, w, C) -> (B, h, w, filters).

    Five parallel branches, each `filters` wide with BN and ReLU: image-level pooling (global average,
    1x1 conv, bilinear back to h x w), a 1x1 conv and three 3x3 atrous convs at `aspp_rates(output_stride)`;
    concatenated, fused by a 1x1 conv, then dropout. Branch names carry no rate, so the same weights fit
    every output stride. `light` keeps only the image pooling and 1x1 branches (the official MobileNetV2
    configuration, which sets no atrous rates). `align_corners`: the upsampling as TF1's (see ResizeLike).
    """
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(features)
    pooled = conv_bn_relu(pooled, filters, 1, name="aspp_image_pool_projection", norm=norm)
    branches = [ResizeLike(align_corners, name="aspp_image_pool_upsample")([pooled, features])]
    branches.append(conv_bn_relu(features, filters, 1, name="aspp_conv1x1", norm=norm))
    for index, rate in enumerate(() if light else constants.aspp_rates(output_stride), start=1):
        branches.append(
            conv_bn_relu(features, filters, 3, rate=rate, separable=separable, name=f"aspp_atrous{index}", norm=norm)
        )
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, filters, 1, name="aspp_projection", norm=norm)
    return layers.Dropout(dropout_rate, name="aspp_dropout")(x)


def _classifier(x, num_classes: int, name: str, kernel_size: int = 1, rate: int = 1):
    """fc8: a biased conv to the classes, initialised as the official v1/v2 code's (Gaussian, std 0.01; bias 0)."""
    return Conv2D(
        num_classes,
        kernel_size,
        padding="same",
        dilation_rate=rate,
        kernel_initializer=keras.initializers.RandomNormal(stddev=constants.V1_CLASSIFIER_INIT_STD),
        name=name,
    )(x)


def fully_connected(x, *, kernel_size: int, rate: int, filters: int, dropout_rate: float, suffix: str = ""):
    """fc6 (`kernel_size` conv at `rate`, `filters` wide) + ReLU + dropout, fc7 (1x1, as wide) + ReLU + dropout:
    VGG-16's fully connected layers run as convs, as DeepLab v1/v2 do. No batch norm. (B, h, w, C) ->
    (B, h, w, filters). Layers "fc6{suffix}", "fc7{suffix}" (their ImageNet initialisation: `vgg.load_fc_weights`).
    """
    x = Conv2D(filters, kernel_size, padding="same", dilation_rate=rate, activation="relu", name=f"fc6{suffix}")(x)
    x = layers.Dropout(dropout_rate, name=f"fc6{suffix}_dropout")(x)
    x = Conv2D(filters, 1, activation="relu", name=f"fc7{suffix}")(x)
    return layers.Dropout(dropout_rate, name=f"fc7{suffix}_dropout")(x)


def largefov(
    features,
    *,
    num_classes: int,
    fc6=constants.LARGEFOV_FC6,
    dropout_rate: float = constants.V1_DROPOUT_RATE,
):
    """DeepLab v1's head: (B, h, w, C) -> class scores (B, h, w, num_classes).

    The LargeFOV prototxt's "pool5a" (3x3 average pooling, stride 1, padding 1 counted as zeros as Caffe does),
    then `fully_connected` with `fc6` = (kernel size, rate, filters), then fc8 ("logits", 1x1 to the classes).
    """
    kernel_size, rate, filters = fc6
    x = layers.ZeroPadding2D(1, name="pool5a_pad")(features)
    x = layers.AveragePooling2D(3, strides=1, name="pool5a")(x)
    x = fully_connected(x, kernel_size=kernel_size, rate=rate, filters=filters, dropout_rate=dropout_rate)
    return _classifier(x, num_classes, "logits")


def aspp_v2(
    features,
    *,
    num_classes: int,
    rates=constants.ASPP_L_RATES,
    fc6=None,
    dropout_rate: float = constants.V1_DROPOUT_RATE,
):
    """DeepLab v2's ASPP: one branch per rate, each to class scores, the scores summed: (B, h, w, num_classes).

    With `fc6` = (kernel size, rate, filters) (VGG-16), a branch is fc6 at the branch's rate (fc6's own rate is
    not used) and fc7 (`fully_connected`, layers "fc6_i", "fc7_i") then fc8 "logits_i" (1x1); without (ResNet),
    a branch is one 3x3 conv at its rate straight to the classes ("logits_i"), as the official v2 prototxts
    (fc8_voc12_1..4 for VGG-16, fc1_voc12_c0..c3 for ResNet-101). The sum is the layer "logits".
    """
    scores = []
    for index, rate in enumerate(rates, start=1):
        if fc6 is None:
            scores.append(_classifier(features, num_classes, f"logits_{index}", kernel_size=3, rate=rate))
            continue
        kernel_size, _, filters = fc6
        x = fully_connected(
            features, kernel_size=kernel_size, rate=rate, filters=filters, dropout_rate=dropout_rate, suffix=f"_{index}"
        )
        scores.append(_classifier(x, num_classes, f"logits_{index}"))
    if len(scores) == 1:
        return layers.Identity(name="logits")(scores[0])
    return layers.Add(name="logits")(scores)


def decoder(
    aspp_output,
    low_level,
    *,
    norm: NormSettings,
    filters: int = constants.DECODER_FILTERS,
    low_level_filters: int = constants.DECODER_LOW_LEVEL_FILTERS,
    separable: bool = False,
    align_corners: bool = False,
):
    """The v3+ decoder: (B, h, w, C) ASPP output and (B, H4, W4, C') stride-4 feature -> (B, H4, W4, filters).

    The low-level feature is projected to 48 channels (1x1 conv), the ASPP output is upsampled bilinearly to
    its size (x4 at output stride 16), the two are concatenated and refined by two 3x3 convs. `align_corners`:
    the upsampling as TF1's (see ResizeLike).
    """
    low_level = conv_bn_relu(low_level, low_level_filters, 1, name="decoder_low_level_projection", norm=norm)
    x = ResizeLike(align_corners, name="decoder_upsample")([aspp_output, low_level])
    x = layers.Concatenate(name="decoder_concat")([x, low_level])
    for index in (1, 2):
        x = conv_bn_relu(x, filters, 3, separable=separable, name=f"decoder_conv{index}", norm=norm)
    return x


def official_weight_names(separable: bool) -> dict[str, tuple[str, str]]:
    """Official TF1 DeepLab variable name -> (our layer, weight slot), for every weight of the heads.

    Scopes of tensorflow/models research/deeplab/model.py: "image_pooling", "aspp0" (1x1), "aspp1".."aspp3"
    (3x3 atrous; "aspp{i}_depthwise" + "aspp{i}_pointwise" when separable), "concat_projection"; the decoder's
    "decoder/feature_projection0" and "decoder/decoder_conv0", "decoder/decoder_conv1" (separable) or
    `slim.repeat`'s "decoder/decoder_conv0/decoder_conv0_1", "..._2"; the logits "logits/semantic" (biased).
    """

    def unit(official: str, ours: str) -> dict[str, tuple[str, str]]:
        if not separable:
            return official_conv_names(official, f"{ours}_conv", f"{ours}_bn")
        return {
            **official_conv_names(f"{official}_depthwise", f"{ours}_depthwise", f"{ours}_depthwise_bn", depthwise=True),
            **official_conv_names(f"{official}_pointwise", f"{ours}_pointwise", f"{ours}_pointwise_bn"),
        }

    table = {
        **official_conv_names("image_pooling", "aspp_image_pool_projection_conv", "aspp_image_pool_projection_bn"),
        **official_conv_names("aspp0", "aspp_conv1x1_conv", "aspp_conv1x1_bn"),
        **official_conv_names("concat_projection", "aspp_projection_conv", "aspp_projection_bn"),
        **official_conv_names(
            "decoder/feature_projection0", "decoder_low_level_projection_conv", "decoder_low_level_projection_bn"
        ),
        **official_conv_names("logits/semantic", "logits", bias=True),
    }
    for index in (1, 2, 3):
        table.update(unit(f"aspp{index}", f"aspp_atrous{index}"))
    for index in (1, 2):
        official = f"decoder/decoder_conv{index - 1}" if separable else f"decoder/decoder_conv0/decoder_conv0_{index}"
        table.update(unit(official, f"decoder_conv{index}"))
    return table
