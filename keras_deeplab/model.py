"""`build_model`: DeepLab v1 (LargeFOV), v2 (ASPP, summed scores; multi-scale inputs), v3 (ASPP) and v3+ (ASPP +
decoder) as one Keras functional model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers

from keras_deeplab import constants, heads
from keras_deeplab.backbones import backbone_build_options, backbone_spec
from keras_deeplab.descriptors import VOC
from keras_deeplab.layers import Conv2D, NormSettings, PixelNormalization, ResizeLike, ScaleImage
from keras_deeplab.precision import dtype_policy
from keras_deeplab.weights import load_backbone_weights

# Sane ranges of the options that size a network, checked before anything is built (issue 24: a 3 MB .keras
# whose build_config said num_classes=10,000,000 took past 8 GB before failing). The most classes of any
# segmentation label set in use is ADE20K-full's 3688; widths past 8192 channels and multipliers past 4 are no
# DeepLab's; an input side past 16384 pixels is 16 times the default pixel limit's.
MAX_NUM_CLASSES = 4096
MAX_FILTERS = 8192
MAX_WIDTH_MULTIPLIER = 4.0
MAX_INPUT_SIDE = 16384
MAX_KERNEL_SIZE = 15
MAX_RATE = 512
MAX_SCALES = 8
MAX_SCALE = 4.0


@keras.saving.register_keras_serializable(package="keras_deeplab")
class DeepLab(keras.Model):
    """A functional DeepLab model that remembers the arguments it was built from.

    Input: RGB pixels in [0, 255], float32 (B, H, W, 3). Output: class logits, float32 (B, H, W, classes),
    at the input's height and width. `build_config` (the `build_model` arguments) is what `get_config`
    saves, so `.keras` files rebuild the same graph, and `with_output_stride` rebuilds it at another stride.
    """

    def __init__(
        self, inputs, outputs, build_config: dict[str, Any], features=None, scale_logits=None, **kwargs
    ) -> None:
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.build_config = dict(build_config)
        self.features = dict(features or {})
        # multi_scale_inputs: {"logits_scale_S": each scale's logits at the input size}, the loss's other terms
        self.scale_logits = dict(scale_logits or {})

    def get_config(self) -> dict[str, Any]:
        return {"build_config": self.build_config, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DeepLab:
        build_config = config["build_config"]
        if not isinstance(build_config, dict):
            raise ValueError(f"build_config must be a JSON object, got {type(build_config).__name__}")
        if build_config.get("backbone_weights") is not None:  # build_model never saves it: a crafted file
            raise ValueError(
                "build_config names backbone_weights: a saved model holds its weights, and loading one opens no "
                "file named inside it"
            )
        return build_model(**build_config, name=config.get("name", "deeplab"))

    @property
    def mean_pixel(self) -> tuple[float, float, float]:
        """The RGB pixel in [0, 255] that the network's input normalisation maps to zero: what the official
        code pads images with (`--fit-to`), 127.5 for the [-1, 1] backbones, the ImageNet mean for the others."""
        network = self.get_layer("scale_network") if self.scale_logits else self
        return network.get_layer("preprocessing").input_mean

    def with_output_stride(self, output_stride: int) -> DeepLab:
        """The same network at another output stride, sharing no variables but holding equal weights."""
        return self.rebuilt(output_stride=output_stride)

    def with_dtype_policy(self, policy: str) -> DeepLab:
        """The same network under the Keras dtype policy `policy` ("float32", "mixed_bfloat16", "mixed_float16":
        float32 variables, the arithmetic in the policy's compute dtype, float32 logits), with equal weights."""
        return self.rebuilt(policy=policy)

    def rebuilt(self, policy: str | None = None, **changes: Any) -> DeepLab:
        """The network rebuilt from `build_config` with `changes` (under dtype policy `policy`, else the global
        one), sharing no variables but holding equal weights."""
        with dtype_policy(policy or keras.mixed_precision.global_policy().name):
            other = build_model(**{**self.build_config, **changes}, name=self.name)
        other.set_weights(self.get_weights())
        return other

    def feature_model(self) -> keras.Model:
        """A model on the same layers returning {'low_level', 'high_level', 'logits'}: backbone features too.

        With multi_scale_inputs: {'logits', 'logits_scale_1.0', 'logits_scale_0.75', ...} (no backbone features:
        the backbone runs once per scale inside the shared sub-model "scale_network")."""
        outputs = {**self.features, **self.scale_logits, "logits": self.outputs[0]}
        return keras.Model(self.input, outputs, name=f"{self.name}_features")

    def training_model(self) -> keras.Model:
        """The same layers returning [fused logits, each scale's logits] with multi_scale_inputs (v2 puts a loss on
        every one); the model itself otherwise."""
        if not self.scale_logits:
            return self
        return keras.Model(self.input, [self.outputs[0], *self.scale_logits.values()], name=f"{self.name}_training")


def build_model(
    output_stride: int = 16,
    num_classes: int = VOC.num_classes,
    backbone: str = "resnet101",
    decoder: bool = False,
    *,
    separable: bool = False,
    width_multiplier: float = 1.0,
    aspp_filters: int = constants.ASPP_FILTERS,
    light_aspp: bool | None = None,
    dropout_rate: float = constants.ASPP_DROPOUT_RATE,
    batch_norm_momentum: float = constants.BATCH_NORM_MOMENTUM,
    sync_batch_norm: bool = False,
    input_shape: Sequence[int | None] = (None, None, 3),
    align_corners: bool = False,
    head: str = "aspp",
    fc6: Sequence[int] = constants.LARGEFOV_FC6,
    aspp_v2_rates: Sequence[int] = constants.ASPP_L_RATES,
    multi_scale_inputs: Sequence[float] | None = None,
    backbone_weights: str | None = None,
    name: str = "deeplab",
    **backbone_options: Any,
) -> DeepLab:
    """Build DeepLabv3 (`decoder=False`) or DeepLabv3+ (`decoder=True`); v1 and v2 with `head`.

    Args:
      output_stride: input size / final feature size: 8, 16 or 32. Weights are interchangeable between
        strides (`with_output_stride`), as the paper trains at 16 and evaluates at 8.
      num_classes: logits channels.
      backbone: one of keras_deeplab.backbones.BACKBONES: "resnet50", "resnet101", "xception65" (the v3+ paper's
        aligned Xception), "mobilenetv2" or "vgg16" (DeepLab v1/v2's VGG-16, no batch norm).
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
      head: "aspp" (v3, with `decoder` v3+), "largefov" (v1: pool5a, fc6, fc7, fc8) or "aspp_v2" (v2: a branch
        per `aspp_v2_rates`, class scores summed; fc6/fc7/fc8 branches on VGG-16, one 3x3 conv on the others). The
        v1/v2 heads have no batch norm and take their rates as given at any output stride (the papers': 8).
      fc6: (kernel size, rate, filters) of v1's fc6 (LargeFOV's (3, 12, 1024); constants.V1_FC6_VARIANTS); with
        "aspp_v2" its kernel size and filters make each VGG-16 branch's fc6.
      aspp_v2_rates: the "aspp_v2" branches' rates: ASPP-L (6, 12, 18, 24) or ASPP-S (2, 4, 8, 12).
      multi_scale_inputs: v2's "MSC", e.g. (1.0, 0.75, 0.5): the network (one shared sub-model, "scale_network")
        runs on the image resized to each scale; each scale's class scores are resized to those of scale 1.0
        (which must be listed) and fused by the per-pixel maximum. The output is the fused logits at the input
        size; `training_model()` adds each scale's logits for the loss.
      backbone_weights: a local keras.applications ImageNet weight file (.h5) to load into the backbone; for
        VGG-16 its include_top file also initialises fc6/fc7 (`backbones.vgg.decimated_fc_weights`).
      **backbone_options: the options the backbone's spec declares, with its defaults
        (`backbone_spec(backbone).options`), described by its builder: the ResNets' stem, multi_grid,
        extra_blocks and resnet_layout (`backbones.resnet.resnet_features`), MobileNetV2's width_divisor,
        Xception-65's depthwise_relu. Saved in `build_config`; another backbone's option is refused unless at
        its default.

    Returns: a DeepLab model mapping RGB [0, 255] (B, H, W, 3) to float32 logits (B, H, W, num_classes).
    """
    _check_sizes(output_stride, num_classes, width_multiplier, aspp_filters, input_shape)
    spec = backbone_spec(backbone)
    if light_aspp is None:
        light_aspp = spec.light_aspp
    options = backbone_build_options(backbone, backbone_options)
    build_config = {
        "output_stride": output_stride,
        "num_classes": num_classes,
        "backbone": backbone,
        "decoder": decoder,
        "separable": separable,
        "width_multiplier": width_multiplier,
        "aspp_filters": aspp_filters,
        "light_aspp": light_aspp,
        "dropout_rate": dropout_rate,
        "batch_norm_momentum": batch_norm_momentum,
        "sync_batch_norm": sync_batch_norm,
        "input_shape": list(input_shape),
        "align_corners": align_corners,
        **options,
    }
    fc6, aspp_v2_rates, scales = _check_head_options(head, decoder, fc6, aspp_v2_rates, multi_scale_inputs)
    if head != "aspp":  # absent for v3/v3+ models: their build_config (and saved files, checkpoints) as before
        build_config.update(head=head, fc6=list(fc6), aspp_v2_rates=list(aspp_v2_rates))
    if scales is not None:
        build_config["multi_scale_inputs"] = list(scales)
    norm = NormSettings(momentum=batch_norm_momentum, synchronized=sync_batch_norm)
    inputs = keras.Input(shape=tuple(input_shape), name="scaled_image" if scales else "image")
    pixel_mean, pixel_scale, reverse_channels = (
        spec.pixel_normalization(options)
        if spec.pixel_normalization is not None
        else (spec.pixel_mean, spec.pixel_scale, spec.reverse_channels)
    )
    pixels = PixelNormalization(pixel_mean, scale=pixel_scale, reverse_channels=reverse_channels, name="preprocessing")(
        inputs
    )
    features = spec.build(pixels, output_stride=output_stride, norm=norm, width_multiplier=width_multiplier, **options)
    if head == "largefov":
        scores = heads.largefov(features.high_level, num_classes=num_classes, fc6=fc6)
    elif head == "aspp_v2":
        scores = heads.aspp_v2(
            features.high_level, num_classes=num_classes, rates=aspp_v2_rates, fc6=fc6 if spec.fc_head else None
        )
    else:
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
        scores = Conv2D(num_classes, 1, name="logits")(x)
    if scales is None:
        logits = ResizeLike(align_corners, name="logits_upsample", dtype="float32")([scores, inputs])
        model = DeepLab(inputs, logits, build_config, features=features.tensors(), name=name)
    else:
        network = keras.Model(inputs, scores, name="scale_network")
        model = _multi_scale_model(network, scales, tuple(input_shape), align_corners, build_config, name)
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights, unused_layers=spec.unused_weight_layers)
        if spec.load_head_weights is not None:
            spec.load_head_weights(model, backbone_weights)
    return model


def _check_sizes(output_stride, num_classes, width_multiplier, aspp_filters, input_shape) -> None:
    """ValueError naming the first option that would size the network past its sane range (MAX_* above)."""
    constants.check_output_stride(output_stride)

    def whole(value, low: int, high: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    if not whole(num_classes, 1, MAX_NUM_CLASSES):
        raise ValueError(f"num_classes must be an integer from 1 to {MAX_NUM_CLASSES}, got {num_classes!r}")
    if not whole(aspp_filters, 1, MAX_FILTERS):
        raise ValueError(f"aspp_filters must be an integer from 1 to {MAX_FILTERS}, got {aspp_filters!r}")
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)):
        raise ValueError(f"width_multiplier must be a number, got {width_multiplier!r}")
    if not 0 < width_multiplier <= MAX_WIDTH_MULTIPLIER:
        raise ValueError(
            f"width_multiplier must be above 0 and at most {MAX_WIDTH_MULTIPLIER:g}, got {width_multiplier}"
        )
    shape = list(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if (
        shape is None
        or len(shape) != 3
        or shape[2] != 3
        or not all(side is None or whole(side, 1, MAX_INPUT_SIDE) for side in shape[:2])
    ):
        raise ValueError(f"input_shape must be (H, W, 3), each side None or 1 to {MAX_INPUT_SIDE}, got {input_shape!r}")


def _check_head_options(head, decoder, fc6, aspp_v2_rates, multi_scale_inputs):
    """(fc6, aspp_v2_rates, scales) as tuples; ValueError naming the option that does not fit."""
    if head not in constants.HEADS:
        raise ValueError(f"head must be one of {constants.HEADS}, got {head!r}")
    if decoder and head != "aspp":
        raise ValueError(f"decoder=True needs head='aspp' (the v3+ decoder reads the ASPP output), got {head!r}")
    fc6 = tuple(fc6)
    if len(fc6) != 3 or not all(isinstance(value, int) and value > 0 for value in fc6):
        raise ValueError(f"fc6 must be (kernel size, rate, filters), three positive integers, got {list(fc6)}")
    if fc6[0] > MAX_KERNEL_SIZE or fc6[1] > MAX_RATE or fc6[2] > MAX_FILTERS:
        raise ValueError(
            f"fc6 must be (kernel size, rate, filters) of at most ({MAX_KERNEL_SIZE}, {MAX_RATE}, {MAX_FILTERS}), "
            f"got {list(fc6)}"
        )
    aspp_v2_rates = tuple(aspp_v2_rates)
    if not 0 < len(aspp_v2_rates) <= MAX_SCALES or not all(
        isinstance(rate, int) and 0 < rate <= MAX_RATE for rate in aspp_v2_rates
    ):
        raise ValueError(
            f"aspp_v2_rates must be 1 to {MAX_SCALES} integers from 1 to {MAX_RATE}, got {list(aspp_v2_rates)}"
        )
    scales = None
    if multi_scale_inputs is not None:
        scales = tuple(float(scale) for scale in multi_scale_inputs)
        if (
            1.0 not in scales
            or min(scales) <= 0
            or max(scales) > MAX_SCALE
            or len(set(scales)) != len(scales)
            or len(scales) > MAX_SCALES
        ):
            raise ValueError(
                f"multi_scale_inputs must be up to {MAX_SCALES} distinct scales in (0, {MAX_SCALE:g}] including 1.0, "
                f"got {list(scales)}"
            )
    return fc6, aspp_v2_rates, scales


def _multi_scale_model(network, scales, input_shape, align_corners, build_config, name) -> DeepLab:
    """v2's MSC around the single-scale `network` (image -> class scores at the feature resolution)."""
    inputs = keras.Input(shape=input_shape, name="image")
    scores = {}
    for scale in scales:
        image = inputs if scale == 1.0 else ScaleImage(scale, align_corners, name=f"image_scale_{scale:g}")(inputs)
        scores[scale] = network(image)
    reference = scores[1.0]
    aligned = [
        value if scale == 1.0 else ResizeLike(align_corners, name=f"scores_resize_{scale:g}")([value, reference])
        for scale, value in scores.items()
    ]
    fused = layers.Maximum(name="scores_max")(aligned)
    logits = ResizeLike(align_corners, name="logits_upsample", dtype="float32")([fused, inputs])
    scale_logits = {
        f"logits_scale_{scale:g}": ResizeLike(align_corners, name=f"logits_upsample_{scale:g}", dtype="float32")(
            [value, inputs]
        )
        for scale, value in scores.items()
    }
    return DeepLab(inputs, logits, build_config, scale_logits=scale_logits, name=name)
