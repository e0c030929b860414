"""The arithmetic a model runs in: `precision` settings ("float32", "mixed", "auto") and Keras dtype policies.

"auto" picks what pays on the machine at hand: float16 with float32 variables on a GPU, bfloat16 where the CPU
computes it natively (AVX512_BF16 or AMX; elsewhere oneDNN emulates it, slower than float32), float32 otherwise.
The README states the accuracy cost, measured on real photos with the published weights
(`benchmarks/bfloat16.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from keras_deeplab import machine
from keras_deeplab.constants import PRECISIONS


def precision_policy(precision: str) -> str:
    """The Keras dtype policy of `precision`: "float32"; "mixed": float16 on GPUs, bfloat16 on CPUs; "auto":
    float16 on GPUs, bfloat16 on CPUs that compute it natively, else float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "float32":
        return "float32"
    if gpu_visible():
        return "mixed_float16"
    return "mixed_bfloat16" if precision == "mixed" or machine.native_bfloat16() else "float32"


def gpu_visible() -> bool:
    """True when the Keras backend (TensorFlow, JAX or PyTorch) sees a GPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy to `name` inside the block, restoring the previous one after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
