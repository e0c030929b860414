"""The modified aligned Xception-65 of DeepLabv3+ (arXiv 1802.02611, section 3.2 and Fig. 4).

Entry flow: two 3x3 convs (the first at stride 2) and three blocks of one unit; middle flow: 16 residual
units; exit flow: two blocks. A unit is three depthwise separable convs whose last one strides where the
original Xception max-pools. Each separable conv is depthwise 3x3 + BN + ReLU + pointwise 1x1 + BN (the paper's
extra BN and ReLU after the depthwise conv), preceded by a ReLU except in the exit flow's last block, which
ends each separable conv with a ReLU instead (the official code's `activation_fn_in_separable_conv`).

Layer names follow the official code's scopes with underscores ("entry_flow_block1_unit1_sepconv1_depthwise"
for "entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise") and carry no stride or rate, so
the same weights fit every output stride.
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
    scaled_width,
)
from keras_deeplab.layers import Conv2D, NormSettings

SKIP_CONNECTIONS = ("conv", "sum", "none")
# Batch-norm epsilon of the official TF1 Xception: xception_arg_scope's batch_norm_epsilon (tensorflow/models
# research/deeplab/core/xception.py); ours is 1e-5, and imported statistics are shifted to match.
OFFICIAL_BATCH_NORM_EPSILON = 1e-3


def separable_conv_bn(
    x,
    filters: int,
    *,
    stride: int,
    rate: int,
    relu_first: bool,
    name: str,
    norm: NormSettings,
    depthwise_relu: bool = True,
):
    """[ReLU] + depthwise 3x3 (`stride`, `rate`) + BN + ReLU + pointwise 1x1 + BN [+ ReLU].

    The ReLU comes first when `relu_first`, last otherwise. `depthwise_relu=False` drops the ReLU after the
    depthwise BN when `relu_first` (the official code's network, where `activation_fn=None` reaches both halves
    of the separable conv outside the exit flow's last block). (B, H, W, C) -> (B, ceil(H/stride), ceil(W/stride),
    filters), "same" padding.
    """
    if relu_first:
        x = layers.Activation("relu", name=f"{name}_preactivation")(x)
    x = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}_depthwise"
    )(x)
    x = norm(f"{name}_depthwise_bn")(x)
    if depthwise_relu or not relu_first:
        x = layers.Activation("relu", name=f"{name}_depthwise_relu")(x)
    x = Conv2D(filters, 1, use_bias=False, name=f"{name}_pointwise")(x)
    x = norm(f"{name}_pointwise_bn")(x)
    if not relu_first:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def xception_unit(
    x, filters, *, stride: int, rate: int, skip: str, name: str, norm: NormSettings, depthwise_relu: bool = True
):
    """One Xception unit: three separable convs (`filters` wide each; the last strides) plus the skip.

    Returns (output, output of the second separable conv): (B, H/stride, W/stride, filters[2]) and
    (B, H, W, filters[1]). Every separable conv is at `rate`.
    """
    if skip not in SKIP_CONNECTIONS:
        raise ValueError(f"skip connection must be one of {SKIP_CONNECTIONS}, got {skip!r}")
    relu_first = skip != "none"
    shortcut, second = x, None
    for index, width in enumerate(filters):
        x = separable_conv_bn(
            x,
            width,
            stride=stride if index == 2 else 1,
            rate=rate,
            relu_first=relu_first,
            name=f"{name}_sepconv{index + 1}",
            norm=norm,
            depthwise_relu=depthwise_relu,
        )
        if index == 1:
            second = x
    if skip == "conv":
        shortcut = Conv2D(filters[2], 1, strides=stride, use_bias=False, name=f"{name}_shortcut")(shortcut)
        shortcut = norm(f"{name}_shortcut_bn")(shortcut)
    if skip != "none":
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x, second


def xception65_features(
    inputs, *, output_stride: int, norm: NormSettings, width_multiplier: float = 1.0, depthwise_relu: bool = True
) -> BackboneFeatures:
    """Aligned Xception-65 on preprocessed pixels (B, H, W, 3), dilated to reach `output_stride`.

    `depthwise_relu`: see `separable_conv_bn` (True: the paper's Fig. 4; False: the official code's network).

    Returns the output of the second separable conv of entry flow block 2 (stride 4, 256*w channels, the
    official decoder input) and the exit flow's output at `output_stride` (2048*w channels). A unit that
    would stride once the output stride is reached runs at stride 1 and every later unit doubles its rate.
    """
    if not isinstance(depthwise_relu, bool):
        raise ValueError(f"depthwise_relu must be true or false, got {depthwise_relu!r}")
    constants.check_output_stride(output_stride)
    x = inputs
    for index, (filters, stride) in enumerate(zip(constants.XCEPTION65_STEM_FILTERS, (2, 1), strict=True), start=1):
        name = f"entry_flow_conv1_{index}"
        x = Conv2D(
            scaled_width(filters, width_multiplier), 3, strides=stride, padding="same", use_bias=False, name=name
        )(x)
        x = norm(f"{name}_bn")(x)
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    schedule = AtrousSchedule(output_stride, stride_so_far=2)
    low_level = None
    for flow, block, units, filters, stride, skip in constants.XCEPTION65_BLOCKS:
        widths = tuple(scaled_width(width, width_multiplier) for width in filters)
        for unit in range(1, units + 1):
            unit_stride, rate = schedule.next_layer(stride)
            name = f"{flow}_block{block}_unit{unit}"
            x, second = xception_unit(
                x, widths, stride=unit_stride, rate=rate, skip=skip, name=name, norm=norm, depthwise_relu=depthwise_relu
            )
            if (flow, block, unit) == ("entry_flow", 2, 1):
                low_level = second
    return BackboneFeatures(low_level=low_level, high_level=x, output_stride=output_stride)


def official_weight_names() -> dict[str, tuple[str, str]]:
    """Official TF1 DeepLab variable name -> (our layer, weight slot), for every Xception-65 weight.

    Official scopes (tensorflow/models research/deeplab/core/xception.py, `xception_65`): "xception_65/
    entry_flow/conv1_1" and "conv1_2", then "xception_65/<flow>/block<b>/unit_<u>/xception_module/" with
    "separable_conv<i>_depthwise" and "separable_conv<i>_pointwise" (i = 1..3, each followed by "BatchNorm")
    and, in blocks with a conv skip, "shortcut"; our names drop "xception_module" ("entry_flow_block1_unit1_
    sepconv1_depthwise").
    """
    table = {}
    for index in (1, 2):
        name = f"entry_flow_conv1_{index}"
        table.update(official_conv_names(f"xception_65/entry_flow/conv1_{index}", name, f"{name}_bn"))
    for flow, block, units, _, _, skip in constants.XCEPTION65_BLOCKS:
        for unit in range(1, units + 1):
            official, ours = (
                f"xception_65/{flow}/block{block}/unit_{unit}/xception_module",
                f"{flow}_block{block}_unit{unit}",
            )
            for index in (1, 2, 3):
                for part in ("depthwise", "pointwise"):
                    table.update(
                        official_conv_names(
                            f"{official}/separable_conv{index}_{part}",
                            f"{ours}_sepconv{index}_{part}",
                            f"{ours}_sepconv{index}_{part}_bn",
                            depthwise=part == "depthwise",
                        )
                    )
            if skip == "conv":
                table.update(official_conv_names(f"{official}/shortcut", f"{ours}_shortcut", f"{ours}_shortcut_bn"))
    return table


def official_options(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The width from the stem's; no ReLU after the depthwise convs but the exit flow's last block's, as the
    official code."""
    stem = official_tensor(tensors, "xception_65/entry_flow/conv1_1/weights").shape[-1]
    return {"width_multiplier": stem / constants.XCEPTION65_STEM_FILTERS[0], "depthwise_relu": False}


SPEC = BackboneSpec(
    name="xception65",
    build=xception65_features,
    pixel_mean=constants.SIGNED_UNIT_PIXEL_MEAN_RGB,  # "tf" inputs: RGB scaled to [-1, 1]
    pixel_scale=constants.SIGNED_UNIT_PIXEL_SCALE,
    layer_groups={"stem": ("entry_flow_conv1_",), "backbone": ("entry_flow_", "middle_flow_", "exit_flow_")},
    options={"depthwise_relu": True},
    official=OfficialWeights(
        scope="xception_65",
        infer_options=official_options,
        weight_names=lambda build_config: official_weight_names(),
        batch_norm_epsilon=OFFICIAL_BATCH_NORM_EPSILON,
    ),
)
SPECS = (SPEC,)
