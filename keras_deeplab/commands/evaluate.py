"""`keras-deeplab evaluate`: full-resolution mIoU of a trained model on a dataset split, optionally after the
fully connected CRF, within trimap bands, or searching the CRF's parameters."""

from __future__ import annotations

import argparse
import json

from keras_deeplab import constants
from keras_deeplab.commands.arguments import (
    add_crf_options,
    add_fit_to_option,
    add_model_option,
    add_output_stride_option,
    add_precision_option,
    add_progress_option,
    add_source_options,
    crf_grid,
    crf_settings,
    positive_int,
    progress_bar_wanted,
    scales,
    source_options,
)


def _widths(text: str) -> tuple[int, ...]:
    """`--trimap 4,8,16,32`: band widths in pixels."""
    return tuple(positive_int(value) for value in text.split(",") if value.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="mIoU of a trained model on a dataset split, full resolution")
    add_model_option(
        parser, "a .keras file, a training run folder, a published file, or an .onnx / OpenVINO .xml file (`convert`)"
    )
    add_source_options(parser, split_default="val")
    add_output_stride_option(parser, "rebuild the model at this stride (default: the model's)")
    add_precision_option(parser)
    parser.add_argument("--scales", type=scales, default=(1.0,), help="e.g. 0.5,0.75,1.0,1.25,1.5,1.75")
    parser.add_argument("--flip", action="store_true", help="average with the left-right flipped image")
    add_fit_to_option(parser)
    parser.add_argument("--max-examples", type=positive_int, default=None, help="only the first N examples")
    add_crf_options(parser, "also score after the fully connected CRF")
    parser.add_argument(
        "--crf-search",
        action="store_true",
        help=f"search the CRF's parameters on this split (default grid {constants.DENSE_CRF_SEARCH_GRID})",
    )
    parser.add_argument(
        "--crf-grid", type=crf_grid, action="append", default=[], metavar="NAME=V1,V2", help="the search's grid"
    )
    parser.add_argument("--trimap", type=_widths, default=(), metavar="W1,W2", help="mIoU within N px of boundaries")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_progress_option(parser)
    parser.add_argument("--report", metavar="DIR", help="also write charts and DIR/index.html (needs matplotlib)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keras_deeplab.crf import extension
    from keras_deeplab.evaluation import crf_grid_search, evaluate, format_table
    from keras_deeplab.loading import load_model
    from pipelines.formats import open_source

    progress = progress_bar_wanted(args) and not args.json
    crf = crf_settings(args)
    from serving.engines import PRECISION_HINTS, EngineModel, is_engine_file

    model = args.model
    if is_engine_file(args.model):  # a converted model of one input size
        if args.output_stride is not None or tuple(args.scales) != (1.0,) or args.crf_search or args.crf_grid:
            raise ValueError(
                f"{args.model}: a converted model has one input size and stride; --output-stride, --scales and the "
                "CRF search apply to .keras models"
            )
        model = EngineModel(args.model, hint=PRECISION_HINTS[args.precision])
    if args.crf_search or args.crf_grid:
        if args.report:
            raise ValueError("--report draws an evaluation; it does not apply to --crf-search")
        extension()  # before the model is loaded
        grid = dict(args.crf_grid) or constants.DENSE_CRF_SEARCH_GRID
        model = load_model(args.model, args.output_stride, args.precision)
        source = open_source(args.format, args.root, args.split, **source_options(args))
        scored = crf_grid_search(
            model,
            source,
            grid,
            scales=args.scales,
            flip=args.flip,
            fit_to=args.fit_to,
            max_examples=args.max_examples,
            progress=progress,
        )
        if args.json:
            print(json.dumps(scored))
        for row in [] if args.json else scored:
            parameters = ", ".join(f"{key} {value:g}" for key, value in row["parameters"].items())
            print(f"mIoU {100 * row['miou']:.2f}  pixel accuracy {100 * row['pixel_accuracy']:.2f}  {parameters}")
        return 0
    results = evaluate(
        model,
        args.format,
        args.root,
        args.split,
        output_stride=args.output_stride,
        precision=args.precision,
        scales=args.scales,
        flip=args.flip,
        fit_to=args.fit_to,
        max_examples=args.max_examples,
        progress=progress,
        crf=crf,
        trimap_widths=args.trimap,
        report_dir=args.report,
        **source_options(args),
    )
    print(json.dumps(results) if args.json else format_table(results))
    if args.report and not args.json:
        print(f"report: {results['report']}")
    return 0
