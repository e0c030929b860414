"""The code's layering: imports run one way, the command line starts without TensorFlow, old models load."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from keras_deeplab.loading import load_model

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def _modules_loaded_by(code: str) -> set[str]:
    """Every module name in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(result.stdout.split())


def _packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_the_layer_checker_passes_and_fails_on_an_import_against_the_layering(tmp_path):
    checker = ROOT / "scripts" / "check_layers.py"
    passed = subprocess.run([sys.executable, str(checker)], capture_output=True, text=True, cwd=ROOT)
    assert passed.returncode == 0, passed.stderr
    assert "no cycle" in passed.stdout
    # The same checker on a copy of the tree where pipelines imports training code, and constants imports model.
    copy = tmp_path / "tree"
    copy.mkdir()
    for package in ("keras_deeplab", "pipelines", "serving", "scripts"):
        shutil.copytree(ROOT / package, copy / package)
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")  # names the compiled modules
    with open(copy / "pipelines" / "augment.py", "a", encoding="utf8") as handle:
        handle.write("\n\ndef _late():\n    from keras_deeplab.training import train\n\n    return train\n")
    with open(copy / "keras_deeplab" / "constants.py", "a", encoding="utf8") as handle:
        handle.write("\nfrom keras_deeplab import model  # noqa\n")
    failed = subprocess.run([sys.executable, str(copy / "scripts" / "check_layers.py")], capture_output=True, text=True)
    assert failed.returncode == 1
    assert "pipelines.augment (data) imports keras_deeplab.training (training), a layer above it" in failed.stderr
    assert "keras_deeplab.constants (foundation) imports keras_deeplab.model (model)" in failed.stderr
    assert "import cycle: " in failed.stderr  # model -> ... -> constants -> model


def test_help_and_the_command_modules_load_no_tensorflow():
    loaded = _modules_loaded_by(
        "import contextlib, io\n"
        "from keras_deeplab.cli import build_parser\n"
        "parser = build_parser()\n"
        "for command in ('', 'info', 'train', 'evaluate', 'data', 'export', 'serve', 'client', 'predict',"
        " 'convert-tflite', 'demo'):\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(io.StringIO()):\n"
        "            parser.parse_args([command, '--help'] if command else ['--help'])\n"
        "    except SystemExit:\n"
        "        pass"
    )
    assert "keras_deeplab.commands.convert" in loaded
    assert not _packages(loaded) & {"tensorflow", "keras", "numpy"}


def test_the_package_and_build_model_load_no_training_pipelines_or_serving():
    assert not _packages(_modules_loaded_by("import keras_deeplab")) & {"tensorflow", "keras", "pipelines", "serving"}
    loaded = _modules_loaded_by(
        "import keras_deeplab\nkeras_deeplab.build_model(16, backbone='resnet50', width_multiplier=0.125)"
    )
    assert "keras_deeplab.model" in loaded and "keras" in _packages(loaded)
    assert not _packages(loaded) & {"pipelines", "serving"}
    above_the_model = ("training", "evaluation", "recipe", "demo", "commands", "cli")
    assert not [name for name in loaded if name.startswith("keras_deeplab.") and name.split(".")[1] in above_the_model]


def test_a_keras_file_saved_before_the_restructuring_still_loads():
    """tests/data/saved_before_layering.keras was written by the code of 6cfd3a0 (before this layering)."""
    model = load_model(DATA / "saved_before_layering.keras")
    expected = np.load(DATA / "saved_before_layering.npz")
    np.testing.assert_allclose(model(expected["images"]).numpy(), expected["logits"], atol=1e-5)
