"""Training throughput (images per second) at crop 513, batch 2, output stride 16: keras-deeplab's DeepLabv3
ResNet-101 beside the TF Model Garden's `seg_deeplabv3_pascal`, measured in the same run.

Each side runs in a process of its own on random pixels and labels (10% of them 255): one SGD (momentum 0.9)
step with L2 weight decay per iteration, median of --steps after --warmup. The Model Garden needs
tf-models-official 2.20, which pins TensorFlow 2.20 and tf-keras: it lives in a virtual environment of its
own, `.venv-modelgarden/` beside the project, which the first run without --no-model-garden builds (about
2.5 minutes and 3.3-3.4 GB of disk; it downloads tf-models-official and TensorFlow 2.20 from PyPI).

Usage:
  python benchmarks/train_step.py                      # CPU, float32, one replica; both models
  python benchmarks/train_step.py --no-model-garden    # ours only
  python benchmarks/train_step.py --precision mixed --strategy mirrored   # a GPU machine: float16, all GPUs
With --strategy mirrored, --batch is per replica (global batch = batch x replicas).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from keras_deeplab import machine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers


def strategy_for(tf, name: str):
    return tf.distribute.MirroredStrategy() if name == "mirrored" else tf.distribute.get_strategy()


def measure_ours(args) -> dict:
    import keras
    import tensorflow as tf

    from keras_deeplab import build_model
    from keras_deeplab.precision import precision_policy
    from keras_deeplab.recipe import load_recipe
    from keras_deeplab.training.step import make_optimizer, make_train_step

    settings = load_recipe("voc_resnet101_os16").train
    policy = precision_policy(args.precision)
    keras.mixed_precision.set_global_policy(policy)
    strategy = strategy_for(tf, args.strategy)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_model(16, backbone="resnet101", sync_batch_norm=replicas > 1)
        optimizer = make_optimizer(settings, policy)
        optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, strategy, settings)
    dataset = tf.data.Dataset.from_tensors(peers.random_batch(tf, args.batch * replicas, args.crop)).repeat()
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    timing = peers.median_seconds(lambda: float(step(batch)), args.steps, args.warmup)
    return {"parameters": model.count_params(), "replicas": replicas, "policy": policy, **timing}


def measure_model_garden(args) -> dict:
    import tensorflow as tf
    import tf_keras
    from official.core import task_factory

    config = peers.model_garden_config()
    policy = "float32"
    if args.precision == "mixed":
        policy = "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    tf_keras.mixed_precision.set_global_policy(policy)
    strategy = strategy_for(tf, args.strategy)
    replicas = strategy.num_replicas_in_sync
    config.task.model.norm_activation.use_sync_bn = replicas > 1
    with strategy.scope():
        task = task_factory.get_task(config.task)
        model = task.build_model()
        optimizer = tf_keras.optimizers.SGD(learning_rate=0.007, momentum=0.9)
        if policy == "mixed_float16":
            optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)

    @tf.function
    def step(batch):
        def replica_step(images, labels):
            masks = tf.cast(labels, tf.int32)[..., None]
            return task.train_step((images, {"masks": masks}), model, optimizer)[task.loss]

        return strategy.reduce("mean", strategy.run(replica_step, args=batch), axis=None)

    dataset = tf.data.Dataset.from_tensors(peers.random_batch(tf, args.batch * replicas, args.crop)).repeat()
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    timing = peers.median_seconds(lambda: float(step(batch)), args.steps, args.warmup)
    return {"parameters": model.count_params(), "replicas": replicas, "policy": policy, **timing}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--crop", type=int, default=513)
    parser.add_argument("--batch", type=int, default=2, help="images per replica")
    parser.add_argument("--precision", choices=("float32", "mixed"), default="float32")
    parser.add_argument("--strategy", choices=("default", "mirrored"), default="default")
    parser.add_argument(
        "--no-model-garden", action="store_true", help="ours only: no Model Garden, no .venv-modelgarden/ built"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", choices=("ours", "modelgarden"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.one:
        result = (measure_ours if args.one == "ours" else measure_model_garden)(args)
        print(json.dumps(result))
        return 0
    print(machine.describe())
    sides = [("keras-deeplab DeepLabv3 ResNet-101", sys.executable, "ours")]
    if not args.no_model_garden:
        sides.append(("Model Garden seg_deeplabv3_pascal", peers.ensure_model_garden_python(), "modelgarden"))
    print(
        f"crop {args.crop}, batch {args.batch} per replica, output stride 16, {args.precision}, "
        f"{os.cpu_count()} CPU cores, median of {args.steps} steps after {args.warmup}"
    )
    print(f"{'model':<38}{'params':>12}{'replicas':>9}{'s/step':>9}{'images/s':>10}")
    for name, python, side in sides:
        options = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--crop", str(args.crop)]
        options += ["--batch", str(args.batch), "--precision", args.precision, "--strategy", args.strategy]
        result = peers.run_json(python, os.path.abspath(__file__), ["--one", side, *options])
        seconds = result["median_s"]
        images_per_second = args.batch * result["replicas"] / seconds
        if args.json:
            print(
                json.dumps(
                    {"model": name, **result, "seconds_per_step": seconds, "images_per_second": images_per_second}
                )
            )
            continue
        print(f"{name:<38}{result['parameters']:>12,}{result['replicas']:>9}{seconds:>9.2f}{images_per_second:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
