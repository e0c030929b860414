"""`keras-deeplab demo`: the whole flow on the embedded synthetic dataset (see keras_deeplab/demo.py)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the whole flow on the embedded synthetic dataset")
    parser.add_argument("--out", default="runs/demo", help="folder for the run, export, pictures and summary")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="demo recipe override")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keras_deeplab.demo import run_demo

    summary = run_demo(args.out, tuple(args.set))
    if args.json:
        print(json.dumps(summary))
    return 0
