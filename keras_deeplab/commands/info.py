"""`keras-deeplab info`: parameters and multiply-adds of a configuration at an input size."""

from __future__ import annotations

import argparse
import json

from keras_deeplab import constants
from keras_deeplab.backbones import BACKBONES
from keras_deeplab.commands.arguments import add_output_stride_option, backbone_options, name_value
from keras_deeplab.descriptors import VOC


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="parameter count and multiply-adds of a configuration")
    parser.add_argument("--backbone", default="resnet101", choices=BACKBONES)
    add_output_stride_option(parser, "input size / feature size", default=16)
    parser.add_argument("--input-size", type=int, default=constants.CROP_SIZE)
    parser.add_argument("--num-classes", type=int, default=VOC.num_classes, help="logits channels (default: VOC's)")
    parser.add_argument("--decoder", action="store_true", help="DeepLabv3+ decoder")
    parser.add_argument("--separable", action="store_true", help="atrous separable convs in ASPP/decoder")
    parser.add_argument(
        "--backbone-option",
        type=name_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of the backbone's own, e.g. stem=beta, extra_blocks=1 (ResNets), width_divisor=1 "
        "(MobileNetV2), depthwise_relu=false (Xception-65); an unknown one lists the backbone's",
    )
    parser.add_argument("--head", default="aspp", choices=constants.HEADS, help="v3 ASPP, v1 LargeFOV or v2 ASPP")
    parser.add_argument(
        "--fc6", type=_integers, default=None, metavar="K,R,F", help="largefov's fc6 kernel, rate, filters (3,12,1024)"
    )
    parser.add_argument(
        "--aspp-v2-rates", type=_integers, default=None, metavar="R,...", help="aspp_v2 branch rates (6,12,18,24)"
    )
    parser.add_argument("--width-multiplier", type=float, default=1.0, help="backbone widths (MobileNetV2's alpha)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--summary", action="store_true", help="also print the Keras model summary")
    parser.add_argument(
        "--published",
        action="store_true",
        help="print the path of the shipped published model (Google's MobileNetV2 DeepLabv3, VOC, .tflite) and exit",
    )
    parser.set_defaults(run=run)


def _integers(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(value) for value in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    if args.published:  # e.g. predict photo.jpg --model "$(keras-deeplab info --published)": no TensorFlow needed
        from keras_deeplab.files import PUBLISHED_MODEL

        print(PUBLISHED_MODEL)
        return 0
    from keras_deeplab.complexity import model_info

    options = backbone_options(args.backbone, args.backbone_option)
    info = model_info(
        backbone=args.backbone,
        output_stride=args.output_stride,
        input_size=args.input_size,
        num_classes=args.num_classes,
        decoder=args.decoder,
        separable=args.separable,
        width_multiplier=args.width_multiplier,
        **_head_options(args),
        **options,
    )
    model = info.pop("model")
    if args.json:
        print(json.dumps(info))
        return 0
    if args.summary:
        model.summary(line_length=110)
    variant = ", ".join([f"width {args.width_multiplier:g}", *(f"{name} {value}" for name, value in options.items())])
    if args.head == "largefov":
        kernel, rate, filters = info["fc6"]
        name = f"DeepLab v1 LargeFOV head (fc6 {kernel}x{kernel} rate {rate}, {filters} filters) {args.backbone}"
    elif args.head == "aspp_v2":
        name = f"DeepLab v2 ASPP head (rates {', '.join(map(str, info['aspp_v2_rates']))}) {args.backbone}"
    else:
        name = f"DeepLabv3{'+' if args.decoder else ''} {args.backbone}"
    name = f"{name} ({variant})"
    print(f"{name}, output stride {args.output_stride}, input {args.input_size}x{args.input_size}")
    if info["feature_size"]:
        print(f"  feature map     {info['feature_size'][0]}x{info['feature_size'][1]}")
    print(f"  parameters      {info['parameters']:,}")
    print(f"  multiply-adds   {info['multiply_adds'] / 1e9:.2f} B")
    for part, count in info["multiply_adds_by_part"].items():
        if count:
            print(f"    {part:<13} {count / 1e9:.2f} B")
    return 0


def _head_options(args: argparse.Namespace) -> dict:
    """build_model's head options: none for the default ASPP head (its info as before)."""
    if args.head == "aspp":
        return {}
    return {
        "head": args.head,
        "fc6": list(args.fc6 or constants.LARGEFOV_FC6),
        "aspp_v2_rates": list(args.aspp_v2_rates or constants.ASPP_L_RATES),
    }
