"""Each convolution of a full-size model timed on its own: milliseconds and GFLOP/s per conv shape.

The convs of the model, grouped by (input shape, kernel, strides, dilation), each group's conv run alone at
--size (513) batch 1 (median of --runs after 2 warm-ups), with the group's count, total time and achieved GFLOP/s.
Shows which convs run below the machine's matmul rate, where a faster kernel or layout would pay.

Usage: python benchmarks/conv_rates.py [--backbone resnet101] [--output-stride 16] [--decoder] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_deeplab import machine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peers.add_model_arguments(parser)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(machine.describe())

    import keras
    import numpy as np
    import tensorflow as tf

    model, title = peers.build_measured_model(args)
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    convs = [layer for layer in model.layers if isinstance(layer, kinds)]
    probe = keras.Model(model.input, [layer.input for layer in convs])
    inputs = probe(np.zeros((1, args.size, args.size, 3), "float32"))
    groups: dict[tuple, list] = {}
    for layer, tensor in zip(convs, inputs, strict=True):
        key = (tuple(tensor.shape[1:]), tuple(layer.kernel.shape), layer.strides, layer.dilation_rate)
        groups.setdefault(key, []).append(layer)
    rows = []
    for (shape, kernel, strides, rate), layers in groups.items():
        layer = layers[0]
        pixels = tf.random.uniform((1, *shape))
        convolve = tf.function(lambda x, layer=layer: layer(x))
        output_area = int(np.prod(convolve(pixels).shape[1:3]))
        # A depthwise kernel (k, k, C, 1) has k*k*C multiply-adds per output pixel, like the product of its shape.
        flops = 2 * output_area * int(np.prod(kernel))
        seconds = peers.median_seconds(lambda c=convolve, p=pixels: c(p).numpy(), args.runs, warmup=2)["median_s"]
        rows.append((seconds * len(layers), flops * len(layers), len(layers), shape, kernel, strides, rate, seconds))
    total_seconds, total_flops = sum(row[0] for row in rows), sum(row[1] for row in rows)
    print(title)
    print(
        f"{len(convs)} convs alone: {total_seconds:.3f} s, {total_flops / 1e9:.1f} GFLOP, "
        f"{total_flops / total_seconds / 1e9:.0f} GFLOP/s"
    )
    print(
        f"{'input':<16}{'kernel':<20}{'stride':>7}{'rate':>6}{'n':>4}{'each ms':>9}{'total ms':>10}{'share':>7}"
        f"{'GFLOP/s':>9}"
    )
    for total, flops, count, shape, kernel, strides, rate, seconds in sorted(rows, reverse=True):
        print(
            f"{'x'.join(map(str, shape)):<16}{'x'.join(map(str, kernel)):<20}{strides[0]:>7}{rate[0]:>6}{count:>4}"
            f"{seconds * 1e3:>9.2f}{total * 1e3:>10.1f}{total / total_seconds:>7.1%}{flops / total / 1e9:>9.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
