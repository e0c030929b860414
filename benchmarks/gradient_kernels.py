"""Each stride-1 conv's two gradients of a full-size training step, timed both ways: our kernels
(`keras_deeplab.conv_gradients`) against TensorFlow's own Conv2DBackpropInput and Conv2DBackpropFilter.

The convs of the model are grouped by (input shape, kernel, dilation) at --size (513) and --batch (2), the
training step's crop and batch. For each group, in one process and alternated: the inputs' gradient as
`conv2d_input_gradient` against Conv2DBackpropInput, the kernel's as `conv2d_kernel_gradient` against
Conv2DBackpropFilter (medians of --runs after a warm-up). TensorFlow's own CPU kernels refuse dilated gradients
unless oneDNN is on; with it on (TensorFlow's default on CPUs with AVX-512 VNNI or AMX, `TF_ENABLE_ONEDNN_OPTS=1`
elsewhere: its kernels, not that CPU's speed) they are oneDNN's. The totals by kernel kind (1x1, undilated,
dilated) are what `conv_gradients.tensorflow_gradients_fastest` is chosen from.

Usage: TF_ENABLE_ONEDNN_OPTS=0|1 python benchmarks/gradient_kernels.py [--backbone resnet101] [--output-stride 16]
           [--size 513] [--batch 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

from keras_deeplab import machine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers


def kernel_kind(kernel_shape: tuple, rate: tuple) -> str:
    """'1x1', 'undilated' or 'dilated': the kinds of stride-1 conv whose gradient kernels are chosen apart."""
    if kernel_shape[0] == kernel_shape[1] == 1:
        return "1x1"
    return "dilated" if max(rate) > 1 else "undilated"


NAMES = ("input ours", "input tf", "kernel ours", "kernel tf")


def candidates(tf, x, k, up, rate: tuple, padding: str) -> dict:
    """The two ways to each gradient of the conv of `x` by `k` whose outputs' gradient is `up`, by NAMES."""
    from keras_deeplab import conv_gradients

    conv = {"strides": [1, 1, 1, 1], "padding": padding, "dilations": [1, *rate, 1]}
    return dict(
        zip(
            NAMES,
            (
                lambda: conv_gradients.conv2d_input_gradient(up, k, rate, padding),
                lambda: tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=k, out_backprop=up, **conv),
                lambda: conv_gradients.conv2d_kernel_gradient(x, up, k.shape, rate, padding),
                lambda: tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=k.shape, out_backprop=up, **conv),
            ),
            strict=True,
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peers.add_model_arguments(parser)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from keras_deeplab import conv_gradients
    from keras_deeplab.layers import Conv2D

    print(machine.describe())
    print(f"oneDNN: {'on' if conv_gradients.onednn_on() else 'off'}")
    model, title = peers.build_measured_model(args)
    convs = [layer for layer in model.layers if isinstance(layer, Conv2D) and max(layer.strides) == 1]
    probe = keras.Model(model.input, [layer.input for layer in convs])
    inputs = probe(np.zeros((1, args.size, args.size, 3), "float32"))
    groups: dict[tuple, list] = {}
    for layer, tensor in zip(convs, inputs, strict=True):
        key = (tuple(tensor.shape[1:]), tuple(layer.kernel.shape), tuple(layer.dilation_rate), layer.padding.upper())
        groups.setdefault(key, []).append(layer)

    rows, totals = [], collections.defaultdict(lambda: np.zeros(4))
    for (shape, kernel_shape, rate, padding), layers in groups.items():
        x = tf.random.uniform((args.batch, *shape))
        k = tf.random.uniform(kernel_shape, -0.1, 0.1)
        up = tf.random.uniform(tf.nn.conv2d(x, k, 1, padding, dilations=list(rate)).shape)
        functions = {name: tf.function(call) for name, call in candidates(tf, x, k, up, rate, padding).items()}
        unavailable = set()
        for name, function in functions.items():
            try:
                function()
            except tf.errors.InvalidArgumentError:  # TensorFlow's own CPU kernels: no dilation without oneDNN
                unavailable.add(name)
        times = collections.defaultdict(list)
        for _ in range(args.runs):  # alternated, so that a busy moment of a shared machine hits every candidate
            for name, function in functions.items():
                if name not in unavailable:
                    times[name].append(peers.median_seconds(lambda f=function: f().numpy(), 1, 0)["median_s"])
        seconds = [float(np.median(times[name])) * len(layers) if times[name] else float("nan") for name in functions]
        kind = kernel_kind(kernel_shape, rate)
        totals[kind] += np.nan_to_num(seconds, nan=np.inf)
        rows.append((kind, shape, kernel_shape, rate, len(layers), seconds))

    print(f"{title}, batch {args.batch}: each group's milliseconds per step, n convs")
    header = f"{'kind':<10}{'input':<14}{'kernel':<16}{'rate':>5}{'n':>4}"
    print(header + "".join(f"{name:>13}" for name in NAMES))
    for kind, shape, kernel_shape, rate, count, seconds in sorted(rows, key=lambda row: -max(row[5])):
        cells = "".join(f"{'n/a':>13}" if np.isnan(s) else f"{s * 1e3:>13.1f}" for s in seconds)
        kernel = "x".join(map(str, kernel_shape))
        print(f"{kind:<10}{'x'.join(map(str, shape)):<14}{kernel:<16}{rate[0]:>5}{count:>4}{cells}")
    print("by kind (s): input ours / tf, kernel ours / tf -> the faster of each")
    for kind, (input_ours, input_tf, kernel_ours, kernel_tf) in totals.items():
        pick_input = "tf" if input_tf < input_ours else "ours"
        pick_kernel = "tf" if kernel_tf < kernel_ours else "ours"
        print(
            f"  {kind:<10} input {input_ours:.3f} / {input_tf:.3f} -> {pick_input:<5}"
            f" kernel {kernel_ours:.3f} / {kernel_tf:.3f} -> {pick_kernel}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
