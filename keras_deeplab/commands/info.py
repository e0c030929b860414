"""`keras-deeplab info`: parameters and multiply-adds of a configuration at an input size."""

from __future__ import annotations

import argparse
import json

from keras_deeplab import constants
from keras_deeplab.backbones import BACKBONES
from keras_deeplab.descriptors import VOC


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="parameter count and multiply-adds of a configuration")
    parser.add_argument("--backbone", default="resnet101", choices=BACKBONES)
    parser.add_argument("--output-stride", type=int, default=16, choices=constants.OUTPUT_STRIDES)
    parser.add_argument("--input-size", type=int, default=constants.CROP_SIZE)
    parser.add_argument("--num-classes", type=int, default=VOC.num_classes, help="logits channels (default: VOC's)")
    parser.add_argument("--stem", default="keras", choices=constants.RESNET_STEMS)
    parser.add_argument("--decoder", action="store_true", help="DeepLabv3+ decoder")
    parser.add_argument("--separable", action="store_true", help="atrous separable convs in ASPP/decoder")
    parser.add_argument("--extra-blocks", type=int, default=0, help="cascade copies of block4 (0..3)")
    parser.add_argument("--width-multiplier", type=float, default=1.0, help="backbone widths (MobileNetV2's alpha)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--summary", action="store_true", help="also print the Keras model summary")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keras_deeplab.backbones import backbone_spec
    from keras_deeplab.complexity import model_info

    info = model_info(
        backbone=args.backbone,
        output_stride=args.output_stride,
        input_size=args.input_size,
        num_classes=args.num_classes,
        stem=args.stem,
        decoder=args.decoder,
        separable=args.separable,
        extra_blocks=args.extra_blocks,
        width_multiplier=args.width_multiplier,
    )
    model = info.pop("model")
    if args.json:
        print(json.dumps(info))
        return 0
    if args.summary:
        model.summary(line_length=110)
    variant = (
        f"{args.stem} stem" if "stem" in backbone_spec(args.backbone).options else f"width {args.width_multiplier:g}"
    )
    name = f"DeepLabv3{'+' if args.decoder else ''} {args.backbone} ({variant})"
    print(f"{name}, output stride {args.output_stride}, input {args.input_size}x{args.input_size}")
    print(f"  feature map     {info['feature_size'][0]}x{info['feature_size'][1]}")
    print(f"  parameters      {info['parameters']:,}")
    print(f"  multiply-adds   {info['multiply_adds'] / 1e9:.2f} B")
    for part, count in info["multiply_adds_by_part"].items():
        if count:
            print(f"    {part:<13} {count / 1e9:.2f} B")
    return 0
