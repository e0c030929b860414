"""Small models and images for the serving tests, made once per test run even across xdist workers."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import keras
import numpy as np
from PIL import Image

from keras_deeplab import build_model

NUM_CLASSES = 5
# VGG-16 (13 convs, no batch norm of its own) with the v3+ decoder: every export, conversion and prediction of it
# traces about half the layers of a tiny ResNet-50. The decoder's stride-4 features make its class maps vary from
# pixel to pixel on noise images (without it a 51x29 image gets one class).
TINY = {"backbone": "vgg16", "width_multiplier": 0.125, "aspp_filters": 16, "decoder": True}
# The tiny ResNet-50, for the tests whose point needs a ResNet's batch norms (int8 files of a trained model, the
# biases those batch norms fold into).
TINY_RESNET = {"backbone": "resnet50", "width_multiplier": 0.125, "aspp_filters": 16}
ODD_SIZES = ((33, 47), (51, 29))  # two odd sizes: catch off-by-one resizes and padding mistakes


def shared_path(tmp_path_factory, name: str, make: Callable[[str], None]) -> str:
    """`name` in a folder that every xdist worker of this run shares, made once by `make(path)` under a lock."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above each worker's own
    path = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            make(str(path))
    return str(path)


def varied_tiny_model(seed: int = 0, **options) -> keras.Model:
    """A tiny untrained DeepLab (`options` for build_model, TINY by default), seeded, whose class maps vary from
    pixel to pixel (a random logits layer, scaled up), so that comparisons of class maps can fail."""
    keras.utils.set_random_seed(seed)
    model = build_model(16, num_classes=NUM_CLASSES, **(options or TINY))
    logits = model.get_layer("logits")
    rng = np.random.default_rng(seed)
    logits.kernel.assign(rng.normal(0, 3.0, logits.kernel.shape).astype("float32"))
    return model


def save_keras_model(path: str) -> None:
    varied_tiny_model().save(path)


def export_tiny_model(tmp_path_factory) -> tuple[str, str]:
    """(.keras path, export base path holding version 1) of the shared tiny model."""
    from keras_deeplab.loading import load_model
    from serving.export import export_saved_model

    keras_path = shared_path(tmp_path_factory, "tiny.keras", save_keras_model)
    base_path = shared_path(
        tmp_path_factory, "export_deeplab", lambda path: export_saved_model(load_model(keras_path), path)
    )
    return keras_path, base_path


@contextlib.contextmanager
def running_serve(base_path: str, *options: str, name: str = "deeplab") -> Iterator[str]:
    """The root URL of `keras-deeplab serve base_path --name name --port 0 *options` on a free loopback port, in
    its own process (as users run it; the tests' per-test Keras session reset would slow an in-process server),
    ended on exit."""
    command = [sys.executable, "-m", "keras_deeplab.cli", "serve", base_path, "--name", name, "--port", "0", *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline, url, seen = time.monotonic() + 120, None, []
    while url is None and time.monotonic() < deadline and process.poll() is None:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        match = re.search(rf"at (http://[\d.]+:\d+)/v1/models/{re.escape(name)}", seen[-1])
        url = match and match.group(1)
    try:
        assert url, f"serve did not start: {''.join(seen)[-2000:]}"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """RGB uint8 (height, width, 3) uniform noise."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode(image: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format)
    return buffer.getvalue()


def keras_class_map(model: keras.Model, image: np.ndarray) -> np.ndarray:
    """Argmax class ids (H, W) of the Keras model on one RGB image at its own size."""
    return np.argmax(model(image[np.newaxis].astype("float32"), training=False).numpy()[0], axis=-1)


def call(url, payload=None, data=None):
    """(HTTP status, decoded JSON body) of a GET (no payload) or a POST."""
    if payload is not None:
        data = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def b64(data):
    return {"b64": base64.b64encode(data).decode()}
