"""Seconds per image of `keras_deeplab.crf.dense_crf` on a 500x375 photo, 21 classes, beside the 0.5 s target.

The photo is ../shared/data/voc2012_sample/JPEGImages/2007_000039.jpg (500x375) when that folder exists, else a
synthetic one of the same size (coloured shapes on smooth gradients with mild noise: a lattice of photo-like size,
unlike uniform noise, which fills the colour space). The probabilities are a softmax over 21 classes of the
ground truth (or of the synthetic shapes) plus Gaussian noise; the time hardly depends on their values.
Parameters: the defaults (the official run_densecrf.sh values) and the DeepLab v2 ResNet-101 release's values, whose
smoothness kernel of std 1 pixel makes a lattice about as large as the image. For each: ours on the default
threads (the cores, at most 8), ours on one thread, and Kraehenbuehl's densecrf through pydensecrf (one thread; a
dev dependency, skipped when absent) with the largest difference of its probabilities from ours. Medians of --runs
timed calls after one warm-up, in this process: wall and CPU seconds, with the load average, since the cores may
be shared. The CPU model, its vector flags, the cores and the loops the extension picked are printed beside them.

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
    """Wall and process-CPU seconds of `runs` calls after one warm-up (whose wall time is `first_s`: for ours it
    includes allocating the working memory, which later calls reuse). On one thread and an idle machine wall and
    CPU agree; on several, CPU seconds are the work summed over the threads."""
    wall = time.perf_counter()
    call()  # warm-up
    first = time.perf_counter() - wall
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu_time = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu_time)
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "median_cpu_s": statistics.median(cpus),
        "first_s": first,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args(argv)

    from keras_deeplab import _crf_mean_field, constants, machine
    from keras_deeplab.crf import default_threads, dense_crf, release_memory

    image, labels, source = photo_and_labels()
    probabilities = noisy_probabilities(labels)
    valid = labels != constants.IGNORE_LABEL
    cores = machine.usable_cores()
    settings = {
        "defaults (run_densecrf.sh)": constants.DENSE_CRF,
        "ResNet-101 release": constants.DENSE_CRF_RESNET101,
    }
    threads = default_threads()
    implementations = {f"ours, {threads} threads": {"threads": threads}, "ours, 1 thread": {"threads": 1}}
    print(machine.describe())
    print(f"mean-field loops: {_crf_mean_field.instruction_set()}")
    print(f"photo: {source}; {WIDTH}x{HEIGHT}, {NUM_CLASSES} classes, {args.iterations} iterations, {args.runs} runs")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) before timing: {load:.2f} on {cores} cores")
    print(f"{'parameters':<27} {'implementation':<22} {'median s':>8} {'min s':>6} {'CPU s':>6} {'first s':>7}"
          f" {'target':>6}  within  accuracy        max |ours - densecrf|")  # fmt: skip
    results = {
        "cpu": machine.describe(),
        "loops": _crf_mean_field.instruction_set(),
        "load_average": load,
        "photo": source,
        "iterations": args.iterations,
        "target_s": TARGET_S,
        "rows": {},
    }
    before = float(np.mean(probabilities.argmax(-1)[valid] == labels[valid]))
    for name, values in settings.items():
        parameters = {**values, "iterations": args.iterations}
        ours = dense_crf(image, probabilities, **parameters)
        calls = {
            key: (lambda p={**parameters, **extra}: dense_crf(image, probabilities, **p))
            for key, extra in implementations.items()
        }
        reference = densecrf_reference(image, probabilities, parameters)
        if reference is not None:
            calls["pydensecrf (reference)"] = reference
        for implementation, call in calls.items():
            refined = call()
            release_memory()  # so that the first timed call allocates, as a process's first call does
            after = float(np.mean(refined.argmax(-1)[valid] == labels[valid]))
            difference = float(np.abs(refined - ours).max())
            timing = median_seconds(call, args.runs)
            within = timing["median_s"] <= TARGET_S
            print(
                f"{name:<27} {implementation:<22} {timing['median_s']:>8.3f} {timing['min_s']:>6.3f}"
                f" {timing['median_cpu_s']:>6.3f} {timing['first_s']:>7.3f} {TARGET_S:>6.2f}"
                f"  {'yes' if within else 'NO':>6}  {before:.3f} -> {after:.3f}  {difference:.1e}"
            )
            results["rows"][f"{name}; {implementation}"] = {
                **timing,
                "within_target": within,
                "accuracy_before": before,
                "accuracy_after": after,
                "max_difference_from_ours": difference,
            }
    print(json.dumps(results))
    return results


def densecrf_reference(image: np.ndarray, probabilities: np.ndarray, parameters: dict):
    """A call of Kraehenbuehl's densecrf on the same model, or None where pydensecrf is not installed."""
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError:
        print("pydensecrf not installed (a dev dependency): no reference row")
        return None
    height, width, classes = probabilities.shape
    unary = np.ascontiguousarray(-np.log(np.maximum(probabilities, 1e-8)).reshape(-1, classes).T, np.float32)

    def call() -> np.ndarray:
        crf = densecrf.DenseCRF2D(width, height, classes)
        crf.setUnaryEnergy(unary)
        crf.addPairwiseGaussian(sxy=parameters["pos_xy_std"], compat=parameters["pos_w"])
        crf.addPairwiseBilateral(
            sxy=parameters["bi_xy_std"], srgb=parameters["bi_rgb_std"], rgbim=image, compat=parameters["bi_w"]
        )
        q = np.asarray(crf.inference(parameters["iterations"]), np.float32)
        return q.T.reshape(height, width, classes)

    return call


if __name__ == "__main__":
    main()
