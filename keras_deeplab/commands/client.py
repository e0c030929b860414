"""`keras-deeplab client`: segment image files with a TF Serving REST endpoint (see serving/client.py)."""

from __future__ import annotations

import argparse

from keras_deeplab.commands.arguments import add_dataset_option, positive_int
from serving.settings import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("client", help="segment images with a TF Serving REST endpoint")
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="JPEG, PNG, GIF or BMP files (sent upright: EXIF orientation applied)",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="server root (default %(default)s)")
    parser.add_argument("--name", default="deeplab", help="model name (default %(default)s)")
    parser.add_argument("--version", type=int, help="model version (default: the server's latest)")
    parser.add_argument("--signature", help="signature name (default: serving_default)")
    parser.add_argument("--columnar", action="store_true", help='send {"inputs": ...} instead of {"instances": ...}')
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="images per request")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
    parser.add_argument(
        "--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, help="largest image, H x W (default %(default)s)"
    )
    parser.add_argument("--out", required=True, help="folder for <stem>.png and <stem>_overlay.jpg")
    add_dataset_option(parser, "class names and colours of the pictures (default voc)", default="voc")
    parser.add_argument("--no-legend", action="store_true", help="overlays without the strip naming the classes")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keras_deeplab.files import make_folder
    from serving.client import predict_class_maps
    from serving.predict import read_image, write_outputs

    make_folder(args.out)
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        decoded = [read_image(path, args.max_pixels) for path in paths]
        class_maps = predict_class_maps(
            args.url,
            args.name,
            [encoded for _, encoded in decoded],
            version=args.version,
            signature_name=args.signature,
            columnar=args.columnar,
            timeout_s=args.timeout,
        )
        for path, (image, _), class_map in zip(paths, decoded, class_maps, strict=True):
            mask_path, overlay_path = write_outputs(
                args.out, path, image, class_map, args.dataset, legend=not args.no_legend
            )
            print(f"{path}: {mask_path}, {overlay_path}")
    return 0
