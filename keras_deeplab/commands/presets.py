"""`keras-deeplab presets`: the published DeepLab models that `--model preset:NAME` and
`keras_deeplab.from_preset(NAME)` take (keras_deeplab/presets.py), and what this machine holds of each."""

from __future__ import annotations

import argparse
import dataclasses
import json

MULTI_SCALE_MARK = "*"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "presets", help="the published models --model preset:NAME takes (model zoo), and which are cached here"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keras_deeplab.presets import PRESETS, cache_folder, cache_state, model_path, source_path, zoo_url

    if args.json:
        rows = [
            {
                **dataclasses.asdict(preset),
                "url": None if preset.shipped else zoo_url(preset),
                "file_path": source_path(preset),
                "model_path": model_path(preset),
                "cached": cache_state(preset),
            }
            for preset in PRESETS.values()
        ]
        print(json.dumps({"cache_folder": cache_folder(), "presets": rows}))
        return 0
    header = ("preset", "dataset", "classes", "OS", "mIoU %", "size", "cached")
    rows = [
        (
            preset.name,
            preset.dataset,
            str(preset.num_classes),
            " / ".join(str(evaluation.output_stride) for evaluation in preset.evaluations) or str(preset.output_stride),
            " / ".join(map(_miou, preset.evaluations)) or "-",
            preset.size,
            cache_state(preset),
        )
        for preset in PRESETS.values()
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if column == 2 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
    print(f"mIoU as published (val unless marked test; {MULTI_SCALE_MARK} multi-scale and flips: --json says which)")
    print("a preset's model runs at the first OS (rebuild with --output-stride)")
    print(f"cache: {cache_folder()}")
    return 0


def _miou(evaluation) -> str:
    mark = MULTI_SCALE_MARK if evaluation.flip or evaluation.scales != "1.0" else ""
    split = " test" if evaluation.split == "test" else ""
    return f"{evaluation.miou:.2f}{mark}{split}"
