"""The model, optimizer and SGD step of training.

The loss: per-pixel cross-entropy normalised by the counted pixels of the whole global batch (so any split over
replicas gives the gradient of the whole batch), L2 weight decay on conv kernels; SGD with momentum on the poly
(or step) learning rate, the class-score layers' gradients scaled by `classifier_lr_multiplier`; synchronized batch
norm when there is more than one replica. A model with multi_scale_inputs (v2's MSC) adds the loss of each
scale's logits to that of the fused logits, as v2 does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_deeplab.losses import segmentation_loss_terms
from keras_deeplab.model import DeepLab, build_model
from keras_deeplab.recipe import Recipe, TrainSettings
from keras_deeplab.weights import weighted_layers


def batch_norm_frozen(train: TrainSettings) -> bool:
    """train.freeze_batch_norm, or when it is unset (None), whether training starts from train.init_checkpoint: a
    converged network keeps its batch statistics, as research/deeplab fine-tunes (fine_tune_batch_norm=False)."""
    if train.freeze_batch_norm is None:
        return train.init_checkpoint is not None
    return train.freeze_batch_norm


def build_training_model(recipe: Recipe, num_replicas: int) -> DeepLab:
    """The recipe's DeepLab (synchronized batch norm over several replicas; frozen batch norm as
    `batch_norm_frozen` says)."""
    model = build_model(**recipe.model, sync_batch_norm=num_replicas > 1)
    if batch_norm_frozen(recipe.train):
        for layer in batch_norm_layers(model):
            layer.trainable = False
    return model


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every batch norm layer of `model`, nested sub-models (multi_scale_inputs' "scale_network") included."""
    return [layer for layer in weighted_layers(model).values() if isinstance(layer, keras.layers.BatchNormalization)]


def is_folded_batch_norm(layer: keras.layers.BatchNormalization) -> bool:
    """True for a batch norm whose statistics were folded into the conv before it (a published TFLite file, as
    `import_weights` loads it): gamma 1, moving mean 0, moving variance 1 - epsilon, an identity plus the conv's
    bias. In training mode it would normalise with batch statistics the folded weights never saw."""
    gamma = 1.0 if layer.gamma is None else np.asarray(layer.gamma)
    mean, variance = np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)
    identity = np.float32(1.0 - layer.epsilon)
    return bool(np.all(gamma == 1.0) and np.all(mean == 0.0) and np.all(variance == identity))


def freeze_folded_batch_norm(model: keras.Model) -> int:
    """Put the batch norm layers of `model` that `is_folded_batch_norm` finds in inference mode (not trainable);
    returns how many of the trainable ones it froze."""
    folded = [layer for layer in batch_norm_layers(model) if layer.trainable and is_folded_batch_norm(layer)]
    for layer in folded:
        layer.trainable = False
    return len(folded)


def poly_learning_rate(train: TrainSettings) -> keras.optimizers.schedules.LearningRateSchedule:
    """lr(step) = (learning_rate - end) * (1 - step / steps) ** lr_power + end, the papers' "poly" policy."""
    return keras.optimizers.schedules.PolynomialDecay(
        train.learning_rate, train.steps, end_learning_rate=train.end_learning_rate, power=train.lr_power
    )


def learning_rate_schedule(train: TrainSettings) -> keras.optimizers.schedules.LearningRateSchedule:
    """The recipe's schedule: poly (`poly_learning_rate`), or step: learning_rate * lr_step_factor **
    floor(step / lr_step_every), Caffe's "step" policy of DeepLab v1 (x0.1 every 2000 iterations)."""
    if train.lr_schedule == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            train.learning_rate, train.lr_step_every, train.lr_step_factor, staircase=True
        )
    return poly_learning_rate(train)


def classifier_variables(model: keras.Model) -> list:
    """The trainable variables of the class-score layers: "logits" and "logits_<i>" (v2's branches' fc8), nested
    sub-models (multi_scale_inputs' "scale_network") included."""
    return [
        variable
        for name, layer in weighted_layers(model).items()
        if name == "logits" or name.startswith("logits_")
        for variable in layer.trainable_weights
    ]


def make_optimizer(train: TrainSettings, policy: str) -> keras.optimizers.Optimizer:
    """SGD with momentum on the recipe's schedule; wrapped in dynamic loss scaling under float16."""
    optimizer = keras.optimizers.SGD(learning_rate_schedule(train), momentum=train.momentum)
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
    global loss (float32 scalar): cross-entropy + weight_decay * sum(kernel ** 2) / 2, the cross-entropy summed
    over the fused and each scale's logits for a model with multi_scale_inputs (`DeepLab.training_model`). The
    gradients of `classifier_variables` are multiplied by train.classifier_lr_multiplier (for SGD, the same as
    their learning rate multiplied).
    """
    num_replicas = strategy.num_replicas_in_sync
    kernels = [variable for variable in model.trainable_variables if variable.name.endswith("kernel")]
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    network = model.training_model() if isinstance(model, DeepLab) else model
    multiplier = float(getattr(train, "classifier_lr_multiplier", 1.0))
    boosted = {id(variable) for variable in classifier_variables(model)} if multiplier != 1.0 else set()

    def replica_step(images, masks):
        # The name scopes "forward", "backward" and "update" label each op's phase in a profile
        # (benchmarks/profile_train_step.py).
        with tf.GradientTape() as tape, tf.name_scope("forward"):
            outputs = network(images, training=True)
            total, normalizer = 0.0, None
            for logits in outputs if isinstance(outputs, list | tuple) else [outputs]:
                term, normalizer = segmentation_loss_terms(
                    masks, logits, class_weights=train.class_weights, hard_pixel_fraction=train.hard_pixel_fraction
                )
                total += term
            context = tf.distribute.get_replica_context()
            global_normalizer = context.all_reduce("sum", tf.stop_gradient(normalizer))
            loss = tf.math.divide_no_nan(total, global_normalizer)
            if train.weight_decay and kernels:
                decay = tf.add_n([tf.nn.l2_loss(tf.cast(kernel, tf.float32)) for kernel in kernels])
                loss += train.weight_decay * decay / num_replicas
            scaled_loss = optimizer.scale_loss(loss) if loss_scaling else loss
        variables = model.trainable_variables
        with tf.name_scope("backward"):
            gradients = tape.gradient(scaled_loss, variables)
        with tf.name_scope("update"):
            if boosted:
                gradients = [
                    gradient * multiplier if id(variable) in boosted and gradient is not None else gradient
                    for gradient, variable in zip(gradients, variables, strict=True)
                ]
            optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss

    @tf.function
    def step(batch):
        per_replica_loss = strategy.run(replica_step, args=batch)
        return strategy.reduce("sum", per_replica_loss, axis=None)

    return step
