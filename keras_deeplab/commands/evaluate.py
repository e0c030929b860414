"""`keras-deeplab evaluate`: full-resolution mIoU of a trained model on a dataset split."""

from __future__ import annotations

import argparse
import json

from keras_deeplab import constants
from keras_deeplab.commands.arguments import positive_int, scales


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="mIoU of a trained model on a dataset split, full resolution")
    parser.add_argument("--model", required=True, help="a .keras model file or a training run folder")
    parser.add_argument("--format", required=True, help="dataset format, e.g. voc, cityscapes, ade20k, synthetic")
    parser.add_argument("--root", default=None, help="dataset folder (not needed for synthetic)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--output-stride", type=int, default=None, choices=constants.OUTPUT_STRIDES)
    parser.add_argument("--scales", type=scales, default=(1.0,), help="e.g. 0.5,0.75,1.0,1.25,1.5,1.75")
    parser.add_argument("--flip", action="store_true", help="average with the left-right flipped image")
    parser.add_argument("--max-examples", type=positive_int, default=None, help="only the first N examples")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keras_deeplab.evaluation import evaluate, format_table

    results = evaluate(
        args.model,
        args.format,
        args.root,
        args.split,
        output_stride=args.output_stride,
        scales=args.scales,
        flip=args.flip,
        max_examples=args.max_examples,
        progress=not args.json,
    )
    print(json.dumps(results) if args.json else format_table(results))
    return 0
