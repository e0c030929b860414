"""Several hosts for real: two `keras-deeplab train` processes on loopback ports with a two-worker TF_CONFIG.

When one worker is killed the other stops within a bounded time with one line saying which worker was lost, at
which step, and that rerunning the command on every host resumes; the rerun does, from the last checkpoint, and
the two train together (the same final weights, each on its own part of the data, half the global batch each),
only the chief writes the run folder, and the run ends with no error line. The sharding policy
itself is pinned in-process on what each worker's pipeline yields.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab import load_model
from keras_deeplab.checkpoints import CheckpointFolder
from keras_deeplab.recipe import load_recipe
from keras_deeplab.training.inputs import distributed_training_data
from keras_deeplab.training.strategy import lost_task
from keras_deeplab.weights import weights_digest
from pipelines.datasets import AutoShardPolicy, shard_policy, shard_records
from pipelines.synthetic import synthetic_source
from pipelines.tfrecord import TFRecordSource, write_tfrecords

# VGG-16 under the ASPP head: the fewest layers that still have batch norm (the head's), so that "the same
# final weights on both workers" needs their batch statistics synchronized; each process traces its training step
# in about half the time of the tiny ResNet-50's.
MODEL = {"backbone": "vgg16", "width_multiplier": 0.125, "aspp_filters": 16, "num_classes": 5}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count):
    """Ports free on 127.0.0.1 now (the kernel's choice, so parallel tests do not pick the same ones)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def overrides(run_dir, steps, batch):
    return [
        f"run_dir={run_dir}",
        f"model={json.dumps(MODEL)}",
        'data.options={"num_examples": 8, "image_size": 64}',
        "data.crop_size=65",
        f"train.global_batch_size={batch}",
        f"train.steps={steps}",
        "checkpoint.every_steps=3",
        "eval.max_examples=2",
        "log.every_steps=5",
        "log.image_every_steps=0",
    ]


def start_worker(index, ports, run_dir, steps, folder, batch=2, log_level=None):
    """`keras-deeplab train` as worker `index` of the cluster on `ports`; stdout/stderr go to files in `folder`.
    `log_level`: TF_CPP_MIN_LOG_LEVEL (None: the command line's own default)."""
    cluster = {
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    }
    environment = {**os.environ, "TF_CONFIG": json.dumps(cluster), "CUDA_VISIBLE_DEVICES": ""}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    if log_level is not None:
        environment["TF_CPP_MIN_LOG_LEVEL"] = str(log_level)
    command = [sys.executable, "-m", "keras_deeplab.cli", "train", "--recipe", "demo", "--no-progress", "--json"]
    command += [part for override in overrides(run_dir, steps, batch) for part in ("--set", override)]
    stdout = open(folder / f"worker{index}.out", "w")  # noqa: SIM115 (closed by finish)
    stderr = open(folder / f"worker{index}.err", "w")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=environment, cwd=folder)
    process.files = (stdout, stderr)
    return process


def finish(process, timeout):
    """(returncode, stdout, stderr) of a worker, killed after `timeout` seconds."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for file in process.files:
        file.close()
    out, err = (pathlib.Path(file.name).read_text() for file in process.files)
    return process.returncode, out, err


def kill_all(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def assert_no_error_lines(stderr):
    """No traceback, no TensorFlow error line (E0000 ..., the coordination service's), no task name."""
    for marker in ("Traceback", "E0000", "coordination service", "/job:worker", "error"):
        assert marker not in stderr, stderr[-3000:]


def finish_cleanly(workers):
    """(returncode, stdout, stderr) of each worker, after checking that each exited 0 with no error line."""
    try:
        results = [finish(process, 400) for process in workers]
    finally:
        kill_all(workers)
    for index, (code, _, err) in enumerate(results):
        assert code == 0, f"worker {index}: {err[-3000:]}"
        assert_no_error_lines(err)
    return results


def tree(folder):
    """Every path under `folder`, with the SHA-256 of each file's bytes (False for a folder)."""
    return {
        str(path.relative_to(folder)): path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
    }


@pytest.mark.slow(45)
def test_a_killed_worker_stops_the_other_with_one_line_and_the_rerun_resumes_and_only_the_chief_writes(tmp_path):
    """One cluster started twice (two `keras-deeplab train` processes each time): killed, then rerun to the end.

    Each worker has its own run folder, to see who writes what: worker 1's does not exist while the cluster
    trains and checkpoints, and for the rerun it holds a copy of the chief's checkpoints (what storage every
    host reaches would show it), which it resumes from and leaves exactly as it was."""
    started = time.time()
    steps, batch = 10, 4  # checkpoints at 3, 6, 9 and the last step, 10 (not on the 3-step cycle); 2 kept
    run_dir, worker_dir = tmp_path / "run", tmp_path / "worker_run"
    folder = CheckpointFolder(str(run_dir / "checkpoints"), keep=2, writer=False)
    ports = free_ports(2)
    workers = [
        start_worker(index, ports, path, steps, tmp_path, batch) for index, path in enumerate((run_dir, worker_dir))
    ]
    try:
        deadline = time.time() + 300
        while not folder.steps() and all(p.poll() is None for p in workers) and time.time() < deadline:
            time.sleep(0.05)
        assert folder.steps(), "no checkpoint was written: " + finish(workers[0], 1)[2][-3000:]
        time.sleep(0.1)  # a step or so later; short, as a faster CPU runs the 7 steps left in well under a second
        os.kill(workers[1].pid, signal.SIGKILL)
        killed = time.time()
        code, out, err = finish(workers[0], 60)
        stopped_after = time.time() - killed
    finally:
        kill_all(workers)
    assert code == 1 and stopped_after < 60, (code, stopped_after, err[-3000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    line = lines[0]
    pattern = (
        rf"keras-deeplab train: error: worker 1 \(127\.0\.0\.1:{ports[1]}\) was lost at step (\d+), so worker 0 "
        r"stopped too; run the same command again on every host: training resumes from the last checkpoint "
        r"\(step (\d+)\)"
    )
    match = re.fullmatch(pattern, line)
    assert match, line
    lost_at, saved = int(match[1]), int(match[2])
    assert saved == folder.steps()[-1] and saved < lost_at <= steps
    assert not (run_dir / "result.json").exists()
    assert not worker_dir.exists()  # worker 1 wrote nothing, not even the folder
    print(f"survivor stopped {stopped_after:.1f} s after the kill: {line}")

    shutil.copytree(run_dir / "checkpoints", worker_dir / "checkpoints")
    copied = tree(worker_dir)
    ports = free_ports(2)
    # TensorFlow's C++ error lines shown (level 2), so that an error line at shutdown would be seen.
    workers = [
        start_worker(index, ports, path, steps, tmp_path, batch, log_level=2)
        for index, path in enumerate((run_dir, worker_dir))
    ]
    results = finish_cleanly(workers)
    for index, (_, out, _) in enumerate(results):
        # The recipe's global batch of 4, split over the 2 workers' replicas: 2 each.
        assert f"training steps {saved + 1}..{steps} (global batch 4 = 2 x 2, worker {index} of 2 workers)" in out
    answers = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]

    # The chief wrote the run folder; the other worker changed nothing in its own.
    assert tree(worker_dir) == copied
    assert {"model.keras", "result.json", "recipe.json", "checkpoints", "logs"} <= set(os.listdir(run_dir))
    assert folder.steps() == [9, 10]

    # Both ended with the same weights: the digest each printed, and that of the model file the chief saved.
    assert answers[0]["weights_sha256"] == answers[1]["weights_sha256"]
    assert weights_digest(load_model(str(run_dir / "model.keras"))) == answers[0]["weights_sha256"]
    assert json.loads((run_dir / "result.json").read_text())["step"] == steps
    print(f"kill and resume took {time.time() - started:.1f} s")


def names_of(source, num_shards, index):
    records = shard_records(source, num_shards, index)
    return [name.decode() for *_, name in records.map(source.decode_record).as_numpy_iterator()]


def test_each_worker_reads_its_own_examples_by_record_or_by_whole_tfrecord_file(tmp_path):
    source = synthetic_source("train", num_examples=7, image_size=32)
    everything = [f"synthetic_train_{index:05d}" for index in range(7)]
    # In memory (no files): by record, every other one.
    assert shard_policy(source, 2) == AutoShardPolicy.DATA and shard_policy(source, 1) == AutoShardPolicy.OFF
    parts = [names_of(source, 2, index) for index in range(2)]
    assert parts == [everything[0::2], everything[1::2]]

    # TFRecord shards, at least one per worker: by file, each worker reading whole shards.
    write_tfrecords(source, str(tmp_path / "four"), shards=4, split="train")
    four = TFRecordSource(str(tmp_path / "four"), "train")
    assert shard_policy(four, 2) == AutoShardPolicy.FILE and shard_policy(four, 4) == AutoShardPolicy.FILE
    in_shard = {}
    for path in four.files:
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            name = tf.train.Example.FromString(record).features.feature["image/filename"].bytes_list.value[0]
            in_shard[name.decode()] = path
    parts = [names_of(four, 2, index) for index in range(2)]
    assert sorted(parts[0] + parts[1]) == everything
    for index, part in enumerate(parts):
        assert {in_shard[name] for name in part} == set(four.files[index::2])

    # Fewer TFRecord files than workers: by record again.
    write_tfrecords(source, str(tmp_path / "one"), shards=1, split="train")
    one = TFRecordSource(str(tmp_path / "one"), "train")
    assert shard_policy(one, 2) == AutoShardPolicy.DATA
    parts = [names_of(one, 2, index) for index in range(2)]
    assert sorted(parts[0] + parts[1]) == everything and not set(parts[0]) & set(parts[1])


class TwoWorkerPipelines:
    """What MultiWorkerMirroredStrategy does with the training data of 2 workers of 1 replica each: it calls
    the dataset function once per worker with that worker's InputContext."""

    num_replicas_in_sync = 2

    def distribute_datasets_from_function(self, dataset_fn):
        return [dataset_fn(tf.distribute.InputContext(2, index, 2)) for index in range(2)]


def test_the_global_batch_is_split_over_the_workers_and_no_one_shards_the_data_again():
    recipe = load_recipe("demo", ["train.global_batch_size=4", "data.crop_size=33"])
    source = synthetic_source("train", num_examples=6, image_size=32)
    datasets = distributed_training_data(TwoWorkerPipelines(), source, recipe, start_step=0)
    batches = [next(iter(dataset)) for dataset in datasets]
    for images, masks in batches:
        assert images.shape == (2, 33, 33, 3) and masks.shape == (2, 33, 33)  # 4 / 2 workers
    assert not np.array_equal(batches[0][0], batches[1][0])
    for dataset in datasets:
        assert dataset.options().experimental_distribute.auto_shard_policy == AutoShardPolicy.OFF


@pytest.mark.parametrize(
    ("message", "lost"),
    [
        ("failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.2:2222: Connection refused", 1),
        ("Error reported from /job:worker/task:1: The following tasks are unhealthy", 1),
        ("Additional GRPC error information from remote target /job:worker/replica:0/task:2 while calling", 2),
        ("recvmsg:Connection reset by peer", None),
    ],
)
def test_the_lost_worker_is_named_from_what_tensorflow_says(message, lost):
    cluster = tf.train.ClusterSpec({"worker": ["10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222"]})

    class Strategy:
        cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, task_type="worker", task_id=0)

    expected = "a worker" if lost is None else f"worker {lost} (10.0.0.{lost + 1}:2222)"
    assert lost_task(Strategy(), message) == expected
