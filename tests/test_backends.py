"""The same DeepLab on JAX and PyTorch as on TensorFlow: a model saved here (TensorFlow) gives the same logits there
through both loaders, inference, the loss and the metric agree, and `fit` (under `jax.jit` on JAX) with the
project's loss and metric on tf.data input lowers the loss. One process per backend (tests/backend_checks.py) runs
every check at once."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_deeplab import build_model
from keras_deeplab.inference import class_probabilities
from keras_deeplab.losses import segmentation_loss
from keras_deeplab.metrics import MeanIoU

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny v3+ through every resize of the model layer: corner-aligned upsampling, separable convs, multi-scale
# inputs. VGG-16 (13 convs, no batch norm in the backbone) keeps JAX's compile short.
BUILD_CONFIG = {
    "output_stride": 16,
    "num_classes": 3,
    "backbone": "vgg16",
    "width_multiplier": 0.125,
    "aspp_filters": 8,
    "decoder": True,
    "separable": True,
    "align_corners": True,
    "multi_scale_inputs": [1.0, 0.75],
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A folder holding the BUILD_CONFIG model saved under TensorFlow, and what TensorFlow computes of it."""
    folder = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 32, 32)).astype(np.uint8)
    labels[:, :4] = 255
    keras.utils.set_random_seed(0)  # the same weights every run
    model = build_model(**BUILD_CONFIG)
    (folder / "build_config.json").write_text(json.dumps(BUILD_CONFIG))
    model.set_weights([w + rng.normal(scale=0.05, size=w.shape).astype(w.dtype) for w in model.get_weights()])
    model.save(folder / "model.keras")
    logits = model.predict_on_batch(images)
    metric = MeanIoU(3)
    metric.update_state(labels, logits)
    np.savez(
        folder / "expected.npz",
        images=images,
        labels=labels,
        logits=logits,
        probabilities=class_probabilities(model.predict_on_batch, images, scales=(1.0, 0.75), flip=True).numpy(),
        # the official export's handling (--fit-to) of a 32x24 photo: fitted to 40x30, padded, cut out, resized back
        fitted=class_probabilities(model.predict_on_batch, images[:, :, :24], fit_to=40, pad_pixel=model.mean_pixel),
        loss=segmentation_loss(labels, logits, class_weights=[1.0, 2.0, 0.5], hard_pixel_fraction=0.5).numpy(),
        miou=metric.result().numpy(),
    )
    return folder


@pytest.mark.slow(45)
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_same_deeplab_on_another_backend(saved, backend):
    pytest.importorskip(backend)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": ROOT}
    # XLA compiles every op JAX runs eagerly (each weight initialiser, each layer of an eager call, each new shape:
    # about 500 programs here); without LLVM's optimisations that takes 45 s instead of 106 s on 2 busy cores. The
    # programs compute the same figures (the checks' tolerances are 1e-4 and below); only their speed differs.
    env["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0"]))
    script = os.path.join(ROOT, "tests", "backend_checks.py")
    done = subprocess.run([sys.executable, script, str(saved)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(backend, result["seconds"])
    assert result["backend"] == backend
    assert not result["tensorflow_imported_by_build"]
    if backend == "jax":
        assert result["eval_shape"] == [1, 40, 48, 3]
    for loader in ("load_model", "keras"):
        assert result[f"{loader}_relative"] <= 1e-4 and result[f"{loader}_argmax"] == 1.0, result
    assert result["probabilities_diff"] <= 1e-5 and result["fitted_diff"] <= 1e-5
    assert result["loss_diff"] <= 1e-5 and result["miou_diff"] <= 1e-6
    assert result["fit_loss"][-1] < result["fit_loss"][0] - 0.01 and 0 < result["fit_miou"][-1] <= 1, result
    assert result["flat_channel_batch_norm_finite"]
    assert "runs on TensorFlow" in result["train_refusal"] and backend in result["train_refusal"]
