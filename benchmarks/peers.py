"""The peers keras-deeplab is measured against, each in an environment that cannot disturb the project's.

- TF Model Garden (`tf-models-official` 2.20): pins TensorFlow 2.20 and tf-keras, so it lives in a virtual
  environment of its own, `.venv-modelgarden/` (about 2.5 minutes and 3.3 GB on first use).
- keras-hub: needs `tensorflow-text`, which would pull the plain `tensorflow` wheel into an environment holding
  `tensorflow-cpu`; it is installed without dependencies into `.peers/keras-hub/` and put on PYTHONPATH, over
  the project's own TensorFlow and Keras.
Also the timing and memory helpers every benchmark script shares.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_GARDEN_VENV = os.path.join(ROOT, ".venv-modelgarden")
MODEL_GARDEN_REQUIREMENT = "tf-models-official==2.20.*"
KERAS_HUB_DIR = os.path.join(ROOT, ".peers", "keras-hub")
# keras-hub 0.32 and what it imports at start, minus tensorflow-text (optional for image models).
KERAS_HUB_REQUIREMENTS = (
    "keras-hub==0.32.0",
    "kagglehub",
    "kagglesdk==0.1.28",
    "pyyaml",
    "tqdm",
    "regex",
    "tokenizers",
    "sentencepiece",
    "huggingface_hub",
)


def ensure_model_garden_python() -> str:
    """The Model Garden environment's python, creating `.venv-modelgarden/` first when it is missing."""
    python = os.path.join(MODEL_GARDEN_VENV, "bin", "python")
    if not os.path.isfile(python):
        print(f"creating {MODEL_GARDEN_VENV} with {MODEL_GARDEN_REQUIREMENT} (about 2.5 minutes, 3.3 GB)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", MODEL_GARDEN_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", MODEL_GARDEN_REQUIREMENT], check=True)
    return python


def model_garden_config(output_stride: int = 16):
    """The Model Garden's `seg_deeplabv3_pascal` experiment config, with random weights (its init checkpoint is a
    gs:// path: nothing is downloaded) at `output_stride`. Runs in the Model Garden's environment only."""
    from official.core import exp_factory
    from official.vision import registry_imports  # noqa: F401  (registers the vision experiments)

    config = exp_factory.get_exp_config("seg_deeplabv3_pascal")
    config.task.init_checkpoint = None
    if output_stride != 16:  # its ASPP rates (12, 24, 36) are already the paper's OS-8 rates
        config.task.model.backbone.dilated_resnet.output_stride = output_stride
        config.task.model.decoder.aspp.level = config.task.model.head.level = int(math.log2(output_stride))
    return config


def ensure_keras_hub_path() -> str:
    """A folder holding keras-hub and its start-up imports, to put on PYTHONPATH; made when missing."""
    marker = os.path.join(KERAS_HUB_DIR, ".complete")
    if not os.path.isfile(marker):
        print(f"installing keras-hub into {KERAS_HUB_DIR} (without tensorflow-text)", flush=True)
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*command, "--target", KERAS_HUB_DIR, *KERAS_HUB_REQUIREMENTS], check=True)
        open(marker, "w").close()
    return KERAS_HUB_DIR


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--backbone, --output-stride, --decoder and --size: the full-size model a benchmark measures."""
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--decoder", action="store_true")
    parser.add_argument("--size", type=int, default=513, help="input height and width, pixels")


def build_measured_model(args: argparse.Namespace) -> tuple[keras.Model, str]:
    """(the model `add_model_arguments`' options name, a title line saying what it is and at what size)."""
    from keras_deeplab import build_model

    model = build_model(args.output_stride, backbone=args.backbone, decoder=args.decoder)
    title = f"{args.backbone} OS{args.output_stride}{' +decoder' if args.decoder else ''} at {args.size}x{args.size}"
    return model, title


def run_json(python: str, script: str, arguments: list[str], pythonpath: str = ROOT) -> dict:
    """Run `python script arguments` in a fresh process; return the JSON object its last line prints."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": pythonpath}
    completed = subprocess.run([python, script, *arguments], capture_output=True, text=True, env=env, cwd=ROOT)
    if completed.returncode != 0:
        raise RuntimeError(f"{os.path.basename(script)} {' '.join(arguments)} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def median_seconds(call: Callable[[], object], runs: int, warmup: int) -> dict[str, float]:
    """{'median_s', 'min_s'} of `runs` calls of `call` after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def random_batch(tf, batch: int, size: int, ignored: float = 0.1):
    """Pixels float32 (B, size, size, 3) in [0, 255] and labels uint8 (B, size, size) in [0, 21), a share
    `ignored` of them 255 (the ignore label), the same every call."""
    images = tf.random.stateless_uniform((batch, size, size, 3), (0, 1), 0, 255)
    labels = tf.random.stateless_uniform((batch, size, size), (0, 2), 0, 21, dtype=tf.int32)
    dropped = tf.random.stateless_uniform((batch, size, size), (0, 3)) < ignored
    return images, tf.cast(tf.where(dropped, 255, labels), tf.uint8)


def print_times(heading: str, seconds: collections.Counter[str], top: int, width: int, total: float = 0.0) -> None:
    """`heading` (with "s" and, given the `total`, "share" columns), then the `top` largest entries of `seconds`,
    each name cut to its last `width` characters, its seconds, and its share of `total` when given."""
    print(f"{heading:<{width}}{'s':>8}{'share' if total else '':>8}")
    for name, spent in seconds.most_common(top):
        print(f"{name[-width:]:<{width}}{spent:>8.3f}" + (f"{spent / total:>8.1%}" if total else ""))


def peak_memory_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
