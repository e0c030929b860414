"""A user's mistake ends in one line on stderr naming the file, key, port or limit, with exit status 1
(issue 15, items 5, 6, 7, 10 and 11), each case run through the command line's `main`."""

import errno
import json
import os
import pathlib
import socket
import struct
import subprocess
import sys

import keras
import pytest
from serving_models import encode, export_tiny_model, random_image

from keras_deeplab import files
from keras_deeplab.cli import main
from keras_deeplab.training.run import remove_leftovers

ROOT = pathlib.Path(__file__).resolve().parent.parent

TINY_RECIPE = [
    f"model={json.dumps({'backbone': 'resnet50', 'width_multiplier': 0.125, 'aspp_filters': 16, 'num_classes': 5})}",
    'data.options={"num_examples": 4, "image_size": 64}',
    "data.crop_size=65",
    "train.global_batch_size=2",
    "train.steps=2",
    "eval.max_examples=1",
]


def train_args(run_dir, *overrides):
    settings = [*TINY_RECIPE, f"run_dir={run_dir}", *overrides]
    return ["train", "--recipe", "demo", "--no-progress", *(part for value in settings for part in ("--set", value))]


def one_error_line(capsys, command: str) -> str:
    """The single stderr line of a failed command, without its `keras-deeplab COMMAND: error: ` prefix."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    prefix = f"keras-deeplab {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix) :]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lerning_rate=0.1", "unknown key 'train.lerning_rate'"),
        ("train.learning_rate=-1", "'train.learning_rate' must be positive, got -1"),
        ("train.global_batch_size=0", "'train.global_batch_size' must be positive, got 0"),
        ("train.init_checkpoint=missing.keras", "missing.keras: no such model file or run folder"),
    ],
)
def test_train_recipe_mistakes_are_one_line(tmp_path, capsys, override, message):
    assert main(train_args(tmp_path / "run", override)) == 1
    assert message in one_error_line(capsys, "train")


def test_train_run_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "run").write_text("x")
    assert main(train_args(tmp_path / "run")) == 1
    assert f"run_dir '{tmp_path / 'run'}' is a file, not a folder" in one_error_line(capsys, "train")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"step": 50}', 'expected the record train writes (an object with an int "step" and an "eval" object'),
        ("[1, 2]", 'expected the record train writes (an object with an int "step"'),
        ('{"step": 5', "not JSON (Expecting"),
    ],
)
def test_a_run_folders_broken_result_is_one_line(tmp_path, capsys, content, message):
    """A result.json edited by hand or cut short: one line naming it, not a KeyError."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(content)
    assert main(train_args(tmp_path / "run")) == 1
    line = one_error_line(capsys, "train")
    assert f"{tmp_path / 'run' / 'result.json'}: " in line and message in line


def test_disk_full_during_training_names_the_file_and_leftovers_are_removed(tmp_path, capsys, monkeypatch):
    """A run killed while writing model.keras left `.tmp-*-model.keras`: the next start removes it. That start
    then meets a full disk on its first write (recipe.json): one line naming that file."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".tmp-4242-model.keras").write_bytes(b"half a model")
    (run_dir / ".tmp-4242-result.json").mkdir()

    class FullDisk:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "open", FullDisk, raising=False)
    assert main(train_args(run_dir)) == 1
    message = one_error_line(capsys, "train")
    assert message == f"{run_dir / 'recipe.json'}: cannot write it (No space left on device)"
    assert not [name for name in os.listdir(run_dir) if name.startswith(".tmp-")]


def test_remove_leftovers_keeps_everything_else(tmp_path):
    for name in (".tmp-1-model.keras", "model.keras", "result.json", "notes.tmp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".tmp-2-ckpt").mkdir()
    (tmp_path / "checkpoints").mkdir()
    remove_leftovers(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["checkpoints", "model.keras", "notes.tmp", "result.json"]


def test_evaluate_with_a_missing_model(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope.keras"), "--format", "synthetic"]) == 1
    assert one_error_line(capsys, "evaluate") == f"{tmp_path / 'nope.keras'}: no such model file or run folder"


@pytest.fixture
def not_deeplab(tmp_path):
    path = tmp_path / "classifier.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)
    return str(path)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(encode(random_image(20, 20)))
    return str(path)


def test_a_keras_file_of_another_model_is_refused_by_every_command(tmp_path, capsys, not_deeplab, photo):
    commands = {
        "predict": ["predict", photo, "--model", not_deeplab, "--out", str(tmp_path / "p")],
        "export": ["export", "--model", not_deeplab, "--out", str(tmp_path / "e")],
        "convert-tflite": ["convert-tflite", "--model", not_deeplab, "--out", str(tmp_path / "t")],
    }
    for command, argv in commands.items():
        assert main(argv) == 1
        assert (
            one_error_line(capsys, command)
            == f"{not_deeplab}: holds a Sequential, not a DeepLab model made by build_model"
        )
    assert not os.path.exists(tmp_path / "p") and not os.path.exists(tmp_path / "e")


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04 cut short"])
def test_a_corrupt_keras_file_is_not_called_missing(tmp_path, capsys, photo, content):
    model = tmp_path / "damaged.keras"
    model.write_bytes(content)
    commands = {
        "predict": ["predict", photo, "--model", str(model), "--out", str(tmp_path / "p")],
        "evaluate": ["evaluate", "--model", str(model), "--format", "synthetic"],
        "export": ["export", "--model", str(model), "--out", str(tmp_path / "e")],
    }
    for command, argv in commands.items():
        assert main(argv) == 1
        message = one_error_line(capsys, command)
        assert message.startswith(f"{model}: damaged or not a .keras model file") and "not found" not in message


def test_predict_refuses_an_image_over_the_pixel_limit_before_decoding(tmp_path, tmp_path_factory, capsys):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    png = encode(random_image(8, 8))
    bomb = tmp_path / "bomb.png"  # 17 KB claiming 12000x12000: decoding it would take 430 MB, more in the model
    bomb.write_bytes(png[:16] + struct.pack(">II", 12000, 12000) + png[24:])
    assert main(["predict", str(bomb), "--model", keras_path, "--out", str(tmp_path / "o")]) == 1
    message = one_error_line(capsys, "predict")
    assert message == (
        f"{bomb}: image of 12000x12000 = 144000000 pixels is over the limit of 16777216 "
        "(predict --max-pixels, the default for 5 classes)"
    )
    small = tmp_path / "small.png"
    small.write_bytes(encode(random_image(20, 20)))
    argv = ["predict", str(small), "--model", keras_path, "--out", str(tmp_path / "o"), "--max-pixels", "300"]
    assert main(argv) == 1
    assert one_error_line(capsys, "predict").endswith(
        "small.png: image of 20x20 = 400 pixels is over the limit of 300 (predict --max-pixels)"
    )


def test_serve_without_versions_or_on_a_port_in_use(tmp_path, tmp_path_factory, capsys):
    assert main(["serve", str(tmp_path)]) == 1
    assert one_error_line(capsys, "serve") == f"{tmp_path}: no version folders (1/, 2/, ...) with a SavedModel"
    _, base_path = export_tiny_model(tmp_path_factory)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", base_path, "--port", str(port), "--quiet"]) == 1
    assert one_error_line(capsys, "serve") == f"127.0.0.1:{port}: cannot listen there (Address already in use)"


def test_output_folders_under_a_file_are_named(tmp_path, tmp_path_factory, capsys, photo):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = str(blocker / "out")
    assert main(["client", photo, "--url", "http://127.0.0.1:9", "--out", out]) == 1
    assert one_error_line(capsys, "client") == f"{out}: cannot make this folder (Not a directory)"
    argv = ["convert-tflite", "--model", keras_path, "--out", out, "--quantization", "float32", "--num-images", "1"]
    assert main(argv) == 1
    assert one_error_line(capsys, "convert-tflite") == f"{out}: cannot make this folder (Not a directory)"
    assert main(["predict", photo, "--model", keras_path, "--out", out]) == 1
    assert one_error_line(capsys, "predict") == f"{out}: cannot make this folder (Not a directory)"


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`keras-deeplab data check --json | head -c 1`: the reader closes the pipe before the command prints."""
    command = [sys.executable, "-m", "keras_deeplab.cli", "data", "check", "--format", "synthetic", "--split", "train"]
    process = subprocess.Popen(
        [*command, "--num-examples", "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(120) == 141  # as a process stopped by SIGPIPE shows in a shell
    assert stderr == ""


def test_dataset_option_takes_a_known_name_or_a_class_list(tmp_path, capsys):
    from keras_deeplab.commands.arguments import dataset_descriptor
    from keras_deeplab.descriptors import VOC

    assert dataset_descriptor("pascal_voc") is VOC
    (tmp_path / "class_names.txt").write_text("_background_\ncat\ndog")
    for given in (tmp_path, tmp_path / "class_names.txt"):
        own = dataset_descriptor(str(given))
        assert (own.name, own.class_names, own.background) == (tmp_path.name, ("_background_", "cat", "dog"), 0)
    (tmp_path / "empty").mkdir()
    for given, message in ((tmp_path / "empty", "no class list in this folder"), ("vocc", "no descriptor for")):
        with pytest.raises(SystemExit, match="2"):
            main(["predict", "p.jpg", "--model", "m.keras", "--out", "o", "--dataset", str(given)])
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert message in error and "--dataset" in error
