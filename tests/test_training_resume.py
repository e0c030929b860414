"""A run killed with SIGKILL resumes from its last checkpoint, step and optimizer included; a finished run
is not redone. The command runs in a subprocess exactly as a user types it, twice; the third time, which finds the
run finished before TensorFlow starts anything, in this process (a process would only add TensorFlow's import)."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from miou_reference import reference_miou

from keras_deeplab import build_model
from keras_deeplab.checkpoints import CheckpointFolder
from keras_deeplab.cli import main
from keras_deeplab.recipe import load_recipe
from keras_deeplab.training.step import make_optimizer, poly_learning_rate
from pipelines.formats import open_source

STEPS = 12
# VGG-16 under the ASPP head (batch norm there): each process traces its step in about half the tiny ResNet-50's time.
MODEL = {"backbone": "vgg16", "width_multiplier": 0.125, "aspp_filters": 16, "num_classes": 5}


def train_command(run_dir):
    overrides = [
        f"run_dir={run_dir}",
        f"model={json.dumps(MODEL)}",
        'data.options={"num_examples": 8, "image_size": 64}',
        "data.crop_size=65",
        "train.global_batch_size=2",
        f"train.steps={STEPS}",
        "checkpoint.every_steps=3",
        "checkpoint.keep=2",
        "eval.max_examples=2",
        "log.every_steps=5",
        "log.image_every_steps=10",
    ]
    command = [sys.executable, "-m", "keras_deeplab.cli", "train", "--recipe", "demo", "--no-progress"]
    return command + [part for override in overrides for part in ("--set", override)]


def run(command):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


@pytest.mark.slow(35)
def test_killed_run_resumes_from_its_last_checkpoint_and_a_finished_run_is_not_redone(tmp_path, capsys):
    run_dir = tmp_path / "run"
    command = train_command(run_dir)
    folder = CheckpointFolder(str(run_dir / "checkpoints"), keep=2, writer=False)
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    try:
        deadline = time.time() + 240
        while not folder.steps() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # a step or so later; short: here checkpoint 12 follows checkpoint 3 by 0.66 s
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    saved = folder.steps()
    assert saved and saved[-1] < STEPS and not (run_dir / "result.json").exists()
    last = saved[-1]

    # The checkpoint holds the step and the optimizer: iterations, hence the learning-rate position.
    model = build_model(16, **MODEL)
    optimizer = make_optimizer(load_recipe("demo", [f"train.steps={STEPS}"]).train, "float32")
    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(model=model, optimizer=optimizer).read(os.path.join(folder.path(last), "ckpt")).expect_partial()
    assert int(optimizer.iterations) == last
    momentum = [np.abs(np.array(variable)).max() for variable in optimizer.variables if "momentum" in variable.path]
    assert momentum and max(momentum) > 0

    resumed = run(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"training steps {last + 1}..{STEPS}" in resumed.stdout
    result = json.loads((run_dir / "result.json").read_text())
    assert result["step"] == STEPS
    # The reported mIoU is the saved final model's on the eval split, computed here another way.
    source = open_source("synthetic", None, "val", num_examples=8, image_size=64)
    final = keras.saving.load_model(result["model_path"])
    assert result["eval"]["miou"] == pytest.approx(reference_miou(final, source, 2), abs=1e-6)
    assert folder.steps() == [STEPS - 3, STEPS]
    assert float(poly_learning_rate(load_recipe("demo", [f"train.steps={STEPS}"]).train)(STEPS)) == 0.0
    for logs in ("train", "eval"):
        assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir / "logs" / logs))
    model_time = os.path.getmtime(run_dir / "model.keras")

    assert main(command[3:]) == 0  # the arguments after `python -m keras_deeplab.cli`
    again = capsys.readouterr().out
    assert f"{run_dir}: finished at step {STEPS}; nothing to do" in again
    assert "training steps" not in again and os.path.getmtime(run_dir / "model.keras") == model_time
