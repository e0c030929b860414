"""The training step: two replicas with synchronized batch norm step like one replica on the whole batch."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab import build_model
from keras_deeplab.precision import dtype_policy, precision_policy
from keras_deeplab.recipe import DistributionSettings, TrainSettings
from keras_deeplab.training.run import divergence_hint
from keras_deeplab.training.step import (
    batch_norm_frozen,
    batch_norm_layers,
    freeze_folded_batch_norm,
    make_optimizer,
    make_train_step,
    poly_learning_rate,
)
from keras_deeplab.training.strategy import make_strategy

NUM_CLASSES = 4
SETTINGS = TrainSettings(steps=10, learning_rate=0.02, momentum=0.9, weight_decay=1e-3)
TWO_CPUS = DistributionSettings(strategy="mirrored", devices=["/cpu:0", "/cpu:1"])


RESNET50 = {"backbone": "resnet50", "width_multiplier": 0.125}
# VGG-16 under the ASPP head, whose batch norms are the layer every backbone builds from the same NormSettings:
# synchronized, the two replicas' step matches to 2e-13; unsynchronized, the update is off by 104% and the moving
# statistics by 4.5% (both measured). Its step traces in a fifth of the tiny ResNet-50's 45 s; MobileNetV2 and
# Xception-65 cost 45 s to 2 min each, so they are left to the export and import tests.
BACKBONES = {"vgg16": {"backbone": "vgg16", "width_multiplier": 0.125}}


def tiny_model(sync_batch_norm=False, options=RESNET50):
    return build_model(
        16,
        num_classes=NUM_CLASSES,
        aspp_filters=16,
        dropout_rate=0.0,
        batch_norm_momentum=0.9,
        sync_batch_norm=sync_batch_norm,
        **options,
    )


def batch_of_four():
    """Images (4, 65, 65, 3) and masks whose first half has far more 255 pixels than the second, so that a
    loss averaged per replica would differ from the loss of the whole batch."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 65, 65, 3)).astype(np.float32)
    masks = rng.integers(0, NUM_CLASSES, (4, 65, 65)).astype(np.uint8)
    masks[:2][rng.random((2, 65, 65)) < 0.6] = 255
    masks[2:][rng.random((2, 65, 65)) < 0.05] = 255
    return images, masks


def one_step(strategy, sync_batch_norm, initial_weights, options, eager=False):
    """(trainable weights, batch-norm moving statistics, loss) after one step from `initial_weights`."""
    images, masks = batch_of_four()
    with strategy.scope():
        model = tiny_model(sync_batch_norm, options)
        model.set_weights(initial_weights)
        optimizer = make_optimizer(SETTINGS, "float32")
        optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, strategy, SETTINGS)
    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    tf.config.run_functions_eagerly(eager)  # the reference needs no graph (tracing costs ~10 s here)
    try:
        loss = float(step(batch))
    finally:
        tf.config.run_functions_eagerly(False)
    assert int(optimizer.iterations.numpy()) == 1
    return (
        [np.array(weight) for weight in model.trainable_weights],
        [np.array(weight) for weight in model.non_trainable_weights],
        loss,
    )


def relative_difference(got, want, initial):
    """|got - want| / |want - initial| over all the arrays: the error relative to the size of the update."""
    difference = np.sqrt(sum(np.sum((g - w) ** 2) for g, w in zip(got, want, strict=True)))
    update = np.sqrt(sum(np.sum((w - i) ** 2) for w, i in zip(want, initial, strict=True)))
    assert update > 1e-3  # the step really moved
    return difference / update


@pytest.mark.slow(10)
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_two_replicas_with_sync_batch_norm_step_like_one_replica_on_the_doubled_batch(backbone):
    """In float64, so that the comparison sees the algorithm, not rounding: in float32 the synchronized moments
    (E[x^2] - E[x]^2) and the batch-norm backward of a randomly initialised 50-layer ResNet leave about 1%
    of the update as rounding noise, while without synchronized batch norm the update differs by over 100%
    (both measured here; 1e-13 with synchronization in float64). The first two images carry far more 255
    pixels than the last two, so normalising the loss per replica instead of per global batch fails too."""
    with dtype_policy("float64"):
        keras.utils.set_random_seed(1)
        model = tiny_model(options=BACKBONES[backbone])
        initial = model.get_weights()
        trainable = [np.array(weight) for weight in model.trainable_weights]
        statistics = [np.array(weight) for weight in model.non_trainable_weights]
        want_trainable, want_statistics, want_loss = one_step(
            tf.distribute.get_strategy(), False, initial, BACKBONES[backbone], eager=True
        )
        strategy = make_strategy(TWO_CPUS)
        assert strategy.num_replicas_in_sync == 2
        got_trainable, got_statistics, got_loss = one_step(strategy, True, initial, BACKBONES[backbone])
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    assert relative_difference(got_trainable, want_trainable, trainable) < 1e-9
    assert relative_difference(got_statistics, want_statistics, statistics) < 1e-9


def test_poly_learning_rate_follows_the_papers_formula():
    schedule = poly_learning_rate(TrainSettings(steps=100, learning_rate=0.007, lr_power=0.9))
    for step in (0, 10, 50, 99, 100):
        assert float(schedule(step)) == pytest.approx(0.007 * (1 - step / 100) ** 0.9, rel=1e-5, abs=1e-9)


def test_mixed_precision_computes_in_bfloat16_on_cpu_with_a_float32_loss():
    policy = precision_policy("mixed")
    assert policy == "mixed_bfloat16"  # no GPU here; float16 where there is one
    with dtype_policy(policy):
        model = tiny_model()
        optimizer = make_optimizer(SETTINGS, policy)
        optimizer.build(model.trainable_variables)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the block
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16" and model.output.dtype == "float32"
    before = [np.array(weight) for weight in model.trainable_weights]
    step = make_train_step(model, optimizer, tf.distribute.get_strategy(), SETTINGS)
    tf.config.run_functions_eagerly(True)
    try:
        loss = step(batch_of_four())
    finally:
        tf.config.run_functions_eagerly(False)
    assert loss.dtype == tf.float32 and np.isfinite(float(loss))
    after = [np.array(weight) for weight in model.trainable_weights]
    assert all(weight.dtype == np.float32 for weight in after)
    assert max(np.abs(new - old).max() for new, old in zip(after, before, strict=True)) > 1e-3


def test_auto_strategy_is_multi_worker_only_when_tf_config_names_several_tasks(monkeypatch):
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", lambda: "multi-worker")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert make_strategy(DistributionSettings()).num_replicas_in_sync >= 1  # MirroredStrategy here
    cluster = {"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    assert make_strategy(DistributionSettings()) == "multi-worker"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["host1:2222"]}}))
    assert make_strategy(DistributionSettings()) != "multi-worker"


def test_a_second_strategy_in_one_process_runs_synchronized_batch_norm_of_other_shapes():
    """Training the OS-8 fine-tuning after the OS-16 run in one script: the second MirroredStrategy's
    synchronized batch norm must not meet the first one's collectives (TensorFlow keeps the first shape it saw
    for each collective number, and every MirroredStrategy numbers from the same start)."""
    for channels in (8, 16):
        strategy = make_strategy(TWO_CPUS)
        with strategy.scope():
            norm = keras.layers.BatchNormalization(synchronized=True, momentum=0.5)
            norm.build((None, 3, 3, channels))
        # One global batch of 4 whose halves (one per replica) have different statistics: each replica must
        # normalize with the whole batch's mean and variance, not its own half's.
        pixels = np.arange(4 * 3 * 3 * channels, dtype="float32").reshape(4, 3, 3, channels) % 7
        pixels[2:] = 3 * pixels[2:] + 5
        images = tf.data.Dataset.from_tensors(pixels)
        batch = next(iter(strategy.experimental_distribute_dataset(images)))
        outputs = strategy.run(tf.function(lambda x, norm=norm: norm(x, training=True)), (batch,))
        got = np.concatenate([np.asarray(part) for part in strategy.experimental_local_results(outputs)])
        mean, variance = pixels.mean(axis=(0, 1, 2)), pixels.var(axis=(0, 1, 2))
        np.testing.assert_allclose(got, (pixels - mean) / np.sqrt(variance + norm.epsilon), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(norm.moving_mean.numpy(), 0.5 * mean, rtol=1e-5)
        np.testing.assert_allclose(norm.moving_variance.numpy(), 0.5 + 0.5 * variance, rtol=1e-5)


def test_the_fast_cpu_convs_give_keras_plain_gradients_through_the_whole_network(monkeypatch):
    """The whole network's gradients with keras_deeplab's Conv2D (direct conv gradients, dilated included) equal
    those of the same network built from keras' own layers. In float64: float32 rounding alone moves this tiny
    random network's stem gradient by some percent, either way (the batch norm's fused kernel, float32 only, is
    compared layer by layer in tests/test_layers.py)."""
    from keras_deeplab import heads, layers, model
    from keras_deeplab.backbones import resnet

    with dtype_policy("float64"):
        ours = tiny_model()
        with monkeypatch.context() as patch:
            for module in (layers, heads, model, resnet):
                patch.setattr(module, "Conv2D", keras.layers.Conv2D)
            plain = tiny_model()
    assert type(plain.get_layer("aspp_atrous1_conv")) is keras.layers.Conv2D
    assert type(ours.get_layer("conv4_block1_2_conv")) is not keras.layers.Conv2D
    plain.set_weights(ours.get_weights())
    images, masks = batch_of_four()
    labels = np.minimum(masks, NUM_CLASSES - 1).astype("int32")

    def gradients(network):
        with tf.GradientTape() as tape:
            logits = network(images.astype("float64"), training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return tape.gradient(loss, network.trainable_variables)

    for got, want, variable in zip(gradients(ours), gradients(plain), ours.trainable_variables, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=variable.path)


def test_folded_batch_norm_stays_in_inference_mode_and_fine_tuning_freezes_batch_norm_by_default():
    fine_tuning = TrainSettings(init_checkpoint="published.tflite")
    assert batch_norm_frozen(fine_tuning) and not batch_norm_frozen(TrainSettings())
    assert not batch_norm_frozen(dataclasses.replace(fine_tuning, freeze_batch_norm=False))
    assert batch_norm_frozen(TrainSettings(freeze_batch_norm=True))

    strategy = make_strategy(DistributionSettings(devices=["/cpu:0"]))
    with strategy.scope():
        model = tiny_model()
        optimizer = make_optimizer(SETTINGS, "float32")
        optimizer.build(model.trainable_variables)  # as a run builds it, before its weights are loaded
    norms = batch_norm_layers(model)
    folded = norms[1]  # as import_weights loads a TFLite file's: an identity plus the conv's bias
    width = folded.moving_mean.shape[0]
    folded.set_weights([np.ones(width), np.full(width, 0.5), np.zeros(width), np.full(width, 1 - folded.epsilon)])
    assert freeze_folded_batch_norm(model) == 1 and not folded.trainable
    assert all(layer.trainable for layer in norms if layer is not folded)  # fresh ones have variance 1
    before = {layer.name: [np.array(weight) for weight in layer.weights] for layer in norms}
    images, masks = batch_of_four()
    tf.config.run_functions_eagerly(True)
    try:
        make_train_step(model, optimizer, strategy, SETTINGS)((images, masks))
    finally:
        tf.config.run_functions_eagerly(False)
    for layer in norms:
        moved = [not np.array_equal(weight, old) for weight, old in zip(layer.weights, before[layer.name], strict=True)]
        assert moved == ([False] * 4 if layer is folded else [True] * 4), layer.name
    x = np.random.default_rng(0).normal(size=(2, 3, 3, width)).astype(np.float32)
    np.testing.assert_allclose(folded(x, training=True), x + 0.5, atol=1e-5)  # not normalised by the batch's


def test_a_diverged_loss_names_its_likely_cause():
    unsettled = divergence_hint(6.2e23, 21, TrainSettings(learning_rate=1e-4, init_checkpoint="runs/first"))
    assert "6.2e+23 is far above log(21) = 3.04" in unsettled and "statistics that never settled" in unsettled
    overshoot = divergence_hint(1.7, 21, TrainSettings(learning_rate=1e-3, init_checkpoint="published.tflite"))
    assert "train.learning_rate 0.001 too high" in overshoot and "batch-norm" not in overshoot  # frozen already
    assert "freeze_batch_norm=true" in divergence_hint(1.7, 21, TrainSettings(learning_rate=1e-3))
    assert "not finite from the first step" in divergence_hint(None, 5, SETTINGS)
    assert all("\n" not in hint for hint in (unsettled, overshoot))
