"""Where the training step spends its time: per-op times of one profiled SGD step, split into forward, backward
and update, beside the step's and the forward pass's untraced times.

The step is the one `train` runs (`keras_deeplab.training.step.make_train_step`: the recipe's loss, L2 weight
decay, SGD with momentum on the poly schedule) on random pixels and labels (10% of them 255). One step runs under
TensorFlow's profiler; each op's time on the thread that ran it is summed by phase (the step's name scopes
"forward", "backward", "update") and by op type. Ops run two at a time on the inter-op threads, so the traced
sum can exceed the wall time. The inference forward pass of the same batch is timed too: the issue's bar is a
step at most 3.5x that.

Usage: python benchmarks/profile_train_step.py [--backbone resnet101] [--output-stride 16] [--size 513]
           [--batch 2] [--precision float32] [--steps 3] [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

PHASES = ("forward", "backward", "update")


def op_times(logdir: str) -> list[tuple[str, str, float]]:
    """(node name, op type, seconds) of every op the profile in `logdir` recorded on TensorFlow's compute
    threads."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1], "rb") as handle:
        space.ParseFromString(handle.read())
    ops = []
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                metadata = plane.event_metadata[event.metadata_id]
                if ":" in metadata.name and "::" not in metadata.name:  # "node:OpType", not "ExecutorState::Process"
                    ops.append((metadata.name.rsplit(":", 1)[0], metadata.display_name, event.duration_ps / 1e12))
    return ops


def phase_of(node: str) -> str:
    """The step's phase an op belongs to, from its name scope: the tape names the gradients of the forward ops
    "gradient_tape/forward/...", the layers' own gradient functions run under "backward"."""
    parts = node.split("/")
    if "gradient_tape" in parts:
        return "backward"
    return next((part for part in parts if part in PHASES), "other (loss reduction, counters)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peers.add_model_arguments(parser)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed", "auto"))
    parser.add_argument("--steps", type=int, default=3, help="untimed steps after one warm-up")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from keras_deeplab import machine
    from keras_deeplab.precision import precision_policy
    from keras_deeplab.recipe import load_recipe
    from keras_deeplab.training.step import make_optimizer, make_train_step

    policy = precision_policy(args.precision)
    keras.mixed_precision.set_global_policy(policy)
    model, title = peers.build_measured_model(args)
    settings = load_recipe("voc_resnet101_os16").train
    optimizer = make_optimizer(settings, policy)
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, tf.distribute.get_strategy(), settings)
    images, labels = peers.random_batch(tf, args.batch, args.size)
    forward = tf.function(lambda x: model(x, training=False))
    step_time = peers.median_seconds(lambda: float(step((images, labels))), args.steps, warmup=1)
    forward_time = peers.median_seconds(lambda: forward(images).numpy(), args.steps, warmup=1)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        float(step((images, labels)))
        tf.profiler.experimental.stop()
        ops = op_times(logdir)

    print(machine.describe())
    print(f"{title}, batch {args.batch}, {policy}: SGD step (momentum, weight decay) profiled")
    seconds, forward_seconds = step_time["median_s"], forward_time["median_s"]
    print(f"step {seconds:.2f} s, inference forward of the same batch {forward_seconds:.2f} s: "
          f"step = {seconds / forward_seconds:.2f}x forward (median of {args.steps})")  # fmt: skip
    total = sum(time for _, _, time in ops)
    by_phase: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    by_node: collections.Counter[str] = collections.Counter()
    for node, op_type, time in ops:
        by_phase[phase_of(node)][op_type] += time
        by_node[node] += time
    print(f"traced op time {total:.2f} s over {len(by_node)} ops")
    for phase, types in sorted(by_phase.items(), key=lambda item: -sum(item[1].values())):
        phase_total = sum(types.values())
        print()
        peers.print_times(f"{phase}: {phase_total:.2f} s ({phase_total / total:.0%})", types, args.top, 40, total)
    print()
    peers.print_times("slowest ops", by_node, args.top, 80)
    return 0


if __name__ == "__main__":
    sys.exit(main())
