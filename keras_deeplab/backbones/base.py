"""The contract between a backbone and the DeepLab heads, and the spec each backbone file registers.

Plain Python (no Keras): the registry names backbones for the command line's `--help` without loading Keras.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

LOW_LEVEL_REDUCTION = 4  # the v3+ decoder's input: the stride-4 feature


class FeatureInfo(NamedTuple):
    """One feature a backbone gives the heads: its name, channels and reduction (input size / feature size)."""

    name: str
    channels: int
    reduction: int


@dataclasses.dataclass(frozen=True)
class BackboneFeatures:
    """Symbolic features of a backbone, both (B, h, w, C): `low_level` at stride 4 (the v3+ decoder's input)
    and `high_level` at `output_stride` (the ASPP's input)."""

    low_level: Any
    high_level: Any
    output_stride: int

    def tensors(self) -> dict[str, Any]:
        """{'low_level': tensor, 'high_level': tensor}."""
        return {"low_level": self.low_level, "high_level": self.high_level}

    def feature_info(self) -> list[FeatureInfo]:
        """Channels and reduction of each feature (timm's `feature_info`, keras-hub's `pyramid_outputs`)."""
        return [
            FeatureInfo("low_level", int(self.low_level.shape[-1]), LOW_LEVEL_REDUCTION),
            FeatureInfo("high_level", int(self.high_level.shape[-1]), self.output_stride),
        ]


@dataclasses.dataclass(frozen=True)
class OfficialWeights:
    """How Google's published DeepLab weights (TF1 checkpoints, frozen graphs, TFLite) of this backbone map onto it.

    `scope`: the official network's top-level variable scope ("resnet_v1_101", "MobilenetV2", ...), which tells
    an importer which backbone a file holds. `infer_options(tensors)`: the `build_model` options the file's
    tensors (official name -> array) imply, `width_multiplier` and the backbone's own options; a ValueError
    says what does not fit (`official_tensor` names a tensor that is missing). `weight_names(build_config)`:
    {official variable: (our layer, weight slot)} for every backbone weight of a model built from
    `build_config`; a ValueError where that model cannot take official weights. `batch_norm_epsilon`: the epsilon
    the official batch-norm statistics were computed with.
    """

    scope: str
    infer_options: Callable[[Mapping[str, Any]], dict[str, Any]]
    weight_names: Callable[[Mapping[str, Any]], dict[str, tuple[str, str]]]
    batch_norm_epsilon: float


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Everything the model builder needs to know about one backbone, kept in the backbone's own file.

    `build(pixels, *, output_stride, norm, width_multiplier, **options)` returns BackboneFeatures. `options`:
    the backbone's own `build_model` options with their defaults ({"width_divisor": 8} for MobileNetV2);
    `build_model` passes them through by name, saves them in the model's config and checks them against this
    table, so a new option is declared here and in `build` only. `layer_groups`: {part: layer-name prefixes}
    of the backbone's layers, in matching order ("stem", "backbone"), which the cost breakdown reports.
    `pixel_mean`, `pixel_scale` and `reverse_channels` give the normalisation its ImageNet weights expect
    (x - mean) * scale, in BGR order when `reverse_channels`. `imagenet_weights` names keras.applications'
    no-top weight file; `unused_weight_layers` are layers of that file the backbone leaves out on purpose.
    `light_aspp`: the official configuration's ASPP (image pooling and 1x1 branches only). `fc_head`: v2's ASPP
    head puts fc6/fc7 (the backbone's fully connected layers as convs) in each branch, as on VGG-16; otherwise
    each branch is one 3x3 conv to the classes, as on ResNet-101. `pixel_normalization(options)`: (mean,
    scale, reverse_channels) for the backbone's build options, where they change the input it expects (the
    ResNets' slim layout); None: the three fields. `load_head_weights(model, path)`: loads the head layers that
    the ImageNet file also initialises (VGG-16's fc1/fc2 as fc6/fc7) and returns their names; None: the file
    initialises no head layer. `official`: how the published DeepLab weights map onto it; None: there are none.
    """

    name: str
    build: Callable[..., BackboneFeatures]
    pixel_mean: Sequence[float]
    layer_groups: Mapping[str, tuple[str, ...]]
    pixel_scale: float = 1.0
    reverse_channels: bool = False
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    light_aspp: bool = False
    imagenet_weights: str = ""
    unused_weight_layers: Collection[str] = ()
    fc_head: bool = False
    load_head_weights: Callable[[Any, str], list[str]] | None = None
    pixel_normalization: Callable[[dict[str, Any]], tuple[Sequence[float], float, bool]] | None = None
    official: OfficialWeights | None = None


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


def official_tensor(tensors: Mapping[str, Any], name: str) -> Any:
    """`tensors[name]`; a ValueError naming it where an official file lacks it."""
    if name not in tensors:
        raise ValueError(f"no tensor {name!r}, which every official DeepLab of this kind has")
    return tensors[name]
