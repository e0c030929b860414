"""Lazy imports: re-exports for package `__init__` files (a name is imported from its module on first use, so
importing a package, or any module under it, never loads what the package merely offers at its top), and work
wrapped around another package's first import, wherever it happens (`wrap_imports`)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562) for `package` that imports `exports[name]` (a module path) on first use
    and returns its attribute `name`; AttributeError for a name it does not export."""
    namespace = importlib.import_module(package).__dict__

    def module_getattr(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    return module_getattr


class _ImportWrapper(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a module `matches` accepts, it asks the finders after it and runs the loader's
    `exec_module` inside `around(module name)`."""

    def __init__(self, matches: Callable[[str], bool], around: Callable[[str], AbstractContextManager]) -> None:
        self.matches = matches
        self.around = around

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not self.matches(fullname):
            return None
        finders = sys.meta_path[sys.meta_path.index(self) + 1 :] if self in sys.meta_path else []
        for finder in finders:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        # Loaders that are classes (built-in and frozen modules) serve every module: left alone.
        if loader is None or isinstance(loader, type) or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            with self.around(module.__name__):
                execute(module)

        loader.exec_module = exec_module
        return spec


def wrap_imports(matches: Callable[[str], bool], around: Callable[[str], AbstractContextManager]) -> None:
    """From now on, the first import of every module whose name `matches` runs inside the context manager
    `around(name)`, wherever the import happens (modules already imported are not imported again)."""
    sys.meta_path.insert(0, _ImportWrapper(matches, around))


def initializing(name: str) -> bool:
    """True while module `name` is being imported (its code still running)."""
    module = sys.modules.get(name)
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))
