"""DeepLab's MobileNetV2 (arXiv 1801.04381; the official DeepLab `mobilenet_v2` feature extractor).

Inverted residual blocks up to the 320-channel block 16 (no final 1x1 conv to 1280 channels); once the stride
reaches the output stride, a block that would stride runs at stride 1 and every later depthwise conv is
dilated instead. Layer names, widths (`width_multiplier` is keras' `alpha`), batch-norm epsilon and ReLU6
follow keras.applications.MobileNetV2, so its no-top ImageNet weight file loads by name (less its final
`Conv_1` layers). Strided depthwise convs use "same" padding, which is keras' `correct_pad` padding whenever
the input size is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keras import layers

from keras_deeplab import constants
from keras_deeplab.backbones.base import (
    AtrousSchedule,
    BackboneFeatures,
    BackboneSpec,
    OfficialWeights,
    official_conv_names,
    official_tensor,
)
from keras_deeplab.layers import Conv2D, NormSettings

_EPSILON = constants.MOBILENETV2_BATCH_NORM_EPSILON
# Batch-norm epsilon of the official TF1 MobileNetV2: slim.batch_norm's default, kept by mobilenet_v2's
# training_scope (tensorflow/models research/slim/nets/mobilenet/mobilenet.py), the same as keras'.
OFFICIAL_BATCH_NORM_EPSILON = 1e-3


def make_divisible(value: float, divisor: int = constants.MOBILENETV2_WIDTH_DIVISOR) -> int:
    """keras.applications' width rounding: the nearest multiple of `divisor`, at least `divisor`, never
    more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def stage_widths(width_multiplier: float, width_divisor: int = constants.MOBILENETV2_WIDTH_DIVISOR) -> list[int]:
    """Output widths of the stem and of each stage of `constants.MOBILENETV2_BLOCKS`, scaled and rounded."""
    stem = make_divisible(constants.MOBILENETV2_STEM_FILTERS * width_multiplier, width_divisor)
    return [stem] + [
        make_divisible(int(filters * width_multiplier), width_divisor)
        for _, filters, _, _ in constants.MOBILENETV2_BLOCKS
    ]


def official_weight_names() -> dict[str, tuple[str, str]]:
    """Official TF1 DeepLab variable name -> (our layer, weight slot), for every MobileNetV2 weight.

    Official scopes (tensorflow/models research/slim/nets/mobilenet/mobilenet_v2.py `V2_DEF`, built by
    research/deeplab/core/feature_extractor.py under "MobilenetV2"): "Conv" (our "Conv1"), then
    "expanded_conv", "expanded_conv_1" .. "expanded_conv_16" (our "expanded_conv_", "block_1_" .. "block_16_"),
    each with "expand" (not in the first), "depthwise" and "project" convs followed by "BatchNorm".
    """
    table = official_conv_names("MobilenetV2/Conv", "Conv1", "bn_Conv1")
    block_id = 0
    for expansion, _, repeats, _ in constants.MOBILENETV2_BLOCKS:
        for _ in range(repeats):
            official = f"MobilenetV2/expanded_conv_{block_id}" if block_id else "MobilenetV2/expanded_conv"
            ours = f"block_{block_id}_" if block_id else "expanded_conv_"
            if expansion > 1:
                table.update(official_conv_names(f"{official}/expand", f"{ours}expand", f"{ours}expand_BN"))
            table.update(
                official_conv_names(f"{official}/depthwise", f"{ours}depthwise", f"{ours}depthwise_BN", depthwise=True)
            )
            table.update(official_conv_names(f"{official}/project", f"{ours}project", f"{ours}project_BN"))
            block_id += 1
    return table


def inverted_residual(
    x, filters: int, *, expansion: int, stride: int, rate: int, residual: bool, name: str, norm: NormSettings
):
    """Expand 1x1 + BN + ReLU6 (when `expansion` > 1), depthwise 3x3 (`stride`, `rate`) + BN + ReLU6, project
    1x1 + BN, plus the input when `residual` and the widths match (`residual` is False for a block that strides,
    or would stride below the output stride, so the graph is the same at every output stride).

    Returns (output, depthwise output): (B, H/stride, W/stride, filters) and (B, H/stride, W/stride, C*expansion).
    """
    inputs, in_channels = x, int(x.shape[-1])
    if expansion > 1:
        x = Conv2D(expansion * in_channels, 1, use_bias=False, name=f"{name}expand")(x)
        x = norm(f"{name}expand_BN", epsilon=_EPSILON)(x)
        x = layers.ReLU(6.0, name=f"{name}expand_relu")(x)
    x = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}depthwise"
    )(x)
    x = norm(f"{name}depthwise_BN", epsilon=_EPSILON)(x)
    depthwise = x = layers.ReLU(6.0, name=f"{name}depthwise_relu")(x)
    x = Conv2D(filters, 1, use_bias=False, name=f"{name}project")(x)
    x = norm(f"{name}project_BN", epsilon=_EPSILON)(x)
    if residual and in_channels == filters:
        x = layers.Add(name=f"{name}add")([inputs, x])
    return x, depthwise


def mobilenetv2_features(
    inputs,
    *,
    output_stride: int,
    norm: NormSettings,
    width_multiplier: float = 1.0,
    width_divisor: int = constants.MOBILENETV2_WIDTH_DIVISOR,
) -> BackboneFeatures:
    """MobileNetV2 on preprocessed pixels (B, H, W, 3), dilated to reach `output_stride`.

    Scaled widths are rounded to multiples of `width_divisor` (keras.applications: 8; the official DeepLab
    MobileNetV2 below depth multiplier 1: 1).

    Returns the depthwise output of block 2 (stride 4, 144 channels at width 1) and block 16's output at
    `output_stride` (320 channels at width 1).
    """
    constants.check_output_stride(output_stride)
    if not isinstance(width_divisor, int) or isinstance(width_divisor, bool) or not 1 <= width_divisor <= 64:
        raise ValueError(f"width_divisor must be an integer from 1 to 64, got {width_divisor!r}")
    widths = stage_widths(width_multiplier, width_divisor)
    x = Conv2D(
        widths[0],
        3,
        strides=2,
        padding="same",
        use_bias=False,
        name="Conv1",
    )(inputs)
    x = norm("bn_Conv1", epsilon=_EPSILON)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    schedule = AtrousSchedule(output_stride, stride_so_far=2)
    block_id, low_level = 0, None
    for (expansion, _, repeats, first_stride), width in zip(constants.MOBILENETV2_BLOCKS, widths[1:], strict=True):
        for repeat in range(repeats):
            stride, rate = schedule.next_layer(first_stride if repeat == 0 else 1)
            name = f"block_{block_id}_" if block_id else "expanded_conv_"
            x, depthwise = inverted_residual(
                x,
                width,
                expansion=expansion,
                stride=stride,
                rate=rate,
                residual=repeat > 0 or first_stride == 1,
                name=name,
                norm=norm,
            )
            if block_id == constants.MOBILENETV2_LOW_LEVEL_BLOCK:
                low_level = depthwise
            block_id += 1
    return BackboneFeatures(low_level=low_level, high_level=x, output_stride=output_stride)


def official_options(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """width_multiplier from the stem's width; width_divisor 8 (keras) or 1 (official below multiplier 1),
    whichever reproduces every stage's width."""
    stem_name = "MobilenetV2/Conv/weights"
    multiplier = official_tensor(tensors, stem_name).shape[-1] / constants.MOBILENETV2_STEM_FILTERS
    names, block_id = [stem_name], 0
    for _, _, repeats, _ in constants.MOBILENETV2_BLOCKS:
        block = f"expanded_conv_{block_id}" if block_id else "expanded_conv"
        names.append(f"MobilenetV2/{block}/project/weights")  # the first block of a stage sets its width
        block_id += repeats
    widths = [int(official_tensor(tensors, name).shape[-1]) for name in names]
    for divisor in (constants.MOBILENETV2_WIDTH_DIVISOR, 1):
        if stage_widths(multiplier, divisor) == widths:
            return {"width_multiplier": multiplier, "width_divisor": divisor}
    raise ValueError(
        f"MobileNetV2 widths {widths} (of {', '.join(names)}) fit no depth multiplier "
        f"(stem {widths[0]} channels gives {multiplier:g})"
    )


SPEC = BackboneSpec(
    name="mobilenetv2",
    build=mobilenetv2_features,
    pixel_mean=constants.SIGNED_UNIT_PIXEL_MEAN_RGB,  # "tf" inputs: RGB scaled to [-1, 1]
    pixel_scale=constants.SIGNED_UNIT_PIXEL_SCALE,
    layer_groups={"stem": ("Conv1", "bn_Conv1"), "backbone": ("expanded_conv_", "block_")},
    options={"width_divisor": constants.MOBILENETV2_WIDTH_DIVISOR},
    light_aspp=True,  # the official MobileNetV2 configuration sets no atrous rates
    imagenet_weights="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    unused_weight_layers=constants.MOBILENETV2_UNUSED_WEIGHT_LAYERS,
    official=OfficialWeights(
        scope="MobilenetV2",
        infer_options=official_options,
        weight_names=lambda build_config: official_weight_names(),
        batch_norm_epsilon=OFFICIAL_BATCH_NORM_EPSILON,
    ),
)
SPECS = (SPEC,)
