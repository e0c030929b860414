"""Dilated ResNet v1 (50 and 101 layers) for DeepLab: later stages trade stride for `dilation_rate`.

Layer names and the unit layout follow keras.applications' ResNet (stride in the first 1x1 conv of a
stage, biased convs, epsilon 1.001e-5), so its ImageNet weight files load by name. Stages conv2..conv5 are
the v3 paper's block1..block4; the cascade copies block5..block7 are named conv6..conv8.

`resnet_layout="slim"` builds the official DeepLab's ResNet-v1 instead (tensorflow/models research/deeplab/core/
resnet_v1_beta.py, after tf-slim's research/slim/nets/resnet_v1.py and resnet_utils.py): each block strides in
the 3x3 conv of its LAST unit (`conv2d_same`: explicit padding), whose shortcut is then a 1x1 max pool with the
stride; convs without biases, batch-norm epsilon 1e-5, the stem's max pool "SAME"-padded, the decoder's input the
batch norm of block1 unit 2's last conv (before the sum), and the official inputs. Same layer names, so
`official_weight_names` maps the official variables onto either stem.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
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
    scaled_width,
)
from keras_deeplab.layers import Conv2D, NormSettings

_EPSILON = constants.RESNET_BATCH_NORM_EPSILON
# Batch-norm epsilon of the official DeepLab ResNets: extract_features' arg scope for every "resnet" variant
# (tensorflow/models research/deeplab/core/feature_extractor.py, batch_norm_epsilon=1e-5); the slim layout's own.
OFFICIAL_BATCH_NORM_EPSILON = 1e-5
MAX_UNIT_RATE = 16  # a multi_grid rate (the v3 paper's grids go up to 4); a sanity bound on what a config may ask


def resnet_stem(x, stem: str, width_multiplier: float, norm: NormSettings, layout: str = "keras"):
    """(B, H, W, 3) -> (B, ceil(H/4), ceil(W/4), C): a 7x7 stem (keras) or three 3x3 convs (beta), max pool.

    The strided conv pads explicitly (slim's `conv2d_same`). Layout "slim": no conv biases, epsilon 1e-5 and
    the max pool "SAME"-padded as the official `slim.max_pool2d(net, 3, stride=2, padding='SAME')` (the keras
    layout's symmetric padding of 1 is the same on odd sizes only)."""
    slim = _check_layout(layout)
    epsilon = OFFICIAL_BATCH_NORM_EPSILON if slim else _EPSILON
    if stem == "keras":
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = Conv2D(scaled_width(64, width_multiplier), 7, strides=2, use_bias=not slim, name="conv1_conv")(x)
        x = norm("conv1_bn", epsilon=epsilon)(x)
        x = layers.Activation("relu", name="conv1_relu")(x)
    elif stem == "beta":
        x = layers.ZeroPadding2D(1, name="conv1_pad")(x)
        for index, (filters, strides) in enumerate(((64, 2), (64, 1), (128, 1)), start=1):
            x = Conv2D(
                scaled_width(filters, width_multiplier),
                3,
                strides=strides,
                padding="valid" if strides > 1 else "same",
                use_bias=False,
                name=f"conv1_{index}_conv",
            )(x)
            x = norm(f"conv1_{index}_bn", epsilon=epsilon)(x)
            x = layers.Activation("relu", name=f"conv1_{index}_relu")(x)
    else:
        raise ValueError(f"stem must be one of {constants.RESNET_STEMS}, got {stem!r}")
    if slim:
        return layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _check_layout(layout: str) -> bool:
    """True for the slim layout; ValueError for an unknown one."""
    if layout not in constants.RESNET_LAYOUTS:
        raise ValueError(f"resnet_layout must be one of {constants.RESNET_LAYOUTS}, got {layout!r}")
    return layout == "slim"


def bottleneck(
    x,
    filters: int,
    *,
    stride: int,
    rate: int,
    conv_shortcut: bool,
    name: str,
    norm,
    stride_in: str = "conv1",
    use_bias: bool = True,
    epsilon: float = _EPSILON,
):
    """ResNet v1 bottleneck: 1x1, 3x3 at `rate`, 1x1 to 4*filters, plus the shortcut, ReLU.

    `stride_in`: the conv that strides, "conv1" (keras.applications: the first 1x1) or "conv2" (slim's
    `bottleneck`: the 3x3, explicitly padded as `resnet_utils.conv2d_same`; only ever at rate 1). The shortcut
    is a 1x1 conv (+ BN) at `stride` when `conv_shortcut`, else the input, subsampled by a 1x1 max pool when
    `stride` > 1 (slim's `resnet_utils.subsample`). Returns (output, the last conv's batch norm before the sum:
    the official decoder's input on block1 unit 2).
    """
    if conv_shortcut:
        shortcut = Conv2D(4 * filters, 1, strides=stride, use_bias=use_bias, name=f"{name}_0_conv")(x)
        shortcut = norm(f"{name}_0_bn", epsilon=epsilon)(shortcut)
    elif stride > 1:
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    else:
        shortcut = x
    stride1, stride2 = (stride, 1) if stride_in == "conv1" else (1, stride)
    x = Conv2D(filters, 1, strides=stride1, use_bias=use_bias, name=f"{name}_1_conv")(x)
    x = norm(f"{name}_1_bn", epsilon=epsilon)(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    if stride2 > 1:
        x = layers.ZeroPadding2D(1, name=f"{name}_2_pad")(x)
        x = Conv2D(filters, 3, strides=stride2, use_bias=use_bias, name=f"{name}_2_conv")(x)
    else:
        x = Conv2D(filters, 3, padding="same", dilation_rate=rate, use_bias=use_bias, name=f"{name}_2_conv")(x)
    x = norm(f"{name}_2_bn", epsilon=epsilon)(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = Conv2D(4 * filters, 1, use_bias=use_bias, name=f"{name}_3_conv")(x)
    residual = x = norm(f"{name}_3_bn", epsilon=epsilon)(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x), residual


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
    resnet_layout: str = "keras",
) -> BackboneFeatures:
    """Dilated ResNet on preprocessed pixels (B, H, W, 3).

    Returns the stride-4 feature (last unit of conv2, 256*w channels) and the final feature at
    `output_stride` (2048*w channels). Once the stride reaches `output_stride`, every later stride-2 stage
    runs at stride 1 and doubles the dilation instead; the units of block4 and of the `extra_blocks`
    cascade copies (block5..7) multiply the stage's rate by `multi_grid`.

    `resnet_layout="slim"`: the stride of each stage moves to the 3x3 conv of the previous stage's last unit
    (slim's blocks: block1..block3 stride 2 in their last unit, block4 stride 1; with `extra_blocks`, every
    block but the last), and each unit follows the official `stack_blocks_dense`: a unit that would stride
    past `output_stride` runs at stride 1 at the current rate, and later units dilate by that stride. The
    stride-4 feature is then block1 unit 2's last batch norm (the official decoder's input).
    """
    slim = _check_layout(resnet_layout)
    constants.check_output_stride(output_stride)
    if depth not in constants.RESNET_STAGE_BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(constants.RESNET_STAGE_BLOCKS)}, got {depth!r}")
    whole = isinstance(extra_blocks, int) and not isinstance(extra_blocks, bool)
    if not whole or not 0 <= extra_blocks <= constants.MAX_EXTRA_BLOCKS:
        raise ValueError(f"extra_blocks must be an integer in 0..{constants.MAX_EXTRA_BLOCKS}, got {extra_blocks!r}")
    last_units = constants.RESNET_STAGE_BLOCKS[depth][-1]
    unit_rates = tuple(multi_grid) if multi_grid else (1,) * last_units
    if len(unit_rates) != last_units or not all(
        isinstance(rate, int) and not isinstance(rate, bool) and 1 <= rate <= MAX_UNIT_RATE for rate in unit_rates
    ):
        raise ValueError(
            f"multi_grid needs {last_units} unit rates (one per unit of block4), integers from 1 to {MAX_UNIT_RATE}, "
            f"got {unit_rates}"
        )

    # (stage name, bottleneck width, units, stride, per-unit rate multipliers)
    stages = [
        (f"conv{index + 2}", filters, units, 1 if index == 0 else 2, (1,) * units)
        for index, (filters, units) in enumerate(
            zip(constants.RESNET_STAGE_FILTERS, constants.RESNET_STAGE_BLOCKS[depth], strict=True)
        )
    ]
    stages[-1] = (*stages[-1][:4], unit_rates)
    stages += [(f"conv{6 + index}", 512, last_units, 2, unit_rates) for index in range(extra_blocks)]

    x = resnet_stem(inputs, stem, width_multiplier, norm, resnet_layout)
    schedule, low_level = AtrousSchedule(output_stride, stride_so_far=4), None
    unit_options = {"stride_in": "conv2", "use_bias": False, "epsilon": OFFICIAL_BATCH_NORM_EPSILON} if slim else {}
    for stage_index, (stage, filters, units, stage_stride, rates) in enumerate(stages):
        if not slim:
            # the stage's first 1x1 conv strides, or (output stride reached) every 3x3 conv of it dilates instead
            stride, _ = schedule.next_layer(stage_stride)
            rate = schedule.rate
        width = scaled_width(filters, width_multiplier)
        for unit in range(units):
            if slim:  # the next stage's stride, in this stage's last unit (none after the last stage)
                last = unit == units - 1
                stride, rate = schedule.next_layer(
                    stages[stage_index + 1][3] if last and stage_index + 1 < len(stages) else 1
                )
            x, residual = bottleneck(
                x,
                width,
                stride=stride if slim or unit == 0 else 1,
                rate=rate * rates[unit],
                conv_shortcut=unit == 0 and stage_index < 4,
                name=f"{stage}_block{unit + 1}",
                norm=norm,
                **unit_options,
            )
            if stage_index == 0 and unit == units - (2 if slim else 1):
                low_level = residual if slim else x
    return BackboneFeatures(low_level=low_level, high_level=x, output_stride=output_stride)


def _resnet_spec(depth: str) -> BackboneSpec:
    return BackboneSpec(
        name=depth,
        build=functools.partial(resnet_features, depth=depth),
        # keras.applications' ResNets expect "caffe" inputs: BGR order, ImageNet mean subtracted, no scaling.
        pixel_mean=constants.RESNET_CAFFE_MEAN_BGR,
        reverse_channels=True,
        layer_groups={"stem": ("conv1_", "pool1_"), "backbone": ("conv",)},
        options={
            "stem": constants.RESNET_STEMS[0],
            "multi_grid": constants.MULTI_GRID,
            "extra_blocks": 0,
            "resnet_layout": constants.RESNET_LAYOUTS[0],
        },
        imagenet_weights=f"{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5",
        pixel_normalization=pixel_normalization,
        official=OfficialWeights(
            scope=_official_scope(depth),
            infer_options=functools.partial(official_options, depth=depth),
            weight_names=_official_weight_table,
            batch_norm_epsilon=OFFICIAL_BATCH_NORM_EPSILON,
        ),
    )


def pixel_normalization(options: dict) -> tuple[tuple[float, ...], float, bool]:
    """(mean, scale, reverse_channels) of the input the network expects with build `options`.

    keras layout: keras.applications' "caffe" inputs. slim layout: the official DeepLab's
    (tensorflow/models research/deeplab/core/feature_extractor.py, `_PREPROCESS_FN`): the beta stem's
    `_preprocess_zero_mean_unit_range` (RGB to [-1, 1]), the 7x7 stem's `_preprocess_subtract_imagenet_mean`
    (its RGB mean subtracted, RGB order).
    """
    if options.get("resnet_layout", "keras") != "slim":
        return constants.RESNET_CAFFE_MEAN_BGR, 1.0, True
    if options.get("stem") == "beta":
        return constants.SIGNED_UNIT_PIXEL_MEAN_RGB, constants.SIGNED_UNIT_PIXEL_SCALE, False
    return constants.OFFICIAL_RESNET_MEAN_RGB, 1.0, False


def official_weight_names(backbone: str = "resnet101", stem: str = "beta") -> dict[str, tuple[str, str]]:
    """Official TF1 DeepLab variable name -> (our layer, weight slot), for every weight of a slim-layout ResNet.

    Official scopes (tensorflow/models research/deeplab/core/resnet_v1_beta.py, `resnet_v1_101_beta` and
    `resnet_v1_101`, both under "resnet_v1_101"; "resnet_v1_50" for 50 layers): the root "conv1_1", "conv1_2",
    "conv1_3" (beta) or "conv1" (7x7), then "block<b>/unit_<u>/bottleneck_v1/" with "conv1", "conv2", "conv3" and,
    in each block's first unit, the projection "shortcut", each followed by "BatchNorm" and without biases.
    Ours: "conv1_<i>_conv" / "conv1_conv", and "conv<b+1>_block<u>_{1,2,3,0}_conv" with "_bn".
    """
    scope = _official_scope(backbone)
    if stem == "beta":
        table = {}
        for index in (1, 2, 3):
            table.update(official_conv_names(f"{scope}/conv1_{index}", f"conv1_{index}_conv", f"conv1_{index}_bn"))
    else:
        table = official_conv_names(f"{scope}/conv1", "conv1_conv", "conv1_bn")
    for block, units in enumerate(constants.RESNET_STAGE_BLOCKS[backbone], start=1):
        for unit in range(1, units + 1):
            official, ours = f"{scope}/block{block}/unit_{unit}/bottleneck_v1", f"conv{block + 1}_block{unit}"
            convs = [("conv1", 1), ("conv2", 2), ("conv3", 3)] + ([("shortcut", 0)] if unit == 1 else [])
            for part, index in convs:
                table.update(official_conv_names(f"{official}/{part}", f"{ours}_{index}_conv", f"{ours}_{index}_bn"))
    return table


def _official_scope(depth: str) -> str:
    # resnet_v1_101_beta and resnet_v1_101 both build under "resnet_v1_101" (research/deeplab/core/
    # feature_extractor.py, `name_scope`); the root's variables tell them apart
    return f"resnet_v1_{depth.removeprefix('resnet')}"


def _official_weight_table(build_config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    if build_config.get("resnet_layout") != "slim":
        raise ValueError(
            f"the official ResNet weights fit resnet_layout='slim' only, not {build_config.get('resnet_layout')!r}"
        )
    return official_weight_names(build_config["backbone"], build_config.get("stem", "keras"))


def official_options(tensors: Mapping[str, Any], depth: str) -> dict[str, Any]:
    """The slim layout; stem "beta" (root conv1_1..conv1_3) or "keras" (7x7 conv1); width from the root's first
    conv; multi_grid (1, 2, 4), which no tensor records (the official models' `--multi_grid=1,2,4`)."""
    scope = _official_scope(depth)
    beta = f"{scope}/conv1_1/weights" in tensors
    root = official_tensor(tensors, f"{scope}/conv1_1/weights" if beta else f"{scope}/conv1/weights")
    units = constants.RESNET_STAGE_BLOCKS[depth][2]
    official_tensor(tensors, f"{scope}/block3/unit_{units}/bottleneck_v1/conv3/weights")
    if any(name.startswith(f"{scope}/block3/unit_{units + 1}/") for name in tensors):
        raise ValueError(f"{scope}/block3 has more than the {units} units of {depth}")
    return {
        "stem": "beta" if beta else "keras",
        "resnet_layout": "slim",
        "multi_grid": list(constants.MULTI_GRID),
        "width_multiplier": root.shape[-1] / constants.RESNET_STAGE_FILTERS[0],
    }


SPECS = tuple(_resnet_spec(depth) for depth in constants.RESNET_STAGE_BLOCKS)
