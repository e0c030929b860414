"""Forward-pass time and peak memory of full-size DeepLab models at batch 1, 513x513, on this machine.

Each configuration runs in its own process, so its peak resident memory is its own. Prints a table; with
--json, one JSON object per configuration. Usage: python benchmarks/forward.py [--runs 5] [--size 513]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

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
    for _ in range(warmup):
        forward(pixels).numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward(pixels).numpy()
        times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**config, "size": size, "median_s": statistics.median(times), "min_s": min(times), "peak_mib": peak_mib}


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
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    print(f"batch 1, {args.size}x{args.size}, float32, {os.cpu_count()} CPU cores, median of {args.runs}")
    print(f"{'model':<34}{'median s':>10}{'min s':>9}{'peak MiB':>10}")
    for config in CONFIGS:
        command = [sys.executable, __file__, "--one", json.dumps(config)]
        command += ["--size", str(args.size), "--runs", str(args.runs), "--warmup", str(args.warmup)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)
        if args.json:
            print(json.dumps(result))
            continue
        name = f"DeepLabv3{'+' if config['decoder'] else ''} {config['backbone']} OS{config['output_stride']}"
        print(f"{name:<34}{result['median_s']:>10.2f}{result['min_s']:>9.2f}{result['peak_mib']:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
