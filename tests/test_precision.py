"""Precision: "auto" picks bfloat16 only where the CPU computes it natively; `--precision` of predict, evaluate and
export runs the same weights in that arithmetic."""

import ast
import json
import re

import numpy as np
import pytest
import tensorflow as tf
from miou_reference import reference_miou
from serving_models import export_tiny_model, random_image

from keras_deeplab import machine
from keras_deeplab.cli import main
from keras_deeplab.loading import load_model
from keras_deeplab.precision import precision_policy
from pipelines.formats import open_source


@pytest.mark.parametrize(
    ("flags", "gpus", "want"),
    [
        ({"avx2", "fma"}, [], "float32"),  # AVX2 only: bfloat16 would be emulated, slower than float32
        ({"avx512f", "avx512_bf16"}, [], "mixed_bfloat16"),
        ({"amx_tile", "amx_bf16"}, [], "mixed_bfloat16"),
        ({"avx2"}, ["GPU:0"], "mixed_float16"),
    ],
)
def test_auto_precision_follows_the_hardware(monkeypatch, flags, gpus, want):
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(flags))
    real = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: gpus if kind == "GPU" else real(kind))
    assert precision_policy("auto") == want
    assert precision_policy("float32") == "float32"
    with pytest.raises(ValueError, match="precision must be one of float32, mixed, auto; got 'half'"):
        precision_policy("half")


def test_this_machines_description_names_its_cpu_and_flags():
    line = machine.describe()
    assert line.startswith(f"CPU: {machine.cpu_model()}, ") and "flags: " in line and "native bfloat16: " in line
    assert set(machine.native_bfloat16()) <= set(machine.cpu_flags())


def test_load_model_in_bfloat16_keeps_the_weights_and_nearly_all_the_classes(tmp_path_factory):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    full, half = load_model(keras_path), load_model(keras_path, precision="mixed")
    assert full.dtype_policy.name == "float32" and half.dtype_policy.name == "mixed_bfloat16"
    for ours, theirs in zip(half.weights, full.weights, strict=True):
        assert ours.dtype == theirs.dtype == "float32"
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    image = random_image(37, 45, seed=3)[np.newaxis].astype("float32")
    logits_full, logits_half = full(image).numpy(), half(image).numpy()
    assert logits_half.dtype == np.float32
    np.testing.assert_allclose(logits_half, logits_full, atol=0.05 * np.abs(logits_full).max())
    assert np.mean(logits_half.argmax(-1) == logits_full.argmax(-1)) > 0.95


@pytest.mark.slow(17)
def test_precision_option_of_predict_evaluate_and_export(tmp_path, tmp_path_factory, capsys):
    keras_path, _ = export_tiny_model(tmp_path_factory)
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(random_image(33, 41, seed=1)).save(photo)
    assert (
        main(["predict", str(photo), "--model", keras_path, "--out", str(tmp_path / "out"), "--precision", "mixed"])
        == 0
    )
    assert "(mixed_bfloat16, tensorflow)" in capsys.readouterr().out
    assert (tmp_path / "out" / "photo.png").is_file()
    evaluate = ["evaluate", "--model", keras_path, "--format", "synthetic", "--max-examples", "2", "--json"]
    assert main([*evaluate, "--precision", "auto"]) == 0
    miou = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["miou"]
    in_that_arithmetic = load_model(keras_path, precision="auto")  # bfloat16 where this CPU computes it natively
    assert miou == pytest.approx(reference_miou(in_that_arithmetic, open_source("synthetic", None, "val"), 2), abs=1e-6)
    assert main(["export", "--model", keras_path, "--out", str(tmp_path / "export"), "--precision", "mixed"]) == 0
    exported = tf.saved_model.load(str(tmp_path / "export" / "1"))
    graph_types = {
        node.attr["T"].type
        for function in exported.logits.get_concrete_function().graph.as_graph_def().library.function
        for node in function.node_def
        if node.op in ("Conv2D", "DepthwiseConv2dNative")
    }
    assert tf.bfloat16.as_datatype_enum in graph_types
    with pytest.raises(SystemExit):
        main(["predict", str(photo), "--model", keras_path, "--out", str(tmp_path / "o"), "--precision", "half"])
    assert "invalid choice: 'half'" in capsys.readouterr().err


def _calls_reached_from_the_entry_point(source: str) -> set[str]:
    """The calls ('machine.describe', 'print', ...) that running a script as `python script.py` reaches: those in
    its `if __name__ == "__main__":` block and, through it, in the script's own functions it calls (however deep).
    Comments, strings and functions nothing calls count for nothing."""
    tree = ast.parse(source)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    entry = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"'
    ]
    reached, calls = set(), set()
    while entry:
        for node in ast.walk(entry.pop()):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                calls.add(name)
                if name in functions and name not in reached:
                    reached.add(name)
                    entry.append(functions[name])
    return calls


def test_the_entry_point_check_sees_through_comments_strings_and_unused_functions():
    run = 'def main():\n    print(machine.describe())\n\n\nif __name__ == "__main__":\n    main()\n'
    assert "machine.describe" in _calls_reached_from_the_entry_point(run)
    for fake in (
        '# print(machine.describe())\nif __name__ == "__main__":\n    print("machine.describe()")\n',
        'def unused():\n    print(machine.describe())\n\n\nif __name__ == "__main__":\n    print(1)\n',
        "def main():\n    print(machine.describe())\n",  # no entry point
    ):
        assert "machine.describe" not in _calls_reached_from_the_entry_point(fake), fake


def test_every_benchmark_prints_the_cpu_it_ran_on():
    """Figures from different machines are not comparable: running any benchmark script calls
    `keras_deeplab.machine.describe()` (peers.py is their shared helper, not a benchmark)."""
    import pathlib

    scripts = sorted(pathlib.Path(__file__).parent.parent.joinpath("benchmarks").glob("*.py"))
    silent = [
        path.name
        for path in scripts
        if path.name != "peers.py"
        and not (
            "machine.describe" in _calls_reached_from_the_entry_point(path.read_text())
            and re.search(r"^\s*from keras_deeplab import .*\bmachine\b", path.read_text(), re.MULTILINE)
        )
    ]
    assert len(scripts) > 10 and silent == []
