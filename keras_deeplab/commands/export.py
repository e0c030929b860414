"""`keras-deeplab export`: a trained model as a SavedModel in the folder layout TF Serving loads."""

from __future__ import annotations

import argparse
import os

from keras_deeplab.commands.arguments import (
    add_model_option,
    add_output_stride_option,
    add_precision_option,
    positive_int,
)
from serving.settings import DEFAULT_MAX_PIXELS, IMAGES_SIGNATURE, SERVING_SIGNATURE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write a trained model as a SavedModel for TF Serving")
    add_model_option(parser, "a .keras model file or a training run folder")
    parser.add_argument("--out", required=True, help="model base path; the version is a sub-folder")
    parser.add_argument("--version", type=int, help="version number (default: one above the highest there)")
    add_output_stride_option(parser, "rebuild at this stride")
    add_precision_option(parser)
    parser.add_argument("--scores", action="store_true", help="also return the class probabilities")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, help="largest height x width")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keras_deeplab.loading import load_model
    from serving.export import export_saved_model, folder_bytes

    model = load_model(args.model, precision=args.precision)
    path = export_saved_model(
        model, args.out, args.version, output_stride=args.output_stride, scores=args.scores, max_pixels=args.max_pixels
    )
    size = folder_bytes(path)
    variables = folder_bytes(os.path.join(path, "variables"))
    parameters = model.count_params()
    print(f"wrote {path}: {size / 1e6:.1f} MB ({variables / parameters:.2f} bytes per parameter in variables/)")
    print(f"signatures: {SERVING_SIGNATURE} (encoded images), {IMAGES_SIGNATURE} (float32 pixels)")
    return 0
