"""The `demo` recipe from scratch: its wall time, then mIoU on the synthetic validation split at one scale and
with multi-scale + flip inference.

Trains into a fresh temporary run directory (or --run-dir, resumed if it holds a run), exactly as
`keras-deeplab train --recipe demo` does, then evaluates the final model twice with `evaluate_model`.
Usage: python benchmarks/demo_miou.py [--scales 0.5,0.75,1.0,1.25,1.5,1.75] [--run-dir DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from keras_deeplab import machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="default: a new temporary folder")
    parser.add_argument("--scales", default="0.5,0.75,1.0,1.25,1.5,1.75", help="multi-scale evaluation scales")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    print(machine.describe())

    import pipelines
    from keras_deeplab.evaluation import evaluate_model, format_table
    from keras_deeplab.loading import load_model
    from keras_deeplab.recipe import load_recipe
    from keras_deeplab.training import train

    run_dir = args.run_dir or os.path.join(tempfile.mkdtemp(prefix="demo-miou-"), "run")
    recipe = load_recipe("demo", [*args.overrides, f"run_dir={run_dir}", "log.progress=false"])
    start = time.perf_counter()
    result = train(recipe)
    train_seconds = time.perf_counter() - start

    model = load_model(result["model_path"])
    source = pipelines.open_source(recipe.data.format, recipe.data.root, recipe.data.eval_split, **recipe.data.options)
    scales = [float(scale) for scale in args.scales.split(",")]
    rows = []
    for name, options in (
        ("single scale", {"scales": [1.0], "flip": False}),
        ("multi-scale + flip", {"scales": scales, "flip": True}),
    ):
        start = time.perf_counter()
        evaluation = evaluate_model(model, source, **options)
        rows.append((name, evaluation, time.perf_counter() - start))

    print(
        f"\ndemo recipe: {recipe.train.steps} steps of batch {recipe.train.global_batch_size}, "
        f"crop {recipe.data.crop_size}, {os.cpu_count()} CPU cores; run directory {run_dir}"
    )
    print(f"training (with its final evaluation): {train_seconds:.0f} s wall")
    for name, evaluation, seconds in rows:
        print(f"\n{name}: mIoU {evaluation['miou']:.4f} ({seconds:.0f} s for {evaluation['examples']} images)")
        print(format_table(evaluation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
