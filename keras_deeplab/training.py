"""`keras-deeplab train`: a recipe trained under tf.distribute, resumable from atomic checkpoints.

The loop: per-pixel cross-entropy normalised by the counted pixels of the whole global batch (so any split
over replicas gives the gradient of the whole batch), L2 weight decay on conv kernels, SGD with momentum and
a poly learning rate, synchronized batch norm when there is more than one replica, optional mixed precision.

A run directory holds everything of a run:
  recipe.json                  the checked recipe it was started with
  checkpoints/ckpt-00001000/   model, optimizer (step, momentum, learning-rate position), model.json
  logs/train, logs/eval        TensorBoard events: loss, learning rate, images, mIoU
  model.keras                  the final model (single device, float32 policy)
  result.json                  written last: the finished step and the evaluation
Every file and checkpoint folder is written under a temporary name and renamed, so killing the process at
any moment (even `kill -9`) leaves the last complete checkpoint, and running the same command resumes there.
A run whose result.json records its final step is not redone.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_deeplab.evaluation import evaluate_model
from keras_deeplab.files import TEMPORARY_PREFIX, atomic_path, read_json, write_json
from keras_deeplab.losses import segmentation_loss_terms
from keras_deeplab.model import DeepLab, build_model
from keras_deeplab.recipes import DistributionSettings, Recipe, RecipeError, TrainSettings, load_recipe
from keras_deeplab.visualize import colorize

CHECKPOINT_PREFIX = "ckpt-"


class CheckpointMismatchError(ValueError):
    """A checkpoint or model file was made for another architecture than the one being built."""


# Distribution and precision.


# Each MirroredStrategy numbers its collectives (synchronized batch norm's all-reduces) from the same start, and
# TensorFlow keeps the first shape it saw for each number: a second strategy in one process (training the OS-8
# fine-tuning after the OS-16 run, a notebook, a sweep) would fail with "Shape mismatch in the collective
# instance". Each strategy made here gets keys of its own.
_COLLECTIVE_KEYS_PER_STRATEGY = 1_000_000
_strategies_made = itertools.count()


def make_strategy(settings: DistributionSettings) -> tf.distribute.Strategy:
    """The strategy `settings` asks for: "auto" is MultiWorkerMirroredStrategy when TF_CONFIG names more than
    one task, else MirroredStrategy over `settings.devices` (default: every visible GPU, or the CPU)."""
    kind = settings.strategy
    if kind == "auto":
        kind = "multi_worker" if _cluster_size() > 1 else "mirrored"
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()  # one per process: it joins the cluster
    tf.distribute.MirroredStrategy._collective_key_base = next(_strategies_made) * _COLLECTIVE_KEYS_PER_STRATEGY
    return tf.distribute.MirroredStrategy(settings.devices)


def _cluster_size() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return sum(len(tasks) for name, tasks in cluster.items() if name in ("chief", "worker"))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where this process writes the run directory: always, except on non-chief workers of a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


def precision_policy(precision: str) -> str:
    """The Keras dtype policy of `precision`: "float32", or for "mixed" float16 on GPUs and bfloat16 on CPUs."""
    if precision == "float32":
        return "float32"
    if precision == "mixed":
        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    raise ValueError(f"precision must be 'float32' or 'mixed', got {precision!r}")


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy to `name` inside the block, restoring the previous one after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# Model, optimizer and the step.


def build_training_model(recipe: Recipe, num_replicas: int):
    """The recipe's DeepLab (synchronized batch norm over several replicas; frozen batch norm on request)."""
    model = build_model(**recipe.model, sync_batch_norm=num_replicas > 1)
    if recipe.train.freeze_batch_norm:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


def poly_learning_rate(train: TrainSettings) -> keras.optimizers.schedules.LearningRateSchedule:
    """lr(step) = (learning_rate - end) * (1 - step / steps) ** lr_power + end, the papers' "poly" policy."""
    return keras.optimizers.schedules.PolynomialDecay(
        train.learning_rate, train.steps, end_learning_rate=train.end_learning_rate, power=train.lr_power
    )


def make_optimizer(train: TrainSettings, policy: str) -> keras.optimizers.Optimizer:
    """SGD with momentum on the poly schedule; wrapped in dynamic loss scaling under float16."""
    optimizer = keras.optimizers.SGD(poly_learning_rate(train), momentum=train.momentum)
    return keras.optimizers.LossScaleOptimizer(optimizer) if policy == "mixed_float16" else optimizer


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    train: TrainSettings,
) -> Callable[[Any], tf.Tensor]:
    """A tf.function: one optimizer step on a distributed batch (images (B, H, W, 3), masks (B, H, W)).

    Each replica's loss sum is divided by the counted pixels of the whole global batch and its share of the
    weight decay by the number of replicas; the optimizer sums the replicas' gradients. The result is the
    global loss (float32 scalar): cross-entropy + weight_decay * sum(kernel ** 2) / 2.
    """
    num_replicas = strategy.num_replicas_in_sync
    kernels = [variable for variable in model.trainable_variables if variable.name.endswith("kernel")]
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(images, masks):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            total, normalizer = segmentation_loss_terms(
                masks, logits, class_weights=train.class_weights, hard_pixel_fraction=train.hard_pixel_fraction
            )
            context = tf.distribute.get_replica_context()
            global_normalizer = context.all_reduce("sum", tf.stop_gradient(normalizer))
            loss = tf.math.divide_no_nan(total, global_normalizer)
            if train.weight_decay and kernels:
                decay = tf.add_n([tf.nn.l2_loss(tf.cast(kernel, tf.float32)) for kernel in kernels])
                loss += train.weight_decay * decay / num_replicas
            scaled_loss = optimizer.scale_loss(loss) if loss_scaling else loss
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables, strict=True))
        return loss

    @tf.function
    def step(batch):
        per_replica_loss = strategy.run(replica_step, args=batch)
        return strategy.reduce("sum", per_replica_loss, axis=None)

    return step


# Checkpoints.


class CheckpointFolder:
    """`folder/ckpt-<step>/` checkpoints: written to a temporary folder then renamed, the last `keep` kept.

    Each checkpoint holds the tf.train.Checkpoint of the model and optimizer and `model.json`, the
    `build_model` arguments of the model, checked before anything is restored.
    """

    def __init__(self, folder: str, keep: int, writer: bool = True) -> None:
        self.folder = folder
        self.keep = keep
        self.writer = writer
        if writer:
            os.makedirs(folder, exist_ok=True)
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
            checkpoint.write(os.path.join(temporary, "ckpt"))
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
    """Raise CheckpointMismatchError naming every `build_model` argument that differs (sync BN aside)."""
    keys = (set(expected) | set(found)) - {"sync_batch_norm"}
    differing = sorted(key for key in keys if expected.get(key) != found.get(key))
    if differing:
        details = ", ".join(f"{key}: {found.get(key)!r} there, {expected.get(key)!r} here" for key in differing)
        raise CheckpointMismatchError(f"{where} holds a model of another architecture ({details})")


def copy_weights_by_layer(model: keras.Model, source: keras.Model, where: str) -> None:
    """Copy every weighted layer of `source` into the layer of the same name of `model`, shapes checked first.

    Raises CheckpointMismatchError naming the first layer that is missing on either side or differs in shape.
    """
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    target_layers = {layer.name: layer for layer in model.layers if layer.weights}
    for name in sorted(set(source_layers) ^ set(target_layers)):
        side = "the model being trained" if name in source_layers else where
        raise CheckpointMismatchError(f"{where}: layer '{name}' has no layer of that name in {side}")
    for name, layer in target_layers.items():
        expected = [tuple(weight.shape) for weight in layer.weights]
        found = [tuple(weight.shape) for weight in source_layers[name].weights]
        if expected != found:
            raise CheckpointMismatchError(
                f"{where}: layer '{name}' has weights of shapes {found} there, but the model expects {expected}"
            )
    for name, layer in target_layers.items():
        layer.set_weights(source_layers[name].get_weights())


def load_trained_model(path: str, output_stride: int | None = None) -> DeepLab:
    """A trained DeepLab from a `.keras` file, or from a run directory (its model.keras, else its latest
    checkpoint), optionally rebuilt at another `output_stride` with the same weights."""
    final_model = os.path.join(path, "model.keras")
    if os.path.isdir(path) and os.path.isfile(final_model):
        path = final_model
    if os.path.isdir(path):
        folder = CheckpointFolder(os.path.join(path, "checkpoints"), keep=1, writer=False)
        if not folder.steps():
            raise FileNotFoundError(f"{path}: neither model.keras nor a checkpoint in checkpoints/")
        checkpoint_path = folder.path(folder.steps()[-1])
        model = build_model(**{**checkpoint_model_config(checkpoint_path), "sync_batch_norm": False})
        status = tf.train.Checkpoint(model=model).read(os.path.join(checkpoint_path, "ckpt"))
        status.expect_partial().assert_existing_objects_matched()
    elif os.path.isfile(path):
        try:
            model = keras.saving.load_model(path)
        except Exception as error:
            raise ValueError(f"{path}: not a readable .keras model file ({error})") from error
        if not isinstance(model, DeepLab):
            raise ValueError(f"{path}: holds a {type(model).__name__}, not a DeepLab model made by build_model")
    else:
        raise FileNotFoundError(f"{path}: no such model file or run directory")
    if output_stride is not None and output_stride != model.build_config["output_stride"]:
        model = model.with_output_stride(output_stride)
    return model


# Data.


def open_sources(recipe: Recipe):
    """(train source, eval source) of the recipe, each checked to hold at least one example."""
    import pipelines

    data = recipe.data
    sources = []
    for format, split in ((data.format, data.train_split), (data.eval_format or data.format, data.eval_split)):
        source = pipelines.open_source(format, data.root, split, **data.options)
        if len(source) == 0:
            raise ValueError(
                f"{recipe.source}: data format {format!r} at {data.root!r}, split {split!r}: "
                "the dataset has no examples"
            )
        if source.num_classes != recipe.num_classes:
            raise RecipeError(
                f"{recipe.source}: model.num_classes is {recipe.num_classes} but {source.name} has "
                f"{source.num_classes} classes"
            )
        sources.append(source)
    return tuple(sources)


def distributed_training_data(strategy: tf.distribute.Strategy, source, recipe: Recipe, start_step: int):
    """The training pipeline split over replicas: each input pipeline makes per-replica batches from its own
    seed, derived from the recipe's seed, the step it starts at and its index (so a resumed run draws new
    crops rather than repeating the first ones)."""
    import pipelines

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        seed = int(
            np.random.SeedSequence([recipe.train.seed, start_step, context.input_pipeline_id]).generate_state(1)[0]
        )
        return pipelines.training_dataset(
            source,
            crop_size=recipe.data.crop_size,
            batch_size=context.get_per_replica_batch_size(recipe.train.global_batch_size),
            seed=seed,
            min_scale=recipe.data.min_scale,
            max_scale=recipe.data.max_scale,
            scale_step=recipe.data.scale_step,
            flip=recipe.data.flip,
            cache=recipe.data.cache,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


# The run.


def train(recipe: Recipe | str, overrides: Sequence[str] = (), *, progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume, or find finished) the run of `recipe` (a Recipe, a shipped name or a file path).

    Returns the run's result: {'run_dir', 'step', 'model_path', 'eval': {'miou', 'pixel_accuracy',
    'per_class_iou', ...}, 'seconds'}. Everything that can be wrong with the recipe, its data, its weight
    files or its checkpoints is checked before the first step.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise ValueError("overrides apply to a recipe name or file, not to a Recipe")
    progress = recipe.log.progress if progress is None else progress
    result_path = os.path.join(recipe.run_dir, "result.json")
    if os.path.isfile(result_path):
        result = read_json(result_path)
        if result.get("step", -1) >= recipe.train.steps:
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
        run.loop(run.restore_or_initialise(), train_source, eval_source)
    final_model = run.single_device_model()
    result = {
        "run_dir": recipe.run_dir,
        "step": recipe.train.steps,
        "model_path": os.path.join(recipe.run_dir, "model.keras"),
        "eval": run.evaluate(final_model, eval_source, recipe.train.steps),
        "seconds": round(time.time() - started, 1),
    }
    if run.chief:
        with atomic_path(result["model_path"]) as temporary:
            final_model.save(temporary)
        write_json(result_path, result)
    return result


class TrainingRun:
    """The model, optimizer and checkpoints of one run, built in the strategy's scope."""

    def __init__(self, recipe: Recipe, strategy: tf.distribute.Strategy, policy: str, progress: bool) -> None:
        self.recipe = recipe
        self.strategy = strategy
        self.progress = progress
        self.chief = is_chief(strategy)
        with strategy.scope():
            self.model = build_training_model(recipe, strategy.num_replicas_in_sync)
            self.optimizer = make_optimizer(recipe.train, policy)
            self.optimizer.build(self.model.trainable_variables)
        self.model_config = {key: value for key, value in self.model.build_config.items() if key != "sync_batch_norm"}
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        folder = os.path.join(recipe.run_dir, "checkpoints")
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
                where = f"{self.recipe.source}: train.init_checkpoint {init}"
                copy_weights_by_layer(self.model, load_trained_model(init), where)
        if self.chief:
            write_json(os.path.join(self.recipe.run_dir, "recipe.json"), self.recipe.to_dict())
        return step

    def loop(self, start_step: int, train_source, eval_source) -> None:
        """Steps start_step + 1 .. train.steps: log, checkpoint and evaluate on the recipe's schedule."""
        recipe, steps = self.recipe, self.recipe.train.steps
        if start_step >= steps:
            return
        train_step = make_train_step(self.model, self.optimizer, self.strategy, recipe.train)
        iterator = iter(distributed_training_data(self.strategy, train_source, recipe, start_step))
        writer = tf.summary.create_file_writer(os.path.join(recipe.run_dir, "logs", "train")) if self.chief else None
        schedule = poly_learning_rate(recipe.train)
        bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "lr"]) if self.progress else None
        print(f"{recipe.run_dir}: training steps {start_step + 1}..{steps}", flush=True)
        for step in range(start_step + 1, steps + 1):
            batch = next(iterator)
            loss = float(train_step(batch))
            if not np.isfinite(loss) and recipe.train.precision == "float32":
                raise FloatingPointError(f"{recipe.run_dir}: the loss is {loss} at step {step}")
            learning_rate = float(schedule(step - 1))
            if bar is not None:
                bar.update(step, [("loss", loss), ("lr", learning_rate)])
            if writer is not None:
                self._log(writer, step, loss, learning_rate, batch)
            if step % recipe.checkpoint.every_steps == 0 or step == steps:
                self.checkpoints.save(self.checkpoint, step, self.model_config)
            if recipe.eval.every_steps and step % recipe.eval.every_steps == 0 and step < steps:
                self.evaluate(self.single_device_model(), eval_source, step)

    def _log(self, writer, step: int, loss: float, learning_rate: float, batch) -> None:
        """TensorBoard: loss and learning rate; on its schedule, the first example's input, truth and prediction
        in the VOC colours."""
        with writer.as_default(step=step):
            if step % self.recipe.log.every_steps == 0 or step == self.recipe.train.steps:
                tf.summary.scalar("loss", loss)
                tf.summary.scalar("learning_rate", learning_rate)
            if self.recipe.log.image_every_steps and step % self.recipe.log.image_every_steps == 0:
                images, masks = (self.strategy.experimental_local_results(part)[0][:1] for part in batch)
                prediction = tf.argmax(self.model(images, training=False), axis=-1).numpy()
                tf.summary.image("input", tf.cast(images, tf.uint8))
                tf.summary.image("truth", colorize(masks.numpy()))
                tf.summary.image("prediction", colorize(prediction))

    def single_device_model(self):
        """The network as a plain float32 model outside any strategy (batch norm not synchronized)."""
        with dtype_policy("float32"):
            copy = build_model(**self.model_config, name=self.model.name)
        copy.set_weights(self.model.get_weights())
        return copy

    def evaluate(self, model, source, step: int) -> dict[str, Any]:
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


# Command line.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train (or resume) a recipe; see keras_deeplab/configs/")
    parser.add_argument("--config", required=True, help="a shipped recipe name (e.g. demo) or a recipe JSON file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set train.steps=100 --set run_dir=runs/try (values read as JSON)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = train(args.config, args.overrides, progress=False if args.no_progress else None)
    if args.json:
        print(json.dumps(result))
    else:
        miou = result["eval"]["miou"]
        print(f"{result['run_dir']}: step {result['step']}, mIoU {miou:.4f}, model {result['model_path']}")
    return 0
