"""Latency of each TFLite variant (LiteRT interpreter) beside the Keras model, batch 1, at a fixed input size.

Builds the configuration (or loads --model FILE.keras), converts it to float32, float16, dynamic-range int8 and
full int8 (calibrated on synthetic images from the input pipeline), and prints file size and the median
latency of --runs runs after one warm-up for each, with the Keras model's forward pass (tf.function) first.

    python benchmarks/tflite.py                                   # ResNet-101 DeepLabv3, 513x513
    python benchmarks/tflite.py --backbone resnet50 --input-size 257
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf

from keras_deeplab import build_model, machine
from keras_deeplab.loading import load_model
from pipelines import synthetic_source
from serving.tflite import QUANTIZATIONS, TFLiteModel, convert, fit_and_pad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained .keras file (default: a fresh model of --backbone)")
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=513)
    parser.add_argument("--quantization", nargs="+", choices=QUANTIZATIONS, default=list(QUANTIZATIONS))
    parser.add_argument("--representative-images", type=int, default=8, help="full_int8 calibration images")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="LiteRT interpreter threads")
    args = parser.parse_args()
    print(machine.describe())

    model = load_model(args.model) if args.model else build_model(args.output_stride, backbone=args.backbone)
    name = args.model or f"{args.backbone} (fresh weights)"
    size = args.input_size
    print(f"{name}, output stride {args.output_stride}, {model.count_params():,} parameters, {size}x{size}, batch 1")
    images = [image for image, _, _ in synthetic_source("train", args.representative_images).examples()]
    pixels = fit_and_pad(images[0], size)[0][np.newaxis]

    forward = tf.function(lambda x: model(x, training=False))
    keras_s = peers.median_seconds(lambda: forward(pixels).numpy(), args.runs, warmup=1)["median_s"]
    print(f"{'model':<14}{'size MB':>9}{'convert s':>11}{'latency ms':>12}{'vs Keras':>10}")
    print(f"{'keras':<14}{model.count_params() * 4 / 1e6:>9.1f}{'':>11}{keras_s * 1000:>12.0f}{1:>9.2f}x")
    for quantization in args.quantization:
        started = time.perf_counter()
        flatbuffer = convert(model, quantization, size, images)
        converted_s = time.perf_counter() - started
        tflite = TFLiteModel(flatbuffer, num_threads=args.threads)
        latency_s = peers.median_seconds(lambda tflite=tflite: tflite.run(pixels), args.runs, warmup=1)["median_s"]
        print(
            f"{quantization:<14}{tflite.size_bytes / 1e6:>9.1f}{converted_s:>11.0f}"
            f"{latency_s * 1000:>12.0f}{keras_s / latency_s:>9.2f}x"
        )


if __name__ == "__main__":
    main()
