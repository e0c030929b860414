#!/usr/bin/env python3
"""Install keras-deeplab into a fresh virtual environment per Python interpreter and segment a photo with the CRF.

    python scripts/try_pythons.py                      # pyenv's 3.11, 3.12 and 3.13, where they are installed
    python scripts/try_pythons.py /usr/bin/python3.12  # given interpreters
    python scripts/try_pythons.py --no-compiler        # installed with CC=false CXX=false: no CRF extension

Each environment gets `pip install "<a clean copy of this checkout>[cpu]"` (regular, not editable: what a user gets),
then `keras-deeplab predict` of the shipped photo with the shipped published model and `--crf`, and a
`keras.models.load_model` of a model `import-weights` saved. One row per interpreter: install time, environment
size, predict time, the CRF loops the extension picked, and the first error line where a step failed. With
`--no-compiler` the install runs with CC=false CXX=false: it must succeed without the extension, `predict` must
work without `--crf` and refuse `--crf` with one line saying what is missing. The
environments live in a temporary folder (about 1.8 GB each), removed at the end unless --keep. Downloads come
from PyPI (pip's cache makes a second run quick).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "keras_deeplab" / "assets" / "published"
# TensorFlow 2.21 publishes wheels for 3.10 too, but pip does not resolve the project's dependencies there (it
# backtracks over tensorflow-datasets' for more than an hour), and 3.10 reached its end of life in October 2026.
PYENV_VERSIONS = ("3.11", "3.12", "3.13")
LOAD_WITH_KERAS = (
    "import sys, keras_deeplab, keras\n"
    "model = keras.models.load_model(sys.argv[1])\n"
    "print(type(model).__name__, model.count_params())\n"
)


def pyenv_interpreters() -> list[str]:
    """The newest pyenv interpreter of each of PYENV_VERSIONS that is installed."""
    root = pathlib.Path(os.environ.get("PYENV_ROOT", pathlib.Path.home() / ".pyenv")) / "versions"
    found = []
    for version in PYENV_VERSIONS:
        candidates = sorted(root.glob(f"{version}.*/bin/python3"), key=lambda path: path.parent.parent.name)
        if candidates:
            found.append(str(candidates[-1]))
    return found


def run(command: list[str], **options) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, **options)
    return time.monotonic() - started, result


def first_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1].strip()[:160]


def folder_size(path: pathlib.Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and not file.is_symlink())


def clean_copy(work: pathlib.Path) -> pathlib.Path:
    """The checkout's sources without what building and testing left there: pip builds a folder in place, and
    setuptools would reuse a `build/` of an earlier install (the extension compiled for that Python: no compiler
    needed, which hid a failing no-compiler install), as a fresh clone has none."""
    left_behind = shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "*.so", "__pycache__", ".*_cache", "runs", "site"
    )
    return pathlib.Path(shutil.copytree(ROOT, work / "source", ignore=left_behind))


def try_interpreter(python: str, work: pathlib.Path, source: pathlib.Path, no_compiler: bool) -> dict[str, str]:
    row = {"python": python}
    _, version = run([python, "-c", "import sys; print(sys.version.split()[0])"])
    row["version"] = version.stdout.strip() or "?"
    environment = work / f"venv-{row['version']}"
    _, made = run([python, "-m", "venv", str(environment)])
    if made.returncode:
        return {**row, "result": f"venv failed: {first_error(made)}"}
    bin_folder = environment / "bin"
    install = [str(bin_folder / "python"), "-m", "pip", "install", "--quiet", f"{source}[cpu]"]
    seconds, installed = run(install, env={**os.environ, **({"CC": "false", "CXX": "false"} if no_compiler else {})})
    row["install_s"] = f"{seconds:.0f}"
    if installed.returncode:
        return {**row, "result": f"install failed: {first_error(installed)}"}
    row["venv_gb"] = f"{folder_size(environment) / 1e9:.2f}"
    command = str(bin_folder / "keras-deeplab")
    photo, model = PUBLISHED / "bird_segmentation.bmp", PUBLISHED / "deeplabv3_257_mv_gpu.tflite"
    predict = [command, "predict", str(photo), "--model", str(model), "--out", str(work)]
    if no_compiler:
        _, refused = run([*predict, "--crf"])
        if refused.returncode != 1 or len(refused.stderr.splitlines()) != 1:
            return {**row, "result": f"predict --crf without the extension: {first_error(refused)}"}
        row["crf_refused"] = refused.stderr.strip()
    seconds, predicted = run(predict if no_compiler else [*predict, "--crf"])
    row["predict_s"] = f"{seconds:.1f}"
    if predicted.returncode or predicted.stderr:
        return {**row, "result": f"predict --crf failed or wrote to stderr: {first_error(predicted)}"}
    # From `work`, not this checkout: Python puts the current folder first on sys.path, and the checkout's
    # keras_deeplab/ (with the extension built for its own Python only) would hide the installed package.
    check_loops = "from keras_deeplab import _crf_mean_field as m; print(m.instruction_set())"
    _, loops = run([str(bin_folder / "python"), "-c", check_loops], cwd=work)
    row["crf_loops"] = loops.stdout.strip() or "missing"
    keras_file = work / f"mnv2-{row['version']}.keras"
    _, imported = run([command, "import-weights", str(model), "--out", str(keras_file)])
    _, loaded = run([str(bin_folder / "python"), "-c", LOAD_WITH_KERAS, str(keras_file)])
    if imported.returncode or loaded.returncode:
        failure = loaded if imported.returncode == 0 else imported
        return {**row, "result": f"import-weights / load_model failed: {first_error(failure)}"}
    return {**row, "result": f"ok ({loaded.stdout.strip()})"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("interpreters", nargs="*", help="Python executables (default: pyenv's 3.11 to 3.13)")
    parser.add_argument("--keep", action="store_true", help="keep the environments (printed folder)")
    parser.add_argument("--no-compiler", action="store_true", help="install with CC=false CXX=false")
    args = parser.parse_args()
    interpreters = args.interpreters or pyenv_interpreters()
    if not interpreters:
        parser.error("no interpreter given and none of pyenv's 3.11-3.13 found")
    sys.path.insert(0, str(ROOT))
    from keras_deeplab import machine

    print(machine.describe(), flush=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="keras-deeplab-pythons-"))
    failed = 0
    try:
        source = clean_copy(work)
        print(
            f"| Python | install s | venv GB | predict{'' if args.no_compiler else ' --crf'} s | CRF loops | result |"
        )
        print("|---|---|---|---|---|---|")
        for python in interpreters:
            row = try_interpreter(python, work, source, args.no_compiler)
            failed += not row["result"].startswith("ok")
            cells = [
                row.get(key, "-") for key in ("version", "install_s", "venv_gb", "predict_s", "crf_loops", "result")
            ]
            print("| " + " | ".join(cells) + " |", flush=True)
            if "crf_refused" in row:
                print(f"  predict --crf: {row['crf_refused']}", flush=True)
    finally:
        if args.keep:
            print(f"environments kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
