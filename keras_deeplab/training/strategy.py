"""Distribution: the tf.distribute strategy of a recipe, the cluster's tasks, the chief."""

from __future__ import annotations

import itertools
import json
import os
import re

import tensorflow as tf

from keras_deeplab.recipe import DistributionSettings

# Each MirroredStrategy numbers its collectives (synchronized batch norm's all-reduces) from the same start, and
# TensorFlow keeps the first shape it saw for each number: a second strategy in one process (training the OS-8
# fine-tuning after the OS-16 run, a notebook, a sweep) would fail with "Shape mismatch in the collective
# instance". TensorFlow 2.21 has no public API for the start of a strategy's collective keys (neither
# MirroredStrategy's arguments nor tf.distribute.experimental.CommunicationOptions set it), so each strategy made
# here sets the class attribute `_collective_key_base` that MirroredStrategy reads in its constructor.
# tests/test_training_step.py pins the behaviour: two strategies with sync BN in one process train.
_COLLECTIVE_KEYS_PER_STRATEGY = 1_000_000
_strategies_made = itertools.count()


def make_strategy(settings: DistributionSettings) -> tf.distribute.Strategy:
    """The strategy `settings` asks for: "auto" is MultiWorkerMirroredStrategy when TF_CONFIG names more than
    one task, else MirroredStrategy over `settings.devices` (default: every visible GPU, or the CPU)."""
    kind = settings.strategy
    if kind == "auto":
        kind = "multi_worker" if cluster_size() > 1 else "mirrored"
    if kind == "multi_worker":
        config = tf_config()
        if "task" in config:  # the first collective waits, silently, until every task has started
            task, jobs = config["task"], config["cluster"]
            others = ", ".join(
                f"{job} {index} ({address})"
                for job, addresses in jobs.items()
                for index, address in enumerate(addresses)
                if (job, index) != (task["type"], task["index"])
            )
            waiting = f"{task['type']} {task['index']}: waiting for the other tasks of TF_CONFIG to start: {others}"
            print(waiting, flush=True)
        return tf.distribute.MultiWorkerMirroredStrategy()  # one per process: it joins the cluster
    tf.distribute.MirroredStrategy._collective_key_base = next(_strategies_made) * _COLLECTIVE_KEYS_PER_STRATEGY
    return tf.distribute.MirroredStrategy(settings.devices)


def cluster_tasks(strategy: tf.distribute.Strategy) -> list[tuple[str, int, str]]:
    """(job, index, address) of every task of the strategy's cluster (empty outside a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return []
    jobs = resolver.cluster_spec().as_dict()
    return [(job, index, address) for job, addresses in jobs.items() for index, address in enumerate(addresses)]


def this_task(strategy: tf.distribute.Strategy) -> str:
    """The task of the cluster this process is, e.g. "worker 1"; "" outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{resolver.task_type} {resolver.task_id}" if resolver is not None and resolver.task_type else ""


def lost_task(strategy: tf.distribute.Strategy, message: str) -> str:
    """The other task of the cluster that TensorFlow's error `message` names, by address (gRPC's
    "ipv4:host:port") or by name ("/job:worker/replica:0/task:1"), as "worker 1 (host:port)"; "a worker" when
    it names none."""
    own = this_task(strategy)
    for job, index, address in cluster_tasks(strategy):
        named = rf"(?<![\w.-]){re.escape(address)}(?!\d)|/job:{job}/(replica:\d+/)?task:{index}(?!\d)"
        if f"{job} {index}" != own and re.search(named, message):
            return f"{job} {index} ({address})"
    return "a worker"


def cluster_sum(strategy: tf.distribute.Strategy, value: int) -> int:
    """The sum over every replica of the cluster of `value` (this worker's), an all-reduce: it returns only
    once every worker has called it, so it is also a barrier."""

    def replica_value():
        return tf.constant(value, tf.int64)

    @tf.function
    def total():
        return strategy.reduce("sum", strategy.run(replica_value), axis=None)

    return int(total())


def tf_config() -> dict:
    """The TF_CONFIG variable's {"cluster": {job: ["host:port", ...]}, "task": {"type": job, "index": i}} (the task
    may be left out), checked; {} when it is unset or empty. ValueError naming TF_CONFIG and what was expected
    otherwise."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    expected = 'expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error}); {expected}") from error
    if not isinstance(config, dict) or not config:
        raise ValueError(f"TF_CONFIG is {text[:80]!r}; {expected}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not all(
        isinstance(addresses, list) and addresses and all(isinstance(address, str) for address in addresses)
        for addresses in cluster.values()
    ):
        raise ValueError(f"TF_CONFIG's cluster is {json.dumps(cluster)[:80]}: each job must list addresses; {expected}")
    if task is None and "task" not in config:  # a cluster alone: TensorFlow's resolver allows it
        return config
    if not isinstance(task, dict) or not isinstance(task.get("type"), str) or task["type"] not in cluster:
        raise ValueError(f"TF_CONFIG's task is {json.dumps(task)[:80]}: its type must name a job of the cluster")
    index, size = task.get("index"), len(cluster[task["type"]])
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < size:
        raise ValueError(
            f"TF_CONFIG's task index is {json.dumps(index)}: expected a whole number from 0 to {size - 1} "
            f"(the {task['type']} job lists {size})"
        )
    return config


def cluster_size() -> int:
    """Chief and worker tasks named by TF_CONFIG (0 without one)."""
    cluster = tf_config().get("cluster", {})
    return sum(len(tasks) for name, tasks in cluster.items() if name in ("chief", "worker"))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where this process writes the run directory: always, except on non-chief workers of a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)
