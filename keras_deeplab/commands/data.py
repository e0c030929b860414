"""`keras-deeplab data check` and `keras-deeplab data convert`: thin wrappers over pipelines' functions."""

from __future__ import annotations

import argparse
import json
from typing import Any

from keras_deeplab.commands.arguments import add_source_options, source_options


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="check a dataset or convert it to TFRecord shards")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="{check,convert}")

    check = commands.add_parser("check", help="read and validate every pair; count sizes and class pixels")
    add_source_options(check)
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(run=run_check)

    convert = commands.add_parser("convert", help="write a split as TFRecord shards of tf.Example")
    add_source_options(convert)
    convert.add_argument("--out", required=True, help="output folder")
    convert.add_argument("--shards", type=int, default=1)
    convert.add_argument("--skip-bad", action="store_true", help="skip bad pairs (listed at the end)")
    convert.set_defaults(run=run_convert)


def run_check(args: argparse.Namespace) -> int:
    """Print the check; exit status 1 when any pair is bad."""
    from pipelines.check import check_dataset

    report = check_dataset(args.format, args.root, args.split, **source_options(args))
    if args.json:
        print(json.dumps(report))
    else:
        _print_check(report)
    return 1 if report["bad"] else 0


def _print_check(report: dict[str, Any]) -> None:
    print(f"{report['source']}: {report['examples']} examples")
    if report.get("image_height_range"):
        (low_h, high_h), (low_w, high_w) = report["image_height_range"], report["image_width_range"]
        print(f"  image height {low_h}..{high_h}, width {low_w}..{high_w}")
    total = sum(report["class_pixels"]) + report["ignored_pixels"]
    for index, (name, count) in enumerate(zip(report.get("class_names", []), report["class_pixels"], strict=True)):
        print(f"  {index:3d} {name:<24} {count:>14,} px {100 * count / max(total, 1):6.2f}%")
    print(f"  ignored ({report.get('ignore_label', 255)})                {report['ignored_pixels']:>14,} px")
    for item in report["bad"]:
        print(f"BAD {item['file']}: {item['problem']}")
    if report["bad"]:
        print(f"{len(report['bad'])} bad file(s)")


def run_convert(args: argparse.Namespace) -> int:
    """Write the shards; exit status 1 (and no shard renamed into place) on the first bad pair without --skip-bad."""
    from pipelines.formats import open_source
    from pipelines.tfrecord import write_tfrecords

    source = open_source(args.format, args.root, args.split, skip_bad=args.skip_bad, **source_options(args))
    metadata = write_tfrecords(source, args.out, args.shards, split=args.split)
    written = len(metadata["shards"])
    fewer = f" (not {args.shards}: no shard is left empty)" if written < args.shards else ""
    print(f"wrote {metadata['examples']} examples of {source.name} to {written} shard(s){fewer} in {args.out}")
    if metadata["skipped"]:
        print(source.skipped.report())
    return 0
