"""`train`: the run of a recipe, from its run folder's state (new, interrupted or finished) to `result.json`."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_deeplab.checkpoints import (
    CHECKPOINTS_FOLDER,
    CheckpointFolder,
    CheckpointMismatchError,
    check_same_architecture,
    checkpoint_model_config,
)
from keras_deeplab.evaluation import evaluate_model
from keras_deeplab.files import TEMPORARY_PREFIX, atomic_path, read_json, write_json
from keras_deeplab.loading import FINAL_MODEL, load_model
from keras_deeplab.model import DeepLab, build_model
from keras_deeplab.precision import dtype_policy, precision_policy
from keras_deeplab.recipe import Recipe, RecipeError, TrainSettings, load_recipe
from keras_deeplab.training.inputs import distributed_training_data, open_sources
from keras_deeplab.training.step import (
    batch_norm_frozen,
    build_training_model,
    freeze_folded_batch_norm,
    learning_rate_schedule,
    make_optimizer,
    make_train_step,
)
from keras_deeplab.training.strategy import (
    cluster_size,
    cluster_sum,
    is_chief,
    lost_task,
    make_strategy,
    this_task,
)
from keras_deeplab.visualize import colorize
from keras_deeplab.weights import copy_layer_weights, layer_weights, weights_digest
from pipelines.source import data_errors

# What TensorFlow raises in a worker whose peer is gone: the collectives abort (UNAVAILABLE when the peer's
# port refuses, or when the coordination service's heartbeats (10 s) find it gone), or are cancelled/aborted.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)


class WorkerLostError(ConnectionError):
    """A worker of the cluster stopped during training (killed, preempted, its host gone): the others stop too.

    The process that raises it cannot tear TensorFlow's distributed runtime down cleanly: the destructor of the
    distributed dataset's iterator waits tens of seconds for a buffer the lost peer will never fill. So a
    command line that gets it should report it and end the process at once (`exit_at_once`).
    """

    exit_at_once = True


class ClusterMismatchError(ValueError):
    """The workers of a cluster do not start from the same state (their run folders are not one shared folder)."""


def finished_result(path: str) -> dict[str, Any]:
    """The record `train` writes last in a run folder, checked: an object with the finished "step" (an int) and
    its "eval" (an object with "miou"); anything else is refused in one line, never half-read."""
    try:
        result = read_json(path)
    except ValueError as error:  # not JSON
        raise RecipeError(f"{path}: not JSON ({error}); remove it to train the run again") from None
    if not (
        isinstance(result, dict)
        and type(result.get("step")) is int
        and isinstance(result.get("eval"), dict)
        and "miou" in result["eval"]
    ):
        raise RecipeError(
            f'{path}: expected the record train writes (an object with an int "step" and an "eval" object '
            'with "miou"); remove it to train the run again'
        )
    return result


def train(recipe: Recipe | str, overrides: Sequence[str] = (), *, progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume, or find finished) the run of `recipe` (a Recipe, a shipped name or a file path).

    Returns the run's result: {'run_dir', 'step', 'model_path', 'eval': {'miou', 'pixel_accuracy',
    'per_class_iou', ...}, 'seconds'}. Everything that can be wrong with the recipe, its data, its weight
    files or its checkpoints is checked before the first step. TensorFlow only (tf.distribute, `tf.function`
    steps, tf.train checkpoints): under another Keras backend a ValueError says so before anything is read.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"the recipe trainer runs on TensorFlow (tf.distribute) and Keras' backend is {keras.backend.backend()!r}:"
            " set KERAS_BACKEND=tensorflow, or train with model.compile/fit (docs/backends.md)"
        )
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise ValueError("overrides apply to a recipe name or file, not to a Recipe")
    progress = recipe.log.progress if progress is None else progress
    if os.path.exists(recipe.run_dir) and not os.path.isdir(recipe.run_dir):
        raise RecipeError(f"{recipe.source}: run_dir {recipe.run_dir!r} is a file, not a folder")
    result_path = os.path.join(recipe.run_dir, "result.json")
    if os.path.isfile(result_path):
        result = finished_result(result_path)
        if result["step"] >= recipe.train.steps:
            print(f"{recipe.run_dir}: finished at step {result['step']}; nothing to do", flush=True)
            return result
    strategy = make_strategy(recipe.distribution)
    if recipe.train.global_batch_size % strategy.num_replicas_in_sync:
        raise RecipeError(
            f"{recipe.source}: train.global_batch_size {recipe.train.global_batch_size} does not split over "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    weights = recipe.model.get("backbone_weights")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"{recipe.source}: model.backbone_weights: no such file {weights!r}")
    train_source, eval_source = open_sources(recipe)
    policy = precision_policy(recipe.train.precision)
    keras.utils.set_random_seed(recipe.train.seed)  # initial weights and dropout: a run is repeatable
    started = time.time()
    with dtype_policy(policy):
        run = TrainingRun(recipe, strategy, policy, progress)
    try:
        with dtype_policy(policy), data_errors(train_source):  # evaluation raises its own
            run.loop(run.restore_or_initialise(), train_source, eval_source)
        final_model = run.single_device_model()
        result = {
            "run_dir": recipe.run_dir,
            "step": recipe.train.steps,
            "model_path": os.path.join(recipe.run_dir, FINAL_MODEL),
            "weights_sha256": weights_digest(final_model),
            "eval": run.evaluate(final_model, eval_source, recipe.train.steps),
            "seconds": round(time.time() - started, 1),
        }
        if run.chief:
            with atomic_path(result["model_path"]) as temporary:
                final_model.save(temporary)
            write_json(result_path, result)
        if run.task:
            run.step = "the end"
            cluster_sum(strategy, 1)  # a barrier: every worker leaves the cluster only once all are done
    except PEER_ERRORS as error:
        if not run.task:
            raise
        raise run.lost(error) from error
    return result


class TrainingRun:
    """The model, optimizer and checkpoints of one run, built in the strategy's scope."""

    def __init__(self, recipe: Recipe, strategy: tf.distribute.Strategy, policy: str, progress: bool) -> None:
        self.recipe = recipe
        self.strategy = strategy
        self.policy = policy
        self.progress = progress
        self.chief = is_chief(strategy)
        self.task = this_task(strategy)  # "worker 1" in a cluster, else ""
        self.step: int | str = 0  # the step running now (for the message when a worker is lost)
        self.saved_step = 0  # the step of the last checkpoint restored or written
        if self.chief:
            remove_leftovers(recipe.run_dir)
        with strategy.scope():
            self.model = build_training_model(recipe, strategy.num_replicas_in_sync)
            self.optimizer = make_optimizer(recipe.train, policy)
            self.optimizer.build(self.model.trainable_variables)
        self.model_config = {key: value for key, value in self.model.build_config.items() if key != "sync_batch_norm"}
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        folder = os.path.join(recipe.run_dir, CHECKPOINTS_FOLDER)
        self.checkpoints = CheckpointFolder(folder, recipe.checkpoint.keep, writer=self.chief)

    def restore_or_initialise(self) -> int:
        """Restore the latest checkpoint (its step is returned), or else load train.init_checkpoint (step 0)."""
        steps = self.checkpoints.steps()
        if steps:
            path = self.checkpoints.path(steps[-1])
            check_same_architecture(self.model_config, checkpoint_model_config(path), f"checkpoint {path}")
            self.checkpoint.read(os.path.join(path, "ckpt")).assert_existing_objects_matched()
            step = steps[-1]
        else:
            step = 0
            init = self.recipe.train.init_checkpoint
            if init:
                self._initialise_from(init)
        folded = freeze_folded_batch_norm(self.model)
        if self.chief:
            note = batch_norm_note(self.recipe.train, folded)
            if note:
                print(f"{self.recipe.run_dir}: {note}", flush=True)
        if self.task:
            self._check_same_start(step)
        if self.chief:
            write_json(os.path.join(self.recipe.run_dir, "recipe.json"), self.recipe.to_dict())
        self.step = self.saved_step = step
        return step

    def _initialise_from(self, path: str) -> None:
        """Copy the weights of `path` (any `load_model` source: a .keras file, a run folder, a published DeepLab)
        layer by layer; when its number of classes differs from the recipe's, every weight but the logits (fine-
        tuning a published model on one's own classes: the logits start fresh)."""
        where = f"{self.recipe.source}: train.init_checkpoint {path}"
        source = load_model(path)
        weights = layer_weights(source)
        fresh: tuple[str, ...] = ()
        if source.build_config["num_classes"] != self.model.build_config["num_classes"]:
            fresh = tuple(name for name in weights if name == "logits" or name.startswith("logits_"))
            for name in fresh:
                del weights[name]
        copy_layer_weights(
            self.model, weights, where, every_model_layer=True, fresh=fresh, error=CheckpointMismatchError
        )
        if fresh:
            classes = f"{source.build_config['num_classes']} -> {self.model.build_config['num_classes']} classes"
            print(f"{where}: every weight but the logits ({classes}: they start fresh)", flush=True)

    def _check_same_start(self, step: int) -> None:
        """Every worker must resume at the same step (found in the one shared run folder)."""
        replicas = self.strategy.num_replicas_in_sync
        self.step = "the start"
        total = cluster_sum(self.strategy, step)
        if total != step * replicas:
            raise ClusterMismatchError(
                f"{self.recipe.run_dir}: {self.task} starts at step {step} but other workers do not (their steps "
                f"sum to {total} over {replicas} replicas): run_dir must be one folder shared by every host"
            )

    def lost(self, error: tf.errors.OpError) -> WorkerLostError:
        """The one-line account of a lost worker: which, when, and how to resume."""
        where = f"at step {self.step}" if isinstance(self.step, int) else f"at {self.step} of the run"
        if self.saved_step:
            resume = f"resumes from the last checkpoint (step {self.saved_step})"
        else:
            resume = "starts again (no checkpoint was written yet)"
        return WorkerLostError(
            f"{lost_task(self.strategy, error.message)} was lost {where}, so {self.task} stopped too; run the same "
            f"command again on every host: training {resume}"
        )

    def loop(self, start_step: int, train_source, eval_source) -> None:
        """Steps start_step + 1 .. train.steps: log, checkpoint and evaluate on the recipe's schedule."""
        recipe, steps = self.recipe, self.recipe.train.steps
        if start_step >= steps:
            return
        train_step = make_train_step(self.model, self.optimizer, self.strategy, recipe.train)
        iterator = iter(distributed_training_data(self.strategy, train_source, recipe, start_step))
        writer = tf.summary.create_file_writer(os.path.join(recipe.run_dir, "logs", "train")) if self.chief else None
        schedule = learning_rate_schedule(recipe.train)
        bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "lr"]) if self.progress else None
        replicas = self.strategy.num_replicas_in_sync
        split = (
            f"global batch {recipe.train.global_batch_size} = {replicas} x {recipe.train.global_batch_size // replicas}"
        )
        where = f", {self.task} of {cluster_size()} workers" if self.task else ""
        print(f"{recipe.run_dir}: training steps {start_step + 1}..{steps} ({split}{where})", flush=True)
        first_loss = None
        for step in range(start_step + 1, steps + 1):
            self.step = step
            batch = next(iterator)
            loss = float(train_step(batch))
            if not np.isfinite(loss) and self.policy == "float32":
                raise FloatingPointError(
                    f"{recipe.run_dir}: the loss is {loss} at step {step}; "
                    f"{divergence_hint(first_loss, recipe.num_classes, recipe.train)}"
                )
            first_loss = loss if first_loss is None else first_loss
            learning_rate = float(schedule(step - 1))
            if bar is not None:
                bar.update(step, [("loss", loss), ("lr", learning_rate)])
            if writer is not None:
                self._log(writer, step, loss, learning_rate, batch, train_source)
            if step % recipe.checkpoint.every_steps == 0 or step == steps:
                self.checkpoints.save(self.checkpoint, step, self.model_config)
                self.saved_step = step
            if recipe.eval.every_steps and step % recipe.eval.every_steps == 0 and step < steps:
                self.evaluate(self.single_device_model(), eval_source, step)

    def _log(self, writer, step: int, loss: float, learning_rate: float, batch, source) -> None:
        """TensorBoard: loss and learning rate; on its schedule, the first example's input, truth and prediction
        in the dataset's colours."""
        with writer.as_default(step=step):
            if step % self.recipe.log.every_steps == 0 or step == self.recipe.train.steps:
                tf.summary.scalar("loss", loss)
                tf.summary.scalar("learning_rate", learning_rate)
            if self.recipe.log.image_every_steps and step % self.recipe.log.image_every_steps == 0:
                images, masks = (self.strategy.experimental_local_results(part)[0][:1] for part in batch)
                prediction = tf.argmax(self.model(images, training=False), axis=-1).numpy()
                tf.summary.image("input", tf.cast(images, tf.uint8))
                tf.summary.image("truth", colorize(masks.numpy(), source.descriptor))
                tf.summary.image("prediction", colorize(prediction, source.descriptor))

    def single_device_model(self) -> DeepLab:
        """The network as a plain float32 model outside any strategy (batch norm not synchronized)."""
        with dtype_policy("float32"):
            copy = build_model(**self.model_config, name=self.model.name)
        copy.set_weights(self.model.get_weights())
        return copy

    def evaluate(self, model: DeepLab, source, step: int) -> dict[str, Any]:
        """Evaluate on the eval split (at eval.output_stride, scales and flips); log mIoU to TensorBoard."""
        settings = self.recipe.eval
        if settings.output_stride is not None and settings.output_stride != model.build_config["output_stride"]:
            model = model.with_output_stride(settings.output_stride)
        results = evaluate_model(
            model,
            source,
            scales=settings.scales,
            flip=settings.flip,
            max_examples=settings.max_examples,
            progress=self.progress,
        )
        if self.chief:
            folder = os.path.join(self.recipe.run_dir, "logs", "eval")
            with tf.summary.create_file_writer(folder).as_default(step=step):
                tf.summary.scalar("miou", results["miou"])
                tf.summary.scalar("pixel_accuracy", results["pixel_accuracy"])
        print(f"{self.recipe.run_dir}: step {step}: mIoU {results['miou']:.4f}", flush=True)
        return results


def batch_norm_note(train: TrainSettings, folded: int) -> str:
    """The line that says which batch norm layers train their statistics, when it is not simply all of them
    (empty then)."""
    if batch_norm_frozen(train):
        if train.freeze_batch_norm is None:
            return (
                "batch norm in inference mode (fine-tuning from train.init_checkpoint; "
                "train.freeze_batch_norm=true|false decides)"
            )
        return ""
    if folded:
        return (
            f"{folded} batch norm layers hold statistics folded into their convs (a published TFLite file): they "
            "stay in inference mode"
        )
    return ""


# A step-1 loss above this many times log(num_classes), the cross-entropy of a network that knows nothing, is
# not a network's loss on its own data: its outputs were off before any update.
HUGE_FIRST_LOSS = 100.0


def divergence_hint(first_loss: float | None, num_classes: int, train: TrainSettings) -> str:
    """Why the loss likely went non-finite, in one clause: from the loss of the run's first step (None: the
    first step itself) against log(num_classes), and the recipe's batch norm and learning rate."""
    scale = math.log(max(num_classes, 2))
    too_high = f"train.learning_rate {train.learning_rate:g} too high"
    frozen = batch_norm_frozen(train)
    if first_loss is None or first_loss > HUGE_FIRST_LOSS * scale:
        if first_loss is None:
            first = f"not finite from the first step on (expected near log({num_classes}) = {scale:.2f} or below)"
        else:
            first = f"the first step's loss {first_loss:.3g} is far above log({num_classes}) = {scale:.2f} (chance)"
        causes = []
        if frozen:
            causes.append(
                "batch-norm statistics that never settled (a short first stage), frozen here (try "
                "train.freeze_batch_norm=false, or a longer first stage)"
            )
        if train.init_checkpoint:
            causes.append("a model section that does not fit train.init_checkpoint")
        causes.append(too_high)
        return f"{first}: the starting weights misbehave on this data; likely {'; or '.join(causes)}"
    causes = [f"{too_high} (a converged network fine-tunes at 1e-4 or below with momentum {train.momentum:g})"]
    if not frozen:
        batches = train.global_batch_size
        causes.append(f"batch-norm statistics of batches of {batches} (try train.freeze_batch_norm=true)")
    return (
        f"the first step's loss was {first_loss:.3g} (log({num_classes}) = {scale:.2f}): the training diverged; "
        f"likely {'; or '.join(causes)}"
    )


def remove_leftovers(run_dir: str) -> None:
    """Remove what a run killed while writing left in `run_dir` (temporary files and folders of atomic writes)."""
    if not os.path.isdir(run_dir):
        return
    for name in os.listdir(run_dir):
        if name.startswith(TEMPORARY_PREFIX):
            path = os.path.join(run_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
