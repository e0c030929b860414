"""Dilated ResNet v1 (50 and 101 layers) for DeepLab: later stages trade stride for `dilation_rate`.

Layer names and the unit layout follow keras.applications' ResNet (stride in the first 1x1 conv of a
stage, biased convs, epsilon 1.001e-5), so its ImageNet weight files load by name. Stages conv2..conv5 are
the v3 paper's block1..block4; the cascade copies block5..block7 are named conv6..conv8.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from keras import layers

from keras_deeplab import constants
from keras_deeplab.backbones.base import AtrousSchedule, BackboneFeatures, BackboneSpec, scaled_width
from keras_deeplab.layers import Conv2D, NormSettings

_EPSILON = constants.RESNET_BATCH_NORM_EPSILON


def resnet_stem(x, stem: str, width_multiplier: float, norm: NormSettings):
    """(B, H, W, 3) -> (B, ceil(H/4), ceil(W/4), C): a 7x7 stem (keras) or three 3x3 convs (beta), max pool."""
    if stem == "keras":
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = layers.Conv2D(scaled_width(64, width_multiplier), 7, strides=2, name="conv1_conv")(x)
        x = norm("conv1_bn", epsilon=_EPSILON)(x)
        x = layers.Activation("relu", name="conv1_relu")(x)
    elif stem == "beta":
        x = layers.ZeroPadding2D(1, name="conv1_pad")(x)
        for index, (filters, strides) in enumerate(((64, 2), (64, 1), (128, 1)), start=1):
            x = layers.Conv2D(
                scaled_width(filters, width_multiplier),
                3,
                strides=strides,
                padding="valid" if strides > 1 else "same",
                use_bias=False,
                name=f"conv1_{index}_conv",
            )(x)
            x = norm(f"conv1_{index}_bn", epsilon=_EPSILON)(x)
            x = layers.Activation("relu", name=f"conv1_{index}_relu")(x)
    else:
        raise ValueError(f"stem must be one of {constants.RESNET_STEMS}, got {stem!r}")
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def bottleneck(x, filters: int, *, stride: int, rate: int, conv_shortcut: bool, name: str, norm):
    """ResNet v1 bottleneck (1x1, 3x3 at `rate`, 1x1 to 4*filters) with the stride in the first 1x1 conv."""
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = norm(f"{name}_0_bn", epsilon=_EPSILON)(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = norm(f"{name}_1_bn", epsilon=_EPSILON)(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = Conv2D(filters, 3, padding="same", dilation_rate=rate, name=f"{name}_2_conv")(x)
    x = norm(f"{name}_2_bn", epsilon=_EPSILON)(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = norm(f"{name}_3_bn", epsilon=_EPSILON)(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def resnet_features(
    inputs,
    *,
    depth: str,
    output_stride: int,
    norm: NormSettings,
    stem: str = "keras",
    multi_grid: Sequence[int] | None = constants.MULTI_GRID,
    extra_blocks: int = 0,
    width_multiplier: float = 1.0,
) -> BackboneFeatures:
    """Dilated ResNet on preprocessed pixels (B, H, W, 3).

    Returns the stride-4 feature (last unit of conv2, 256*w channels) and the final feature at
    `output_stride` (2048*w channels). Once the stride reaches `output_stride`, every later stride-2 stage
    runs at stride 1 and doubles the dilation instead; the units of block4 and of the `extra_blocks`
    cascade copies (block5..7) multiply the stage's rate by `multi_grid`.
    """
    constants.check_output_stride(output_stride)
    if depth not in constants.RESNET_STAGE_BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(constants.RESNET_STAGE_BLOCKS)}, got {depth!r}")
    if not 0 <= extra_blocks <= constants.MAX_EXTRA_BLOCKS:
        raise ValueError(f"extra_blocks must be in 0..{constants.MAX_EXTRA_BLOCKS}, got {extra_blocks}")
    last_units = constants.RESNET_STAGE_BLOCKS[depth][-1]
    unit_rates = tuple(multi_grid) if multi_grid else (1,) * last_units
    if len(unit_rates) != last_units:
        raise ValueError(f"multi_grid needs {last_units} unit rates (one per unit of block4), got {unit_rates}")

    # (stage name, bottleneck width, units, stride, per-unit rate multipliers)
    stages = [
        (f"conv{index + 2}", filters, units, 1 if index == 0 else 2, (1,) * units)
        for index, (filters, units) in enumerate(
            zip(constants.RESNET_STAGE_FILTERS, constants.RESNET_STAGE_BLOCKS[depth], strict=True)
        )
    ]
    stages[-1] = (*stages[-1][:4], unit_rates)
    stages += [(f"conv{6 + index}", 512, last_units, 2, unit_rates) for index in range(extra_blocks)]

    x = resnet_stem(inputs, stem, width_multiplier, norm)
    schedule, low_level = AtrousSchedule(output_stride, stride_so_far=4), None
    for stage_index, (stage, filters, units, stage_stride, rates) in enumerate(stages):
        # the stage's first 1x1 conv strides, or (output stride reached) every 3x3 conv of it dilates instead
        stride, _ = schedule.next_layer(stage_stride)
        rate = schedule.rate
        width = scaled_width(filters, width_multiplier)
        for unit in range(units):
            x = bottleneck(
                x,
                width,
                stride=stride if unit == 0 else 1,
                rate=rate * rates[unit],
                conv_shortcut=unit == 0 and stage_index < 4,
                name=f"{stage}_block{unit + 1}",
                norm=norm,
            )
        if stage_index == 0:
            low_level = x
    return BackboneFeatures(low_level=low_level, high_level=x, output_stride=output_stride)


def _resnet_spec(depth: str) -> BackboneSpec:
    return BackboneSpec(
        name=depth,
        build=functools.partial(resnet_features, depth=depth),
        # keras.applications' ResNets expect "caffe" inputs: BGR order, ImageNet mean subtracted, no scaling.
        pixel_mean=constants.RESNET_CAFFE_MEAN_BGR,
        reverse_channels=True,
        options=("stem", "multi_grid", "extra_blocks"),
        imagenet_weights=f"{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


SPECS = tuple(_resnet_spec(depth) for depth in constants.RESNET_STAGE_BLOCKS)
