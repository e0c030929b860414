"""Backbones by name: the features they return and the pixel convention their ImageNet weights expect."""

from __future__ import annotations

from collections.abc import Sequence

from keras_deeplab import constants
from keras_deeplab.backbones.base import BackboneFeatures
from keras_deeplab.backbones.mobilenetv2 import mobilenetv2_features
from keras_deeplab.backbones.resnet import resnet_features
from keras_deeplab.backbones.xception import xception65_features
from keras_deeplab.layers import NormSettings, PixelNormalization

RESNETS = tuple(constants.RESNET_STAGE_BLOCKS)
BACKBONES = (*RESNETS, "xception65", "mobilenetv2")
# Backbones whose official DeepLab configuration uses the light ASPP (1x1 branch and image pooling only).
LIGHT_ASPP_BACKBONES = ("mobilenetv2",)
# Layers of a backbone's keras.applications weight file that DeepLab does not build.
UNUSED_WEIGHT_LAYERS = {"mobilenetv2": constants.MOBILENETV2_UNUSED_WEIGHT_LAYERS}


def pixel_normalization(backbone: str) -> PixelNormalization:
    """The layer mapping RGB [0, 255] pixels to what `backbone`'s ImageNet weights were trained on."""
    _check_backbone(backbone)
    if backbone in RESNETS:
        return PixelNormalization(constants.RESNET_CAFFE_MEAN_BGR, reverse_channels=True, name="preprocessing")
    return PixelNormalization(
        constants.SIGNED_UNIT_PIXEL_MEAN_RGB, scale=constants.SIGNED_UNIT_PIXEL_SCALE, name="preprocessing"
    )


def backbone_features(
    backbone: str,
    pixels,
    *,
    output_stride: int,
    norm: NormSettings,
    stem: str,
    multi_grid: Sequence[int] | None,
    extra_blocks: int,
    width_multiplier: float,
    width_divisor: int = constants.MOBILENETV2_WIDTH_DIVISOR,
    depthwise_relu: bool = True,
) -> BackboneFeatures:
    """Build `backbone` on preprocessed `pixels` (B, H, W, 3); see BackboneFeatures for what comes back.

    `stem`, `multi_grid` and `extra_blocks` shape the ResNets only: other backbones accept them only at
    their defaults (`multi_grid` also None) and raise ValueError otherwise; `width_divisor` shapes MobileNetV2
    only and `depthwise_relu` Xception-65 only, likewise.
    """
    _check_backbone(backbone)
    if backbone != "mobilenetv2" and width_divisor != constants.MOBILENETV2_WIDTH_DIVISOR:
        raise ValueError(f"width_divisor applies to the mobilenetv2 backbone only, not to {backbone!r}")
    if backbone != "xception65" and not depthwise_relu:
        raise ValueError(f"depthwise_relu applies to the xception65 backbone only, not to {backbone!r}")
    if backbone not in RESNETS:
        _check_resnet_only_options(backbone, stem, multi_grid, extra_blocks)
        if backbone == "mobilenetv2":
            return mobilenetv2_features(
                pixels,
                output_stride=output_stride,
                norm=norm,
                width_multiplier=width_multiplier,
                width_divisor=width_divisor,
            )
        return xception65_features(
            pixels,
            output_stride=output_stride,
            norm=norm,
            width_multiplier=width_multiplier,
            depthwise_relu=depthwise_relu,
        )
    return resnet_features(
        pixels,
        depth=backbone,
        output_stride=output_stride,
        norm=norm,
        stem=stem,
        multi_grid=multi_grid,
        extra_blocks=extra_blocks,
        width_multiplier=width_multiplier,
    )


def _check_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")


def _check_resnet_only_options(backbone: str, stem: str, multi_grid: Sequence[int] | None, extra_blocks: int) -> None:
    given = {
        "stem": stem != constants.RESNET_STEMS[0],
        "multi_grid": multi_grid is not None and tuple(multi_grid) != constants.MULTI_GRID,
        "extra_blocks": extra_blocks != 0,
    }
    for option, is_set in given.items():
        if is_set:
            raise ValueError(
                f"{option} applies to the ResNet backbones only ({', '.join(RESNETS)}), not to {backbone!r}"
            )


__all__ = [
    "BACKBONES",
    "LIGHT_ASPP_BACKBONES",
    "RESNETS",
    "UNUSED_WEIGHT_LAYERS",
    "BackboneFeatures",
    "backbone_features",
    "pixel_normalization",
]
