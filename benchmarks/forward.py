"""Forward-pass time and peak memory of full-size DeepLab models at batch 1, 513x513, on this machine.

Each configuration runs in its own process, so its peak resident memory is its own. Prints a table; with
--json, one JSON object per configuration. Usage: python benchmarks/forward.py [--runs 5] [--size 513]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from keras_deeplab import machine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

CONFIGS = [
    {"backbone": "resnet101", "output_stride": 16, "decoder": False},
    {"backbone": "resnet101", "output_stride": 16, "decoder": True},
    {"backbone": "resnet101", "output_stride": 8, "decoder": False},
    {"backbone": "resnet101", "output_stride": 8, "decoder": True},
]


def measure(config: dict, size: int, runs: int, warmup: int) -> dict:
    """Median wall time (s) of `runs` forward passes after `warmup`, and this process's peak RSS (MiB)."""
    import numpy as np
    import tensorflow as tf

    from keras_deeplab import build_model

    model = build_model(input_shape=(size, size, 3), **config)
    forward = tf.function(lambda x: model(x, training=False))
    pixels = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32"))
    timing = peers.median_seconds(lambda: forward(pixels).numpy(), runs, warmup)
    return {**config, "size": size, **timing, "peak_mib": peers.peak_memory_mib()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one JSON config in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one), args.size, args.runs, args.warmup)))
        return 0
    print(machine.describe())
    print(f"batch 1, {args.size}x{args.size}, float32, {os.cpu_count()} CPU cores, median of {args.runs}")
    print(f"{'model':<34}{'median s':>10}{'min s':>9}{'peak MiB':>10}")
    for config in CONFIGS:
        options = ["--size", str(args.size), "--runs", str(args.runs), "--warmup", str(args.warmup)]
        result = peers.run_json(sys.executable, os.path.abspath(__file__), ["--one", json.dumps(config), *options])
        if args.json:
            print(json.dumps(result))
            continue
        name = f"DeepLabv3{'+' if config['decoder'] else ''} {config['backbone']} OS{config['output_stride']}"
        print(f"{name:<34}{result['median_s']:>10.2f}{result['min_s']:>9.2f}{result['peak_mib']:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
