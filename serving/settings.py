"""Names, defaults and limits shared by the export, the REST server, the client and the TFLite converter.

Plain Python (no TensorFlow), so the command line can show them in `--help` at once.
"""

from __future__ import annotations

import os
import re

# The SavedModel's signatures and tensors (see serving/export.py for what each holds).
SERVING_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serving_images"
IMAGE_BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
CLASS_MAP_OUTPUT = "class_map"
CLASS_MAP_PNG_OUTPUT = "class_map_png_bytes"
HEIGHT_OUTPUT = "height"
WIDTH_OUTPUT = "width"
SCORES_OUTPUT = "scores"
# Largest image the graph accepts, height x width: 16 times a 1024 x 1024 photo would need tens of GB of
# activations in the paper's ResNet-101; `keras-deeplab serve` checks the same limit before decoding.
DEFAULT_MAX_PIXELS = 4096 * 4096
# `predict`'s memory for one image beyond the model's own: the class probabilities at the photo's size, held in a
# few float32 copies (resized logits, softmax, their mean over scales and flips, NumPy's): measured 12 bytes per
# pixel and class (0.25 GB per million pixels with 21 classes, 1.86 KB per pixel with 150). Its default pixel
# limit keeps that within PREDICT_MEMORY_BYTES, so that a model of many classes fits a 24 GB machine.
PREDICT_BYTES_PER_PIXEL_AND_CLASS = 12
PREDICT_MEMORY_BYTES = 12 * 2**30


def predict_max_pixels(num_classes: int) -> int:
    """`predict`'s default pixel limit for a model of `num_classes` classes: DEFAULT_MAX_PIXELS, less where the
    class probabilities would take more than PREDICT_MEMORY_BYTES (4096x4096 up to 64 classes; 150: 2675x2675)."""
    return min(DEFAULT_MAX_PIXELS, PREDICT_MEMORY_BYTES // (PREDICT_BYTES_PER_PIXEL_AND_CLASS * max(num_classes, 1)))


# What one REST request may cost `keras-deeplab serve`, checked before any image is decoded: the images' pixels
# added up (a request may carry one image of the largest size, or many smaller ones), and the number of
# instances (images) in it.
DEFAULT_MAX_REQUEST_PIXELS = 4096 * 4096
DEFAULT_MAX_INSTANCES = 64
# What the fully connected CRF may take for one image of a `serve --crf` request, in MiB: `crf.memory_bound` of
# its size, classes and the server's CRF threads (a worst case, 7 KB per pixel with 21 classes on 2 threads,
# 12 KB on 8), checked from the image headers before decoding. 4 GiB admits a VOC photo (500x375) of 21 classes
# on 8 threads (2.3 GB) or a 770x770 image on 2, and leaves a 24 GB machine room for the model; the CRF runs
# one image at a time.
DEFAULT_MAX_CRF_MB = 4096
VERSION_PATTERN = re.compile(r"^[0-9]+$")  # version folders, as TF Serving reads them

# The REST server and client.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_MAX_BODY_BYTES = 64 * 2**20
DEFAULT_MAX_CONCURRENT = 4  # predictions running at once; more requests wait for a slot
DEFAULT_BATCH_SIZE = 8  # images per client request
DEFAULT_TIMEOUT_S = 300.0

# TFLite variants, and the least pixel agreement with the Keras model that `convert` accepts for each (int8: the
# ONNX and OpenVINO int8 variants, serving/engines.py).
QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "full_int8")
DEFAULT_MIN_AGREEMENT = {"float32": 0.999, "float16": 0.995, "dynamic_int8": 0.95, "full_int8": 0.95, "int8": 0.95}
# `convert --to`: the formats and the variants of each.
ENGINE_FORMATS = ("tflite", "onnx", "openvino")
FORMAT_QUANTIZATIONS = {"tflite": QUANTIZATIONS, "onnx": ("float32", "int8"), "openvino": ("float32", "int8")}


def model_versions(base_path: str | os.PathLike) -> list[int]:
    """The version numbers under `base_path` (sub-folders named by digits only, as TF Serving reads them)."""
    base_path = os.fspath(base_path)
    if not os.path.isdir(base_path):
        return []
    return sorted(int(name) for name in os.listdir(base_path) if VERSION_PATTERN.match(name))
