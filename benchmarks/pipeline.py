"""Training-pipeline throughput: images per second on VOC-sized JPEGs (500x375) with full augmentation.

Writes a VOC 2012 layout of synthetic photos (JPEG quality 90) and palette masks to a temporary folder,
then times `pipelines.training_dataset` (random scale 0.5..2.0 in 0.25 steps, pad, 513x513 crop, flip,
batch 8) after a warm-up. Usage: python benchmarks/pipeline.py [--images 64] [--batches 40] [--cache]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from keras_deeplab import machine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from keras_deeplab.descriptors import VOC_COLORMAP
from pipelines import open_source, training_dataset
from pipelines.synthetic import synthetic_example

WIDTH, HEIGHT = 500, 375


def write_voc(root: str, count: int) -> None:
    """`count` VOC-layout pairs of WIDTHxHEIGHT: JPEG images and 8-bit palette masks, all in split train."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    palette = [channel for color in VOC_COLORMAP for channel in color]
    names = [f"2012_{index:06d}" for index in range(count)]
    for index, name in enumerate(names):
        image, mask = synthetic_example("train", index, image_size=WIDTH)
        Image.fromarray(image[:HEIGHT]).save(os.path.join(root, "JPEGImages", f"{name}.jpg"), quality=90)
        mask_image = Image.fromarray(mask[:HEIGHT], mode="P")
        mask_image.putpalette(palette)
        mask_image.save(os.path.join(root, "SegmentationClass", f"{name}.png"))
    with open(os.path.join(root, "ImageSets", "Segmentation", "train.txt"), "w") as file:
        file.write("\n".join(names) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="distinct files on disk")
    parser.add_argument("--batches", type=int, default=40, help="timed batches")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=513)
    parser.add_argument("--cache", action="store_true", help="cache decoded examples in memory")
    args = parser.parse_args()
    print(machine.describe())
    with tempfile.TemporaryDirectory() as root:
        write_voc(root, args.images)
        source = open_source("voc", root, "train")
        dataset = training_dataset(source, crop_size=args.crop_size, batch_size=args.batch_size, cache=args.cache)
        iterator = iter(dataset)
        for _ in range(5):  # warm-up: tracing, thread pools, autotuning
            next(iterator)
        load = os.getloadavg()[0]  # other work on the machine lowers the figure
        start = time.perf_counter()
        for _ in range(args.batches):
            images, masks = next(iterator)
        elapsed = time.perf_counter() - start
    assert images.shape == (args.batch_size, args.crop_size, args.crop_size, 3) and masks.dtype == np.uint8
    rate = args.batches * args.batch_size / elapsed
    cache = "on" if args.cache else "off"
    print(
        f"training pipeline: {rate:.1f} images/s ({WIDTH}x{HEIGHT} JPEG -> scale 0.5..2.0, pad, "
        f"{args.crop_size}x{args.crop_size} crop, flip; batch {args.batch_size}, cache {cache}; "
        f"{os.cpu_count()} CPUs, load average {load:.1f} before timing)"
    )


if __name__ == "__main__":
    main()
