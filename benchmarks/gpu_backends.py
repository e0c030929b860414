"""keras-deeplab on a GPU under JAX and PyTorch, beside torchvision's DeepLabV3-ResNet101: images/s and peak memory.

For a machine with JAX and/or PyTorch (CUDA builds) and no TensorFlow: the model is built by `build_model`, which
imports no TensorFlow under KERAS_BACKEND=jax or =torch (this script checks it). Each side runs in a process of
its own:
- ours_jax: DeepLabv3 ResNet-101 at output stride 16 (or --output-stride 8), Keras on JAX: forward through
  `predict_on_batch` and an SGD step through `train_on_batch` (SegmentationLoss, momentum 0.9), both `jax.jit`;
- ours_torch: the same under Keras on PyTorch (eager);
- torchvision: `torchvision.models.segmentation.deeplabv3_resnet101` (random weights, 21 classes, no auxiliary
  head; its ResNet-101 is dilated to output stride 8), forward under `torch.no_grad()` and an SGD step with
  cross-entropy (ignore index 255).
Forward at batch --batch, step at batch --train-batch, --size x --size pixels, medians after warm-up; peak memory
is the device's (JAX's `peak_bytes_in_use`, `torch.cuda.max_memory_allocated`). Without a GPU it runs on the CPU
(a check that it works, not a figure to report).

Usage: python benchmarks/gpu_backends.py [--size 513] [--batch 8] [--train-batch 8] [--runs 10] [--sides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout with nothing installed (a GPU machine without TensorFlow)
from peers import median_seconds  # noqa: E402 (benchmarks/ beside this script; imports no TensorFlow)

from keras_deeplab import machine  # noqa: E402 (reads /proc/cpuinfo; imports no TensorFlow)

SIDES = {
    "ours_jax": "keras-deeplab DeepLabv3 R101, Keras on JAX (jit)",
    "ours_torch": "keras-deeplab DeepLabv3 R101, Keras on PyTorch",
    "torchvision": "torchvision deeplabv3_resnet101 (OS8)",
}
BACKENDS = {"ours_jax": "jax", "ours_torch": "torch", "torchvision": "torch"}


def peak_memory_mib(backend: str) -> tuple[float, str]:
    """(peak memory MiB, what it counts) of the device the backend computes on."""
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2**20, f"{jax.devices()[0].platform} peak_bytes_in_use"
    else:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def reset_peak(backend: str) -> None:
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def device(backend: str) -> str:
    if backend == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"


def ours(side: str, args) -> tuple:
    """(forward on a batch, step on a batch) of our model under Keras on the side's backend."""
    import keras
    import numpy as np

    from keras_deeplab import SegmentationLoss, build_model

    assert keras.backend.backend() == BACKENDS[side]
    model = build_model(args.output_stride, backbone="resnet101", input_shape=(args.size, args.size, 3))
    assert "tensorflow" not in sys.modules, "build_model imported TensorFlow"
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype(np.float32)
    images = rng.uniform(0, 255, (args.train_batch, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, 21, (args.train_batch, args.size, args.size)).astype(np.uint8)
    model.compile(optimizer=keras.optimizers.SGD(0.007, momentum=0.9), loss=SegmentationLoss())
    return (lambda: model.predict_on_batch(pixels)), (lambda: float(model.train_on_batch(images, labels)))


def torchvision_side(args) -> tuple:
    """(forward, step) of torchvision's DeepLabV3-ResNet101 on the GPU (else the CPU)."""
    import torch
    from torchvision.models.segmentation import deeplabv3_resnet101

    where = "cuda" if torch.cuda.is_available() else "cpu"
    model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=21, aux_loss=False).to(where)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand((args.batch, 3, args.size, args.size), generator=generator).to(where)
    images = torch.rand((args.train_batch, 3, args.size, args.size), generator=generator).to(where)
    labels = torch.randint(0, 21, (args.train_batch, args.size, args.size), generator=generator).to(where)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9)
    loss_function = torch.nn.CrossEntropyLoss(ignore_index=255)

    def forward():
        model.eval()
        with torch.no_grad():
            out = model(pixels)["out"]
        out.sum().item()  # waits for the device

    def step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(images)["out"], labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return forward, step


def measure(side: str, args) -> dict:
    backend = BACKENDS[side]
    forward, step = torchvision_side(args) if side == "torchvision" else ours(side, args)
    result = {"side": side, "device": device(backend)}
    reset_peak(backend)
    seconds = median_seconds(forward, args.runs, warmup=2)["median_s"]
    result["forward_images_per_s"] = args.batch / seconds
    result["forward_peak_mib"], result["memory"] = peak_memory_mib(backend)
    if args.train_steps:
        reset_peak(backend)
        seconds = median_seconds(step, args.train_steps, warmup=2)["median_s"]
        result["train_images_per_s"] = args.train_batch / seconds
        result["train_peak_mib"], _ = peak_memory_mib(backend)
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--batch", type=int, default=8, help="forward batch")
    parser.add_argument("--train-batch", type=int, default=8, help="SGD step batch")
    parser.add_argument("--runs", type=int, default=10, help="timed forward passes")
    parser.add_argument("--train-steps", type=int, default=10, help="timed SGD steps (0: none)")
    parser.add_argument("--output-stride", type=int, default=16, choices=(8, 16), help="ours (torchvision's: 8)")
    parser.add_argument("--sides", nargs="+", choices=[*SIDES], default=[*SIDES])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one side in this process
    args = parser.parse_args()
    if args.one:
        os.environ["KERAS_BACKEND"] = BACKENDS[args.one]  # before Keras is imported
        print(json.dumps(measure(args.one, args)))
        return 0
    options = [f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items() if key not in ("sides", "one")]
    print(machine.describe())
    print(
        f"forward batch {args.batch}, SGD step batch {args.train_batch}, {args.size}x{args.size}, "
        f"ours at output stride {args.output_stride}"
    )
    print(f"{'model':<52}{'device':<24}{'fwd img/s':>10}{'peak MiB':>10}{'step img/s':>11}{'peak MiB':>10}")
    for side in args.sides:
        env = {**os.environ, "PYTHONPATH": ROOT}
        command = [sys.executable, os.path.abspath(__file__), "--one", side, *options]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode != 0:
            print(f"{SIDES[side]}: failed\n{done.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        step = f"{r['train_images_per_s']:.2f}" if "train_images_per_s" in r else ""
        peak = f"{r['train_peak_mib']:.0f}" if "train_peak_mib" in r else ""
        print(
            f"{SIDES[side]:<52}{r['device'][:23]:<24}{r['forward_images_per_s']:>10.2f}{r['forward_peak_mib']:>10.0f}"
            f"{step:>11}{peak:>10}  ({r['memory']}; TensorFlow imported: {r['tensorflow_imported']})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
