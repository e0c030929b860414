"""The CRF's C++ extension on every machine: optional at install, built by g++ and clang, and its standard-C++
path (what MSVC would compile) computing what the installed extension computes."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest

import keras_deeplab
from keras_deeplab import crf
from keras_deeplab.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "keras_deeplab" / "crf_mean_field.cpp"
PUBLISHED = ROOT / "keras_deeplab" / "assets" / "published"
# The C++ standard and warnings of every build here; the standard-C++ path must not need GCC's extensions.
FLAGS = ["-O2", "-std=c++20", "-pthread", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-Wno-psabi"]
STANDARD_CPP = ["-DKERAS_DEEPLAB_STANDARD_CPP", "-Wpedantic"]


@pytest.fixture(scope="session")
def clang() -> str:
    """clang++, installed from Debian's packages when missing (as the CI machine, root, can)."""
    if shutil.which("clang++") is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "clang"],
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            timeout=600,
        )
    if shutil.which("clang++") is None:
        pytest.skip("clang++ is not installed and could not be installed with apt-get")
    return "clang++"


def build(compiler: str, flags: list[str], folder: pathlib.Path):
    """keras_deeplab._crf_mean_field compiled by `compiler` with `flags` into `folder`, loaded as a module."""
    target = folder / f"_crf_mean_field{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    command = [compiler, *FLAGS, *flags, f"-I{include}", str(SOURCE), "-o", str(target)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    spec = importlib.util.spec_from_file_location("_crf_mean_field", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_same_mean_field(module, monkeypatch):
    """`module`'s mean field gives the installed extension's probabilities (to float rounding) and class maps,
    on 3, 21 and 40 classes (one vector with padding, three, and the general loop)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (29, 41, 3), dtype=np.uint8)
    for classes in (3, 21, 40):
        probabilities = rng.random((29, 41, classes)).astype(np.float32) ** 4
        probabilities /= probabilities.sum(-1, keepdims=True)
        expected = crf.dense_crf(image, probabilities, threads=2)
        with monkeypatch.context() as patch:
            patch.setattr(crf, "extension", lambda: module)
            refined = crf.dense_crf(image, probabilities, threads=2)
        assert np.abs(refined - expected).max() < 1e-4, classes
        assert (refined.argmax(-1) == expected.argmax(-1)).mean() > 0.999, classes


@pytest.mark.slow
def test_the_standard_cpp_path_built_by_gcc_computes_what_the_installed_extension_does(tmp_path, monkeypatch):
    module = build("g++", STANDARD_CPP, tmp_path)
    assert module.instruction_set() == "baseline"  # no vector extensions, no run-time dispatch
    assert_same_mean_field(module, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("standard", [False, True], ids=["vector-extensions", "standard-cpp"])
def test_clang_builds_both_paths_and_they_compute_what_the_installed_extension_does(
    clang, standard, tmp_path, monkeypatch
):
    module = build(clang, STANDARD_CPP if standard else [], tmp_path)
    if not standard and os.uname().machine == "x86_64":
        assert module.instruction_set() in ("avx2", "baseline")
    assert_same_mean_field(module, monkeypatch)


@pytest.mark.slow
def test_an_install_without_a_compiler_succeeds_without_the_extension(tmp_path):
    """`CC=false CXX=false pip install .`: the wheel pip builds for it holds everything but the extension."""
    environment = {**os.environ, "CC": "false", "CXX": "false"}
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("keras_deeplab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "keras_deeplab/crf.py" in names and "keras_deeplab/model.py" in names
    assert not [name for name in names if "_crf_mean_field" in name], names


def test_without_the_extension_the_crf_says_what_is_missing_and_the_rest_works(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "keras_deeplab._crf_mean_field", None)  # as if it was never built
    monkeypatch.delattr(keras_deeplab, "_crf_mean_field", raising=False)
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(crf.MissingExtensionError, match="install g\\+\\+ or clang"):
        crf.dense_crf(image, np.full((4, 5, 2), 0.5, np.float32))
    photo, model = PUBLISHED / "bird_segmentation.bmp", PUBLISHED / "deeplabv3_257_mv_gpu.tflite"
    command = ["predict", str(photo), "--model", str(model), "--out", str(tmp_path / "crf")]
    assert main([*command, "--crf"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("keras-deeplab predict: error: the fully connected CRF needs")
    assert not (tmp_path / "crf").exists()  # refused before any work
    assert main(command) == 0  # everything but the CRF works
    assert (tmp_path / "crf" / "bird_segmentation.png").is_file()


@pytest.mark.slow(35)
def test_the_extension_under_the_sanitizers_finds_nothing_in_a_few_seconds():
    """scripts/sanitize_crf.py, briefly (the issue 24 run: --seconds 60, in the README): the extension built with
    AddressSanitizer and UndefinedBehaviorSanitizer, called with random and extreme inputs, reports nothing."""
    found = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if shutil.which("g++") is None or not os.path.isabs(found):
        pytest.skip("no g++ with the AddressSanitizer runtime")
    command = [sys.executable, str(ROOT / "scripts" / "sanitize_crf.py"), "--seconds", "3"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sanitize_crf: no findings" in run.stdout
    assert "python driver:" in run.stdout and "c++ driver:" in run.stdout
