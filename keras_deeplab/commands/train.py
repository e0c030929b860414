"""`keras-deeplab train`: train (or resume) a recipe."""

from __future__ import annotations

import argparse
import json

from keras_deeplab.commands.arguments import add_progress_option, progress_bar_wanted


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
    add_progress_option(parser)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keras_deeplab.training import train

    # None: as the recipe's log.progress says
    result = train(args.recipe, args.overrides, progress=None if progress_bar_wanted(args) else False)
    if args.json:
        print(json.dumps(result))
    else:
        miou = result["eval"]["miou"]
        print(f"{result['run_dir']}: step {result['step']}, mIoU {miou:.4f}, model {result['model_path']}")
    return 0
