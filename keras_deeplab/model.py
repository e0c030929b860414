"""`build_model`: DeepLabv3 (ASPP) and DeepLabv3+ (ASPP + decoder) as one Keras functional model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers

from keras_deeplab import constants, heads
from keras_deeplab.backbones import backbone_build_options, backbone_spec
from keras_deeplab.descriptors import VOC
from keras_deeplab.layers import NormSettings, PixelNormalization, ResizeLike
from keras_deeplab.weights import load_backbone_weights


@keras.saving.register_keras_serializable(package="keras_deeplab")
class DeepLab(keras.Model):
    """A functional DeepLab model that remembers the arguments it was built from.

    Input: RGB pixels in [0, 255], float32 (B, H, W, 3). Output: class logits, float32 (B, H, W, classes),
    at the input's height and width. `build_config` (the `build_model` arguments) is what `get_config`
    saves, so `.keras` files rebuild the same graph, and `with_output_stride` rebuilds it at another stride.
    """

    def __init__(self, inputs, outputs, build_config: dict[str, Any], features=None, **kwargs) -> None:
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.build_config = dict(build_config)
        self.features = dict(features or {})

    def get_config(self) -> dict[str, Any]:
        return {"build_config": self.build_config, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DeepLab:
        return build_model(**config["build_config"], name=config.get("name", "deeplab"))

    def with_output_stride(self, output_stride: int) -> DeepLab:
        """The same network at another output stride, sharing no variables but holding equal weights."""
        other = build_model(**{**self.build_config, "output_stride": output_stride}, name=self.name)
        other.set_weights(self.get_weights())
        return other

    def feature_model(self) -> keras.Model:
        """A model on the same layers returning {'low_level', 'high_level', 'logits'}: backbone features too."""
        return keras.Model(self.input, {**self.features, "logits": self.outputs[0]}, name=f"{self.name}_features")


def build_model(
    output_stride: int = 16,
    num_classes: int = VOC.num_classes,
    backbone: str = "resnet101",
    decoder: bool = False,
    *,
    stem: str = "keras",
    multi_grid: Sequence[int] | None = constants.MULTI_GRID,
    extra_blocks: int = 0,
    separable: bool = False,
    width_multiplier: float = 1.0,
    aspp_filters: int = constants.ASPP_FILTERS,
    light_aspp: bool | None = None,
    dropout_rate: float = constants.ASPP_DROPOUT_RATE,
    batch_norm_momentum: float = constants.BATCH_NORM_MOMENTUM,
    sync_batch_norm: bool = False,
    input_shape: Sequence[int | None] = (None, None, 3),
    align_corners: bool = False,
    width_divisor: int = constants.MOBILENETV2_WIDTH_DIVISOR,
    depthwise_relu: bool = True,
    backbone_weights: str | None = None,
    name: str = "deeplab",
) -> DeepLab:
    """Build DeepLabv3 (`decoder=False`) or DeepLabv3+ (`decoder=True`).

    Args:
      output_stride: input size / final feature size: 8, 16 or 32. Weights are interchangeable between
        strides (`with_output_stride`), as the paper trains at 16 and evaluates at 8.
      num_classes: logits channels.
      backbone: one of keras_deeplab.backbones.BACKBONES: "resnet50", "resnet101", "xception65" (the v3+ paper's
        aligned Xception) or "mobilenetv2".
      stem: "keras" (7x7 conv, loads keras.applications weights) or "beta" (three 3x3 convs); ResNets only.
      multi_grid: unit rates of block4 and the cascade blocks, multiplied by the stage's rate; ResNets only.
      extra_blocks: 0..3 cascaded copies of block4 (block5..block7) with doubling rates; ResNets only.
      separable: atrous separable 3x3 convs in the ASPP and decoder (v3+).
      width_multiplier: scales every backbone width (1.0 is the paper's network; small values for tests);
        MobileNetV2's `alpha` (widths rounded to multiples of 8 as keras.applications does).
      light_aspp: ASPP with the image pooling and 1x1 branches only; None: the backbone's official choice
        (light for MobileNetV2, full otherwise).
      sync_batch_norm: batch statistics averaged over all replicas of a distribution strategy.
      input_shape: (H, W, 3); None for any size.
      align_corners: every bilinear upsampling (image pooling, decoder, logits) maps corner pixels onto corner
        pixels, as TF1's `resize_bilinear(align_corners=True)` in the official DeepLab code; False: TF2's
        half-pixel centres. Models imported from Google's published weights set it (`import_weights`).
      width_divisor: MobileNetV2 rounds its scaled widths to multiples of this: 8 as keras.applications does;
        the official DeepLab MobileNetV2 uses 1 at a depth multiplier other than 1 (e.g. 12 channels at 0.5
        where keras has 16). MobileNetV2 only.
      depthwise_relu: Xception-65 puts a ReLU after the batch norm of every depthwise conv (the v3+ paper);
        False: only in the exit flow's last block, as the official code does. Xception-65 only.
      backbone_weights: a local keras.applications ImageNet weight file (.h5) to load into the backbone.

    Returns: a DeepLab model mapping RGB [0, 255] (B, H, W, 3) to float32 logits (B, H, W, num_classes).
    """
    spec = backbone_spec(backbone)
    if light_aspp is None:
        light_aspp = spec.light_aspp
    options = backbone_build_options(
        backbone,
        {
            "stem": stem,
            "multi_grid": multi_grid,
            "extra_blocks": extra_blocks,
            "width_divisor": width_divisor,
            "depthwise_relu": depthwise_relu,
        },
        {
            "stem": constants.RESNET_STEMS[0],
            "multi_grid": constants.MULTI_GRID,
            "extra_blocks": 0,
            "width_divisor": constants.MOBILENETV2_WIDTH_DIVISOR,
            "depthwise_relu": True,
        },
    )
    build_config = {
        "output_stride": output_stride,
        "num_classes": num_classes,
        "backbone": backbone,
        "decoder": decoder,
        "stem": stem,
        "multi_grid": list(multi_grid) if multi_grid else None,
        "extra_blocks": extra_blocks,
        "separable": separable,
        "width_multiplier": width_multiplier,
        "aspp_filters": aspp_filters,
        "light_aspp": light_aspp,
        "dropout_rate": dropout_rate,
        "batch_norm_momentum": batch_norm_momentum,
        "sync_batch_norm": sync_batch_norm,
        "input_shape": list(input_shape),
        "align_corners": align_corners,
        "width_divisor": width_divisor,
        "depthwise_relu": depthwise_relu,
    }
    norm = NormSettings(momentum=batch_norm_momentum, synchronized=sync_batch_norm)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    pixels = PixelNormalization(
        spec.pixel_mean, scale=spec.pixel_scale, reverse_channels=spec.reverse_channels, name="preprocessing"
    )(inputs)
    features = spec.build(pixels, output_stride=output_stride, norm=norm, width_multiplier=width_multiplier, **options)
    x = heads.aspp(
        features.high_level,
        output_stride=output_stride,
        norm=norm,
        filters=aspp_filters,
        separable=separable,
        dropout_rate=dropout_rate,
        light=light_aspp,
        align_corners=align_corners,
    )
    if decoder:
        x = heads.decoder(x, features.low_level, norm=norm, separable=separable, align_corners=align_corners)
    x = layers.Conv2D(num_classes, 1, name="logits")(x)
    logits = ResizeLike(align_corners, name="logits_upsample", dtype="float32")([x, inputs])
    model = DeepLab(inputs, logits, build_config, features=features.tensors(), name=name)
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights, unused_layers=spec.unused_weight_layers)
    return model
