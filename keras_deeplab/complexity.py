"""Model size and cost: parameters and the multiply-adds of one forward pass, counted per layer and per part."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import layers

from keras_deeplab import constants
from keras_deeplab.backbones import backbone_spec
from keras_deeplab.model import build_model


def layer_multiply_adds(layer: keras.layers.Layer) -> int:
    """Multiply-adds of one call of a conv or dense `layer` at its built (static) output shape; 0 otherwise.

    Conv2D: H_out * W_out * C_out * k_h * k_w * C_in / groups; DepthwiseConv2D: H_out * W_out * C_in * m * k_h *
    k_w; SeparableConv2D: its depthwise plus pointwise parts; Dense: positions * C_in * C_out. Biases,
    batch norm, activations, pooling and resizing are not counted (the papers' convention).
    """
    if not isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D | layers.SeparableConv2D | layers.Dense):
        return 0
    output_shape = tuple(layer.output.shape)
    input_channels = int(layer.input.shape[-1])
    if any(dim is None for dim in output_shape[1:]):
        raise ValueError(
            f"layer '{layer.name}' has a dynamic output shape {output_shape}: build the model with a fixed "
            "input_shape to count multiply-adds"
        )
    positions = math.prod(output_shape[1:-1])
    if isinstance(layer, layers.Dense):
        return positions * input_channels * int(layer.units)
    kernel_area = math.prod(layer.kernel_size)
    if isinstance(layer, layers.DepthwiseConv2D):
        return positions * input_channels * layer.depth_multiplier * kernel_area
    if isinstance(layer, layers.SeparableConv2D):
        depthwise_channels = input_channels * layer.depth_multiplier
        return positions * depthwise_channels * (kernel_area + int(layer.filters))
    return positions * int(layer.filters) * kernel_area * input_channels // layer.groups


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one forward pass of `model` (batch 1) at its built input size."""
    return sum(layer_multiply_adds(layer) for layer in model.layers)


def multiply_adds_by_part(model: keras.Model, part_prefixes: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Multiply-adds grouped by the first prefix (in order) that a layer's name starts with; rest in 'other'."""
    totals = dict.fromkeys([*part_prefixes, "other"], 0)
    for layer in model.layers:
        part = next((p for p, prefixes in part_prefixes.items() if layer.name.startswith(prefixes)), "other")
        totals[part] += layer_multiply_adds(layer)
    return totals


# The heads' parts; the backbone's come from its spec (`BackboneSpec.layer_groups`) and are matched first.
HEAD_PARTS = {
    "aspp": ("aspp_",),
    "fc6_fc7": ("fc6", "fc7"),  # v1/v2's fully connected layers as convs (LargeFOV, ASPP-v2 on VGG-16)
    "decoder": ("decoder_",),
    "logits": ("logits",),
}


def model_info(
    backbone: str = "resnet101",
    output_stride: int = 16,
    input_size: int = constants.CROP_SIZE,
    **build_options: Any,
) -> dict[str, Any]:
    """Build the configuration at `input_size` x `input_size` and count it.

    Returns {'parameters', 'multiply_adds', 'multiply_adds_by_part', 'output_shape', ...}; multiply-adds are
    of one forward pass at batch 1, conv and dense layers only.
    """
    model = build_model(
        output_stride=output_stride,
        backbone=backbone,
        input_shape=(input_size, input_size, 3),
        **build_options,
    )
    spec = backbone_spec(backbone)
    by_part = multiply_adds_by_part(model, {**spec.layer_groups, **HEAD_PARTS})
    return {
        "backbone": backbone,
        "output_stride": output_stride,
        "input_size": input_size,
        **{key: value for key, value in build_options.items() if key != "backbone_weights"},
        **{option: model.build_config[option] for option in spec.options},
        "parameters": model.count_params(),
        "multiply_adds": sum(by_part.values()),
        "multiply_adds_by_part": by_part,
        "feature_size": list(model.features["high_level"].shape[1:3]) if "high_level" in model.features else None,
        "output_shape": list(model.output.shape[1:]),
        "model": model,
    }
