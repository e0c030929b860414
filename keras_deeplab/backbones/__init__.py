"""Backbones by name: the features they return and the pixel convention their ImageNet weights expect."""

from __future__ import annotations

from collections.abc import Sequence

from keras_deeplab import constants
from keras_deeplab.backbones.base import BackboneFeatures
from keras_deeplab.backbones.resnet import resnet_features
from keras_deeplab.layers import NormSettings, PixelNormalization

BACKBONES = tuple(constants.RESNET_STAGE_BLOCKS)


def pixel_normalization(backbone: str) -> PixelNormalization:
    """The layer mapping RGB [0, 255] pixels to what `backbone`'s ImageNet weights were trained on."""
    _check_backbone(backbone)
    return PixelNormalization(constants.RESNET_CAFFE_MEAN_BGR, reverse_channels=True, name="preprocessing")


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
) -> BackboneFeatures:
    """Build `backbone` on preprocessed `pixels` (B, H, W, 3); see BackboneFeatures for what comes back."""
    _check_backbone(backbone)
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


__all__ = ["BACKBONES", "BackboneFeatures", "backbone_features", "pixel_normalization"]
