"""Seconds per image of `keras_deeplab.crf.dense_crf` on a 500x375 photo, 21 classes, beside the 0.5 s target.

The photo is ../shared/data/voc2012_sample/JPEGImages/2007_000039.jpg (500x375) when that folder exists, else a
synthetic one of the same size (coloured shapes on smooth gradients with mild noise: a lattice of photo-like size,
unlike uniform noise, which fills the colour space). The probabilities are a softmax over 21 classes of the
ground truth (or of the synthetic shapes) plus Gaussian noise; pydensecrf's time does not depend on their values.
Rows: the defaults (the official run_densecrf.sh values) and the DeepLab v2 ResNet-101 release's values, whose
smoothness kernel of std 1 pixel makes a lattice about as large as the image. Medians of --runs timed calls after
one warm-up, in this process: wall and CPU seconds, with the load average, since the cores may be shared. The CPU
model, its vector flags and the cores are printed beside them.

Usage: python benchmarks/crf.py [--runs 7] [--iterations 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SAMPLE = os.path.join(ROOT, "..", "shared", "data", "voc2012_sample")
PHOTO = "2007_000039"
HEIGHT, WIDTH, NUM_CLASSES = 375, 500, 21
TARGET_S = 0.5


def photo_and_labels() -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 (375, 500, 3) image, int (375, 500) class ids with 255 void, description)."""
    from PIL import Image

    jpeg = os.path.join(SHARED_SAMPLE, "JPEGImages", f"{PHOTO}.jpg")
    png = os.path.join(SHARED_SAMPLE, "SegmentationClass", f"{PHOTO}.png")
    if os.path.isfile(jpeg) and os.path.isfile(png):
        image = np.array(Image.open(jpeg).convert("RGB"))
        labels = np.array(Image.open(png))  # palette PNG: the values are the class ids
        if image.shape[:2] == (HEIGHT, WIDTH):
            return image, labels.astype(np.int64), f"VOC 2012 {PHOTO}.jpg (../shared/data)"
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    image = np.stack([rows * 200 / HEIGHT, cols * 200 / WIDTH, np.full_like(rows, 90)], axis=-1).astype(np.float64)
    labels = np.zeros((HEIGHT, WIDTH), np.int64)
    labels[60:300, 40:220] = 15
    labels[(rows - 200) ** 2 + (cols - 360) ** 2 < 110**2] = 12
    image[labels == 15] = (200, 150, 120)
    image[labels == 12] = (70, 50, 40)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return image, labels, "synthetic (../shared/data absent)"


def noisy_probabilities(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[np.where(labels < NUM_CLASSES, labels, 0)]
    logits = 3.0 * onehot + rng.normal(0, 1.0, onehot.shape).astype(np.float32)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def median_seconds(call, runs: int) -> dict:
    """Wall and process-CPU seconds of `runs` calls after one warm-up. pydensecrf runs on one thread, so on an
    idle machine the two agree; where other work shares the cores, CPU seconds are the steadier figure."""
    call()  # warm-up
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu_time = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu_time)
    return {"median_s": statistics.median(walls), "min_s": min(walls), "median_cpu_s": statistics.median(cpus)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args(argv)

    from keras_deeplab import constants, machine
    from keras_deeplab.crf import dense_crf

    image, labels, source = photo_and_labels()
    probabilities = noisy_probabilities(labels)
    valid = labels != constants.IGNORE_LABEL
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = {
        "defaults (run_densecrf.sh)": {},
        "ResNet-101 release": {k: v for k, v in constants.DENSE_CRF_RESNET101.items() if k != "iterations"},
    }
    print(machine.describe())
    print(f"photo: {source}; {WIDTH}x{HEIGHT}, {NUM_CLASSES} classes, {args.iterations} iterations, {args.runs} runs")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) before timing: {load:.2f} on {cores} cores")
    print(f"{'parameters':<28} {'median s':>9} {'min s':>7} {'CPU s':>7} {'target s':>9}  within  accuracy")
    results = {
        "cpu": machine.describe(),
        "load_average": load,
        "photo": source,
        "iterations": args.iterations,
        "target_s": TARGET_S,
        "rows": {},
    }
    before = float(np.mean(probabilities.argmax(-1)[valid] == labels[valid]))
    for name, parameters in settings.items():
        refined = dense_crf(image, probabilities, iterations=args.iterations, **parameters)
        after = float(np.mean(refined.argmax(-1)[valid] == labels[valid]))
        timing = median_seconds(
            lambda p=parameters: dense_crf(image, probabilities, iterations=args.iterations, **p), args.runs
        )
        within = timing["median_s"] <= TARGET_S
        print(
            f"{name:<28} {timing['median_s']:>9.3f} {timing['min_s']:>7.3f} {timing['median_cpu_s']:>7.3f}"
            f" {TARGET_S:>9.2f}  {'yes' if within else 'NO':>6}  {before:.3f} -> {after:.3f}"
        )
        results["rows"][name] = {**timing, "within_target": within, "accuracy_before": before, "accuracy_after": after}
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
