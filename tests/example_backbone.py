"""The smallest backbone that keeps the contract, to show what adding one takes.

A new backbone is this file and one line in `keras_deeplab.backbones.REGISTRY` (name -> the module holding its
`SPECS`); `tests/test_backbone_contract.py` adds that line for "example" while it runs. Its option `units`
passes through `build_model(backbone="example", units=2)` into `build` without being named anywhere else, is
saved in the model's config and shown by `keras-deeplab info`.
"""

from __future__ import annotations

from keras import layers

from keras_deeplab.backbones.base import AtrousSchedule, BackboneFeatures, BackboneSpec, scaled_width
from keras_deeplab.layers import Conv2D, NormSettings

STAGE_FILTERS = (8, 16, 24, 32, 48)  # five stages at stride 2: reductions 2, 4, 8, 16, 32
LOW_LEVEL_STAGE = 2  # reduction 4: the v3+ decoder's input


def example_features(
    inputs, *, output_stride: int, norm: NormSettings, width_multiplier: float = 1.0, units: int = 1
) -> BackboneFeatures:
    """`units` 3x3 conv + BN + ReLU per stage; a stage past the output stride dilates instead of striding."""
    if not 1 <= units <= 4:
        raise ValueError(f"units must be in 1..4, got {units}")
    schedule, x, low_level = AtrousSchedule(output_stride), inputs, None
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        for unit in range(1, units + 1):
            stride, rate = schedule.next_layer(2) if unit == 1 else (1, schedule.rate)
            name = f"stage{stage}_unit{unit}"
            x = Conv2D(
                scaled_width(filters, width_multiplier),
                3,
                strides=stride,
                dilation_rate=rate,
                padding="same",
                use_bias=False,
                name=f"{name}_conv",
            )(x)
            x = layers.ReLU(name=f"{name}_relu")(norm(f"{name}_bn")(x))
        if stage == LOW_LEVEL_STAGE:
            low_level = x
    return BackboneFeatures(low_level=low_level, high_level=x, output_stride=output_stride)


SPECS = (
    BackboneSpec(
        name="example",
        build=example_features,
        pixel_mean=(127.5, 127.5, 127.5),
        pixel_scale=1 / 127.5,
        layer_groups={"stem": ("stage1_",), "backbone": ("stage",)},
        options={"units": 1},
    ),
)
