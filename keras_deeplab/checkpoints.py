"""A run folder's checkpoints: `ckpt-<step>/` folders written whole or not at all, each naming its architecture.

    checkpoints/ckpt-00001000/   ckpt.index, ckpt.data-*  the tf.train.Checkpoint (model, optimizer)
                                 model.json               the `build_model` arguments of the model
A checkpoint is written to a temporary folder and renamed, so a reader (training that resumes, `load_model`)
only ever sees complete ones; `model.json` is checked before anything is restored.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf

from keras_deeplab.backbones import canonical_build_config
from keras_deeplab.files import TEMPORARY_PREFIX, atomic_path, make_folder, write_json
from keras_deeplab.weights import WeightFileError

CHECKPOINT_PREFIX = "ckpt-"
CHECKPOINTS_FOLDER = "checkpoints"  # inside a run folder


class CheckpointMismatchError(WeightFileError):
    """A checkpoint or model file was made for another architecture than the one being built."""


class CheckpointFolder:
    """`folder/ckpt-<step>/` checkpoints: written to a temporary folder then renamed, the last `keep` kept.

    A writer removes what a killed writer left (temporary folders) when it opens the folder.
    """

    def __init__(self, folder: str, keep: int, writer: bool = True) -> None:
        self.folder = folder
        self.keep = keep
        self.writer = writer
        if writer:
            make_folder(folder)
            for name in os.listdir(folder):
                if name.startswith(TEMPORARY_PREFIX):  # left by a process killed while writing
                    shutil.rmtree(os.path.join(folder, name), ignore_errors=True)

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, ascending."""
        if not os.path.isdir(self.folder):
            return []
        names = [name for name in os.listdir(self.folder) if name.startswith(CHECKPOINT_PREFIX)]
        return sorted(int(name[len(CHECKPOINT_PREFIX) :]) for name in names)

    def path(self, step: int) -> str:
        return os.path.join(self.folder, f"{CHECKPOINT_PREFIX}{step:08d}")

    def save(self, checkpoint: tf.train.Checkpoint, step: int, model_config: dict) -> None:
        """Write the checkpoint of `step`. Every worker of a cluster calls this; only the writer keeps it."""
        if not self.writer:
            scratch = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX)
            checkpoint.write(os.path.join(scratch, "ckpt"))  # every worker takes part in the collective write
            shutil.rmtree(scratch, ignore_errors=True)
            return
        final = self.path(step)
        with atomic_path(final) as temporary:
            os.makedirs(temporary)
            try:
                checkpoint.write(os.path.join(temporary, "ckpt"))
            except tf.errors.OpError as error:  # a full disk surfaces as TensorFlow's error, naming no file
                raise OSError(f"{final}: cannot write the checkpoint of step {step} ({error.message})") from error
            write_json(os.path.join(temporary, "model.json"), model_config)
            if os.path.isdir(final):
                self._remove(final)
        for old_step in self.steps()[: -self.keep]:
            self._remove(self.path(old_step))

    def _remove(self, path: str) -> None:
        doomed = tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}old-", dir=self.folder)
        os.replace(path, os.path.join(doomed, "checkpoint"))  # a rename first: never half a checkpoint
        shutil.rmtree(doomed, ignore_errors=True)


def checkpoint_model_config(path: str) -> dict:
    """The `build_model` arguments recorded beside a checkpoint folder's `ckpt` files."""
    config_path = os.path.join(path, "model.json")
    try:
        with open(config_path, encoding="utf8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointMismatchError(f"{config_path}: cannot read the checkpoint's model config ({error})") from error


def check_same_architecture(expected: dict, found: dict, where: str) -> None:
    """Raise CheckpointMismatchError naming every `build_model` argument that differs (sync BN aside); configs
    saved by older versions compare as this version saves them."""
    expected, found = canonical_build_config(expected), canonical_build_config(found)
    keys = (set(expected) | set(found)) - {"sync_batch_norm"}
    differing = sorted(key for key in keys if expected.get(key) != found.get(key))
    if differing:
        details = ", ".join(f"{key}: {found.get(key)!r} there, {expected.get(key)!r} here" for key in differing)
        raise CheckpointMismatchError(f"{where} holds a model of another architecture ({details})")
