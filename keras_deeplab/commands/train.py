"""`keras-deeplab train`: train (or resume) a recipe."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train (or resume) a recipe; see keras_deeplab/recipes/")
    parser.add_argument("--recipe", required=True, help="a shipped recipe name (e.g. demo) or a recipe JSON file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set train.steps=100 --set run_dir=runs/try (values read as JSON)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keras_deeplab.training import train

    result = train(args.recipe, args.overrides, progress=False if args.no_progress else None)
    if args.json:
        print(json.dumps(result))
    else:
        miou = result["eval"]["miou"]
        print(f"{result['run_dir']}: step {result['step']}, mIoU {miou:.4f}, model {result['model_path']}")
    return 0
