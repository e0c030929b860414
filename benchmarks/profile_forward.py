"""Where the forward pass spends its time: per-op-type totals of one traced run of a full-size model.

The model's inference graph is frozen (variables as constants, as TF Serving and TFLite see it) and run in a
graph session with a full trace; each node's recorded compute time is summed by op type. Times from the trace
are per-node wall times on the executing thread, so their sum can exceed the run's wall time when ops overlap.

Usage: python benchmarks/profile_forward.py [--backbone resnet101] [--output-stride 16] [--size 513] [--top 15]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

from keras_deeplab import machine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peers.add_model_arguments(parser)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(machine.describe())

    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model, title = peers.build_measured_model(args)
    spec = tf.TensorSpec((1, args.size, args.size, 3), tf.float32)
    forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(forward)
    graph_def = frozen.graph.as_graph_def()
    pixels = np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, 3)).astype("float32")
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        inputs, outputs = frozen.inputs[0].name, frozen.outputs[0].name
        with tf.compat.v1.Session(graph=graph) as session:
            for _ in range(2):
                session.run(outputs, {inputs: pixels})
            start = time.perf_counter()
            session.run(outputs, {inputs: pixels})
            wall = time.perf_counter() - start
            options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
            metadata = tf.compat.v1.RunMetadata()
            session.run(outputs, {inputs: pixels}, options=options, run_metadata=metadata)
    op_types = {node.name: node.op for node in graph_def.node}
    by_type: collections.Counter[str] = collections.Counter()
    by_node: collections.Counter[str] = collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            name = node.node_name.split(":")[0]
            seconds = (node.all_end_rel_micros or node.op_end_rel_micros) / 1e6
            # "name = OpType(inputs)": the kernel that ran, after grappler's fusions (a fused conv keeps the
            # name of the last node it absorbed, so the graph's own op type would mislabel it).
            label = node.timeline_label.split(" = ", 1)[-1].split("(", 1)[0].strip()
            by_type[label or op_types.get(name, "?")] += seconds
            by_node[name] += seconds
    total = sum(by_type.values())
    print(title)
    print(f"untraced run {wall:.2f} s; traced node time {total:.2f} s over {len(by_node)} nodes")
    peers.print_times("op type", by_type, args.top, 32, total)
    print()
    peers.print_times("slowest nodes", by_node, args.top, 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
