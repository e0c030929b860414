"""The contract between a backbone and the DeepLab heads."""

from __future__ import annotations

from typing import Any, NamedTuple


class BackboneFeatures(NamedTuple):
    """Symbolic features of a backbone: `low_level` at stride 4 (the v3+ decoder's input) and
    `high_level` at the output stride (the ASPP's input). Both (B, h, w, C)."""

    low_level: Any
    high_level: Any


class AtrousSchedule:
    """Stride so far and dilation rate of a backbone built layer by layer toward `output_stride`.

    Once the stride so far has reached `output_stride`, a layer that would stride runs at stride 1 instead
    and every later layer multiplies its dilation rate by that stride (the official DeepLab backbones' rule).
    """

    def __init__(self, output_stride: int, stride_so_far: int = 1) -> None:
        self.output_stride = output_stride
        self.stride_so_far = stride_so_far
        self.rate = 1

    def next_layer(self, stride: int) -> tuple[int, int]:
        """(stride, dilation rate) for a layer asked to stride by `stride`; updates the schedule."""
        rate = self.rate
        if stride > 1 and self.stride_so_far >= self.output_stride:
            self.rate *= stride
            return 1, rate
        self.stride_so_far *= stride
        return stride, rate


def scaled_width(filters: int, width_multiplier: float) -> int:
    """`filters` scaled by `width_multiplier`, rounded, at least 1."""
    return max(1, round(filters * width_multiplier))


# The variables of a TF1 slim batch norm, in the order Keras' BatchNormalization holds its weights.
BATCH_NORM_SLOTS = ("gamma", "beta", "moving_mean", "moving_variance")


def official_conv_names(
    scope: str, conv: str, batch_norm: str | None = None, *, depthwise: bool = False, bias: bool = False
) -> dict[str, tuple[str, str]]:
    """Rows of an official-name table for one TF1 slim conv: {official variable: (our layer, weight slot)}.

    `scope/weights` (`scope/depthwise_weights` when `depthwise`) -> the conv's "kernel"; `scope/biases` -> its
    "bias" when `bias`; `scope/BatchNorm/{gamma,beta,moving_mean,moving_variance}` -> `batch_norm`'s weights.
    """
    table = {f"{scope}/{'depthwise_weights' if depthwise else 'weights'}": (conv, "kernel")}
    if bias:
        table[f"{scope}/biases"] = (conv, "bias")
    if batch_norm is not None:
        table.update({f"{scope}/BatchNorm/{slot}": (batch_norm, slot) for slot in BATCH_NORM_SLOTS})
    return table
