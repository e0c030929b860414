"""`keras-deeplab predict`: class maps of image files, as palette PNGs and overlay JPEGs."""

from __future__ import annotations

import argparse

from keras_deeplab.commands.arguments import (
    add_crf_options,
    add_dataset_option,
    add_fit_to_option,
    add_model_option,
    add_output_stride_option,
    add_precision_option,
    crf_settings,
    number_pair,
    positive_int,
    scales,
)
from serving.settings import DEFAULT_MAX_PIXELS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="class maps of image files: palette PNG and overlay JPEG")
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="JPEG, PNG, GIF or BMP files (EXIF orientation applied)"
    )
    add_model_option(parser, "a .keras file, a training run folder, a SavedModel folder or a .tflite file")
    parser.add_argument("--out", required=True, help="folder for <stem>.png and <stem>_overlay.jpg (with a legend)")
    parser.add_argument("--scales", type=scales, default=(1.0,), help="e.g. 0.5,0.75,1.0,1.25,1.5,1.75")
    parser.add_argument("--flip", action="store_true", help="also predict the left-right mirrored image")
    add_fit_to_option(parser)
    add_output_stride_option(parser, "Keras models only: rebuild at this stride")
    add_precision_option(parser)
    parser.add_argument("--input-range", type=number_pair, help=".tflite only: pixel range it takes, e.g. -1,1")
    add_crf_options(parser, "refine with the fully connected CRF (DeepLab v1/v2)")
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        help=f"largest image, H x W (default {DEFAULT_MAX_PIXELS}, less for a model of over 64 classes: its class "
        "probabilities then take 12 GB at most)",
    )
    add_dataset_option(parser, "class names and colours of the pictures (default: from the model's number of classes)")
    parser.add_argument("--no-legend", action="store_true", help="overlays without the strip naming the classes")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from serving.predict import load_predictor, predict_files

    predictor = load_predictor(
        args.model, output_stride=args.output_stride, input_range=args.input_range, precision=args.precision
    )
    print(f"predicting with {predictor.description}")
    crf = crf_settings(args)
    written = predict_files(
        args.images,
        predictor,
        args.out,
        args.scales,
        args.flip,
        args.max_pixels,
        crf,
        legend=not args.no_legend,
        fit_to=args.fit_to,
        dataset=args.dataset,
    )
    for image_path, (mask_path, overlay_path) in zip(args.images, written, strict=True):
        print(f"{image_path}: {mask_path}, {overlay_path}")
    return 0
