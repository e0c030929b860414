"""Winograd F(2x2, 3x3) from TensorFlow ops beside TensorFlow's direct 3x3 conv, on DeepLab's 33x33 feature maps.

A speed experiment for the forward pass at output stride 16 (513x513 input): Winograd needs 2.25x fewer
multiplications per 3x3 conv, so it is the one exact-to-rounding way to less arithmetic. Built here from what
TensorFlow offers: the input transform as a 4x4 stride-2 depthwise conv (16 outputs per channel), the 16
products as one batched matmul, the output transform as a matmul, then a reshuffle to NHWC. Prints, per
(channels in, channels out), the direct and Winograd times (median of --runs, default 20, after --warmup
warm-ups, default 3), the speedup and the largest difference relative to the output's largest value.

Usage: python benchmarks/winograd.py [--runs 20] [--warmup 3]
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_deeplab import machine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

SIZE = 33  # the stride-16 feature map of a 513x513 input
SHAPES = [(256, 256), (512, 512), (2048, 256)]  # ResNet-101 stage 4 and 5 3x3 convs; one ASPP branch
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def winograd_conv(kernel: np.ndarray, size: int):
    """A tf.function computing the 'SAME' 3x3 conv of a (1, size, size, C) input with `kernel` (3, 3, C, K)."""
    import tensorflow as tf

    channels, filters = kernel.shape[2:]
    tiles = (size + 1) // 2  # 2x2 output tiles per side
    transformed_kernel = tf.constant(np.einsum("ij,jkcn,lk->ilcn", G, kernel, G).reshape(16, channels, filters))
    input_transform = np.einsum("ai,bj->ijab", B_T, B_T).reshape(4, 4, 1, 16)
    depthwise = tf.constant(np.tile(input_transform, (1, 1, channels, 1)))
    output_transform = tf.constant(np.einsum("pa,qb->abpq", A_T, A_T).reshape(16, 4))
    pad = 2 * tiles + 1 - size

    @tf.function
    def conv(x):
        x = tf.pad(x, [[0, 0], [1, pad], [1, pad], [0, 0]])
        v = tf.nn.depthwise_conv2d(x, depthwise, [1, 2, 2, 1], "VALID")  # (1, tiles, tiles, C * 16)
        v = tf.transpose(tf.reshape(v, (tiles * tiles, channels, 16)), (2, 0, 1))  # (16, tiles^2, C)
        m = tf.matmul(v, transformed_kernel)  # (16, tiles^2, K)
        y = tf.matmul(tf.transpose(m, (1, 2, 0)), output_transform)  # (tiles^2, K, 4)
        y = tf.transpose(tf.reshape(y, (tiles, tiles, filters, 2, 2)), (0, 3, 1, 4, 2))
        return tf.reshape(y, (1, 2 * tiles, 2 * tiles, filters))[:, :size, :size]

    return conv


def median_ms(function, x, runs: int, warmup: int) -> float:
    return peers.median_seconds(lambda: function(x).numpy(), runs=runs, warmup=warmup)["median_s"] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per conv (the median is printed)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    args = parser.parse_args()  # before TensorFlow is imported: --help answers at once
    import tensorflow as tf

    rng = np.random.default_rng(0)
    print(machine.describe())
    print(f"3x3 conv on a 1x{SIZE}x{SIZE} map, float32, {os.cpu_count()} CPU cores")
    for channels, filters in SHAPES:
        x = tf.constant(rng.standard_normal((1, SIZE, SIZE, channels)), tf.float32)
        kernel = (rng.standard_normal((3, 3, channels, filters)) / np.sqrt(9 * channels)).astype(np.float32)
        direct = tf.function(lambda x, kernel=kernel: tf.nn.conv2d(x, kernel, 1, "SAME"))
        winograd = winograd_conv(kernel, SIZE)
        want, got = direct(x).numpy(), winograd(x).numpy()
        error = np.abs(got - want).max() / np.abs(want).max()
        direct_ms = median_ms(direct, x, args.runs, args.warmup)
        winograd_ms = median_ms(winograd, x, args.runs, args.warmup)
        gflops = 2 * SIZE * SIZE * channels * filters * 9 / direct_ms / 1e6
        print(
            f"{channels:>5} -> {filters:<4} direct {direct_ms:6.2f} ms ({gflops:.0f} GFLOP/s)  "
            f"winograd {winograd_ms:6.2f} ms  speedup {direct_ms / winograd_ms:.2f}x  max error {error:.1e}"
        )


if __name__ == "__main__":
    main()
