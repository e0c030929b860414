#!/usr/bin/env python3
"""Check that imports run one way through the code: no cycle, and no import against the layering.

Every module of keras_deeplab/, pipelines/, serving/ and scripts/ belongs to one layer (LAYERS, lowest first);
a module may import modules of its own layer and of the layers below. Imports inside functions count, and so
do the names a package's `__init__` exports lazily (the module paths it names as strings). The package
facades (`keras_deeplab`, `pipelines`, `serving`) must not import project code above the foundation when they
are imported (only lazily), since every module below imports through them. Run by `make test`; exits 1
naming each problem.
"""

from __future__ import annotations

import ast
import fnmatch
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("keras_deeplab", "pipelines", "serving", "scripts")
FACADES = ("keras_deeplab", "pipelines", "serving")

# (layer, module patterns), lowest first.
LAYERS = (
    ("foundation", ("keras_deeplab.constants", "keras_deeplab.files", "keras_deeplab.scales",
                    "keras_deeplab.descriptors", "keras_deeplab.confusion", "keras_deeplab.lazy",
                    "keras_deeplab.machine", "keras_deeplab.quiet")),
    ("data", ("pipelines.*",)),
    ("model", ("keras_deeplab.layers", "keras_deeplab.backbones", "keras_deeplab.backbones.*",
               "keras_deeplab.heads", "keras_deeplab.weights", "keras_deeplab.model", "keras_deeplab.complexity",
               "keras_deeplab.losses", "keras_deeplab.metrics", "keras_deeplab.inference", "keras_deeplab.visualize",
               "keras_deeplab.checkpoints", "keras_deeplab.loading", "keras_deeplab.crf",
               "keras_deeplab._crf_mean_field", "keras_deeplab.trimap", "keras_deeplab.conv_gradients",
               "keras_deeplab.litert", "keras_deeplab.importing", "keras_deeplab.importing.*",
               "keras_deeplab.precision", "keras_deeplab.presets")),
    ("training", ("keras_deeplab.recipe", "keras_deeplab.evaluation", "keras_deeplab.report", "keras_deeplab.training",
                  "keras_deeplab.training.*")),
    ("export", ("serving.settings", "serving.export", "serving.tflite", "serving.engines")),
    ("serving", ("serving.rest_json", "serving.page", "serving.rest_api", "serving.server", "serving.client",
                 "serving.predict")),
    ("command line", ("keras_deeplab.demo", "keras_deeplab.cli", "keras_deeplab.commands",
                      "keras_deeplab.commands.*", "scripts.*")),
    ("package facades", FACADES),
)  # fmt: skip
# Imports the layering alone would allow but the design does not: (importer pattern, imported pattern, why).
FORBIDDEN = (
    ("serving.*", "keras_deeplab.training*", "serving/ imports no training code"),
    ("serving.*", "keras_deeplab.recipe", "serving/ imports no training code"),
    ("serving.*", "keras_deeplab.evaluation", "serving/ imports no evaluation code"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return index
    return None


def imports_of(path: Path, modules: set[str]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module level) for every import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf8"), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        elif path.name == "__init__.py" and isinstance(node, ast.Constant) and node.value in modules:
            names = [node.value]  # a lazily exported module, named as a string
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module_name(path):
                found.append((name, node.lineno, id(node) in top_level and not isinstance(node, ast.Constant)))
    return found


def compiled_modules() -> set[str]:
    """The C++ extensions pyproject.toml builds: modules without Python source, which import nothing of ours."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        settings = tomllib.load(handle)
    return {extension["name"] for extension in settings["tool"]["setuptools"].get("ext-modules", [])}


def check() -> list[str]:
    paths = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    compiled = compiled_modules()
    modules = {module_name(path) for path in paths} | compiled
    graph: dict[str, set[str]] = {module: set() for module in modules}
    problems = [
        f"{name}: compiled module in no layer of scripts/check_layers.py" for name in compiled if layer_of(name) is None
    ]
    for path in paths:
        module = module_name(path)
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{path.relative_to(ROOT)}: module {module} is in no layer of scripts/check_layers.py")
            continue
        for imported, line, eager in imports_of(path, modules):
            graph[module].add(imported)
            where = f"{path.relative_to(ROOT)}:{line}"
            imported_layer = layer_of(imported)
            if module in FACADES and eager and imported_layer != 0:
                problems.append(f"{where}: package facade {module} imports {imported} when imported (make it lazy)")
            if imported_layer is not None and imported_layer > layer:
                problems.append(
                    f"{where}: {module} ({LAYERS[layer][0]}) imports {imported} ({LAYERS[imported_layer][0]}),"
                    " a layer above it"
                )
            for importer, target, why in FORBIDDEN:
                if fnmatch.fnmatchcase(module, importer) and fnmatch.fnmatchcase(imported, target):
                    problems.append(f"{where}: {module} imports {imported}: {why}")
    problems.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph))
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a module importing itself)."""
    found, state, stack = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                found.append([*stack[stack.index(imported) :], imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"layers: {' < '.join(name for name, _ in LAYERS)}; no cycle, no import against them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
