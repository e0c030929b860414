"""keras-deeplab beside its peers, in one run on this machine: forward time, training step time, peak memory.

Peers: the TF Model Garden's `seg_deeplabv3_pascal` (DeepLabv3 ResNet-101 at output stride 16; its own venv) and
keras-hub's DeepLabV3 segmenter on a ResNet-101 v1 encoder (keras-hub has no atrous encoder: its ASPP runs on the
stride-32 feature, the only way it builds). Every measurement runs in a process of its own (batch 1 forward at
513x513; batch 2 SGD step at crop 513, ours also in bfloat16 and beside its own batch-2 forward), medians after
warm-up; the CPU's model and flags head the table. Also keras-deeplab's achieved GFLOP/s beside the
machine's float32 matmul rate (TensorFlow's and NumPy's BLAS). Ours also under Keras' other backends, each in a
process with KERAS_BACKEND set: JAX (forward and step under `jax.jit`, through `predict_on_batch` and
`train_on_batch`) and PyTorch (eager), the step Keras' `compile`/`train_on_batch` with SegmentationLoss and SGD
with momentum. Prints a table and writes JSON (--out). `--size` measures at a smaller size (shared machines).

Usage: python benchmarks/compare.py [--runs 3] [--train-steps 2] [--size 513] [--out benchmarks/compare.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

from keras_deeplab import machine

SIZE = 513
SIDES = {
    "ours_os16": "keras-deeplab DeepLabv3 R101 OS16",
    "ours_os16_xla": "keras-deeplab DeepLabv3 R101 OS16, XLA",
    "ours_os16_bf16": "keras-deeplab DeepLabv3 R101 OS16, bfloat16",
    "ours_os8": "keras-deeplab DeepLabv3 R101 OS8",
    "ours_os16_jax": "keras-deeplab DeepLabv3 R101 OS16, JAX jit",
    "ours_os16_torch": "keras-deeplab DeepLabv3 R101 OS16, PyTorch",
    "modelgarden": "Model Garden seg_deeplabv3_pascal OS16",
    "modelgarden_os8": "Model Garden seg_deeplabv3_pascal OS8",
    "kerashub": "keras-hub DeepLabV3 R101 (stride 32)",
}


def build(side: str):
    """(model, forward function on float32 pixels, train step on (images, labels) or None) for `side`."""
    import tensorflow as tf

    if side.startswith("ours"):
        from keras_deeplab import build_model
        from keras_deeplab.precision import dtype_policy
        from keras_deeplab.recipe import load_recipe
        from keras_deeplab.training.step import make_optimizer, make_train_step

        # mixed_bfloat16 pays off only where the CPU computes bfloat16 natively (the JSON's "cpu" line says);
        # its accuracy cost is measured by benchmarks/bfloat16.py on a trained model.
        policy = "mixed_bfloat16" if side.endswith("bf16") else "float32"
        with dtype_policy(policy):
            model = build_model(8 if side == "ours_os8" else 16, backbone="resnet101", input_shape=(SIZE, SIZE, 3))
        forward = tf.function(lambda x: model(x, training=False), jit_compile=side.endswith("xla"))
        if side not in ("ours_os16", "ours_os16_bf16"):
            return model, forward, None
        settings = load_recipe("voc_resnet101_os16").train  # SGD momentum 0.9, poly LR, weight decay
        optimizer = make_optimizer(settings, policy)
        optimizer.build(model.trainable_variables)
        step = make_train_step(model, optimizer, tf.distribute.get_strategy(), settings)
        return model, forward, lambda images, labels: step((images, tf.cast(labels, tf.uint8)))
    if side.startswith("modelgarden"):
        import tf_keras
        from official.core import task_factory

        config = peers.model_garden_config(8 if side == "modelgarden_os8" else 16)
        task = task_factory.get_task(config.task)
        model = task.build_model()
        optimizer = tf_keras.optimizers.SGD(learning_rate=0.007, momentum=0.9)
        forward = tf.function(lambda x: model(x, training=False))

        @tf.function
        def train_step(images, labels):
            masks = tf.cast(labels, tf.int32)[..., None]
            return task.train_step((images, {"masks": masks}), model, optimizer)[task.loss]

        return model, forward, train_step if side == "modelgarden" else None
    import keras
    import keras_hub

    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 23, 3],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block",
        image_shape=(SIZE, SIZE, 3),
    )
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P5", upsampling_size=8, dilation_rates=[6, 12, 18]
    )
    model = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=21)
    model.compile(
        optimizer=keras.optimizers.SGD(0.007, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[],
    )
    forward = tf.function(lambda x: model(x, training=False))
    # Its stride-32 encoder rounds 513 up: the logits are 544x544, so the labels are padded to match.
    padding = int(forward(tf.zeros((1, SIZE, SIZE, 3))).shape[1]) - SIZE
    return (
        model,
        forward,
        lambda images, labels: model.train_on_batch(
            images, tf.pad(tf.cast(labels, tf.int32), [[0, 0], [0, padding], [0, padding]])
        ),
    )


# The sides measured under another Keras backend: side -> KERAS_BACKEND.
BACKENDS = {"ours_os16_jax": "jax", "ours_os16_torch": "torch"}


def measure_backend(side: str, runs: int, train_steps: int) -> dict:
    """`measure` for a side of BACKENDS, in a process whose KERAS_BACKEND is already set: Keras' own compiled
    steps (`predict_on_batch`, `train_on_batch`), no TensorFlow in the model."""
    import keras
    import numpy as np

    from keras_deeplab import SegmentationLoss, build_model

    assert keras.backend.backend() == BACKENDS[side]
    model = build_model(16, backbone="resnet101", input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    result = {"side": side, "parameters": int(model.count_params())}
    result["output_shape"] = [int(model.predict_on_batch(pixels).shape[1])]
    result["forward"] = peers.median_seconds(lambda: model.predict_on_batch(pixels), runs, warmup=2)
    result["forward_peak_mib"] = peers.peak_memory_mib()
    if train_steps:
        images = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
        labels = rng.integers(0, 21, (2, SIZE, SIZE)).astype(np.uint8)
        model.compile(optimizer=keras.optimizers.SGD(0.007, momentum=0.9), loss=SegmentationLoss())
        result["forward_batch2"] = peers.median_seconds(lambda: model.predict_on_batch(images), runs, warmup=1)
        result["train_step"] = peers.median_seconds(
            lambda: float(model.train_on_batch(images, labels)), train_steps, warmup=1
        )
        result["train_peak_mib"] = peers.peak_memory_mib()
    return result


def measure(side: str, runs: int, train_steps: int) -> dict:
    import tensorflow as tf

    model, forward, train_step = build(side)
    pixels = peers.random_batch(tf, 1, SIZE)[0]
    result = {"side": side, "parameters": int(model.count_params())}
    result["output_shape"] = [int(t.shape[1]) for t in tf.nest.flatten(forward(pixels))][:1]
    result["forward"] = peers.median_seconds(
        lambda: [t.numpy() for t in tf.nest.flatten(forward(pixels))], runs, warmup=2
    )
    result["forward_peak_mib"] = peers.peak_memory_mib()
    if side.startswith("ours"):
        from keras_deeplab.complexity import multiply_adds

        result["multiply_adds"] = multiply_adds(model)
    if train_step is not None and train_steps:
        # Every side's labels are in [0, 21): keras-hub's loss has no ignore label.
        images, labels = peers.random_batch(tf, 2, SIZE, ignored=0.0)
        if side.startswith("ours"):  # the bar: a step at most 3.5x the forward pass of the same batch
            result["forward_batch2"] = peers.median_seconds(lambda: forward(images).numpy(), runs, warmup=1)
        result["train_step"] = peers.median_seconds(lambda: float(train_step(images, labels)), train_steps, warmup=1)
        result["train_peak_mib"] = peers.peak_memory_mib()
    return result


def matmul_rate() -> dict:
    """float32 4096x4096 matmul GFLOP/s on this machine (median of 5 after warm-up), by TensorFlow's own matmul
    and by NumPy's BLAS: the higher is the machine's practical float32 ceiling."""
    import tensorflow as tf

    a = tf.random.normal((4096, 4096))
    flops = 2 * 4096**3
    timing = peers.median_seconds(lambda: tf.linalg.matmul(a, a).numpy(), runs=5, warmup=2)
    b = a.numpy()
    blas = peers.median_seconds(lambda: b @ b, runs=5, warmup=2)
    tensorflow, numpy = flops / timing["median_s"] / 1e9, flops / blas["median_s"] / 1e9
    return {"side": "matmul", "gflops": max(tensorflow, numpy), "tensorflow_gflops": tensorflow, "blas_gflops": numpy}


def main() -> int:
    global SIZE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed forward passes per model")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps per model (0: none)")
    parser.add_argument("--sides", nargs="+", choices=[*SIDES], default=[*SIDES])
    parser.add_argument("--size", type=int, default=SIZE, help="image side and crop (513: the papers')")
    parser.add_argument("--out", default=os.path.join(peers.ROOT, "benchmarks", "compare.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one side in this process
    args = parser.parse_args()
    SIZE = args.size
    if args.one in BACKENDS:  # before anything imports Keras, which reads it once
        os.environ["KERAS_BACKEND"] = BACKENDS[args.one]
        print(json.dumps(measure_backend(args.one, args.runs, args.train_steps)))
        return 0
    if args.one:
        print(json.dumps(matmul_rate() if args.one == "matmul" else measure(args.one, args.runs, args.train_steps)))
        return 0
    script = os.path.abspath(__file__)
    options = ["--runs", str(args.runs), "--train-steps", str(args.train_steps), "--size", str(SIZE)]
    results = {"matmul": peers.run_json(sys.executable, script, ["--one", "matmul"])}
    for side in args.sides:
        python, pythonpath = sys.executable, peers.ROOT
        if side.startswith("modelgarden"):
            python = peers.ensure_model_garden_python()
        elif side == "kerashub":
            pythonpath = os.pathsep.join([peers.ROOT, peers.ensure_keras_hub_path()])
        print(f"measuring {SIDES[side]} ...", flush=True)
        try:
            results[side] = peers.run_json(python, script, ["--one", side, *options], pythonpath)
        except RuntimeError as error:  # one peer failing must not lose the others' figures
            print(error, flush=True)
            results.setdefault("failed", {})[side] = str(error)[-2000:]
    results["cpu_cores"] = os.cpu_count()
    results["load_average"] = os.getloadavg()
    results["cpu"] = machine.describe()
    print_table(results)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # importing the writer starts TensorFlow here too
    from keras_deeplab.files import write_json  # here, not at the top: the peers' processes run this file too

    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


def print_table(results: dict) -> None:
    print(
        f"\n{results['cpu']}\nload average {results['load_average'][0]:.1f}; batch 1 forward at "
        f"{SIZE}x{SIZE}, batch 2 SGD step at crop {SIZE}; float32 4096x4096 matmul "
        f"{results['matmul']['tensorflow_gflops']:.0f} GFLOP/s in TensorFlow, "
        f"{results['matmul']['blas_gflops']:.0f} in NumPy's BLAS"
    )
    print(f"{'model':<46}{'params':>12}{'forward s':>11}{'peak MiB':>10}{'step s':>9}{'peak MiB':>10}{'GFLOP/s':>9}")
    for side, name in SIDES.items():
        if side not in results:
            continue
        r = results[side]
        step = r.get("train_step", {}).get("median_s")
        gflops = 2 * r["multiply_adds"] / r["forward"]["median_s"] / 1e9 if "multiply_adds" in r else None
        print(
            f"{name:<46}{r['parameters']:>12,}{r['forward']['median_s']:>11.2f}{r['forward_peak_mib']:>10.0f}"
            f"{'' if step is None else f'{step:.2f}':>9}"
            f"{'' if step is None else round(r['train_peak_mib']):>10}"
            f"{'' if gflops is None else f'{gflops:.0f}':>9}"
        )
    pairs = [("modelgarden", "ours_os16"), ("modelgarden", "ours_os16_bf16")]
    pairs += [("modelgarden_os8", "ours_os8"), ("kerashub", "ours_os16")]
    for peer, mine in pairs:
        ours = results.get(mine)
        if peer in results and ours:
            forward = results[peer]["forward"]["median_s"] / ours["forward"]["median_s"]
            line = f"{SIDES[peer]}: {SIDES[mine]} is {forward:.2f}x faster forward"
            if "train_step" in results[peer] and "train_step" in ours:
                line += f", {results[peer]['train_step']['median_s'] / ours['train_step']['median_s']:.2f}x per step"
            print(line)
    for other in BACKENDS:
        if other in results and "ours_os16" in results:
            forward = results[other]["forward"]["median_s"] / results["ours_os16"]["forward"]["median_s"]
            line = f"{SIDES[other]}: forward {forward:.2f}x"
            if "train_step" in results[other] and "train_step" in results["ours_os16"]:
                step = results[other]["train_step"]["median_s"] / results["ours_os16"]["train_step"]["median_s"]
                line += f", step {step:.2f}x"
            print(f"{line} TensorFlow's time")
    for mine in ("ours_os16", "ours_os16_bf16"):
        ours = results.get(mine, {})
        if "forward_batch2" in ours:
            ratio = ours["train_step"]["median_s"] / ours["forward_batch2"]["median_s"]
            print(
                f"{SIDES[mine]}: step = {ratio:.2f}x its batch-2 forward ({ours['forward_batch2']['median_s']:.2f} s)"
            )


if __name__ == "__main__":
    sys.exit(main())
