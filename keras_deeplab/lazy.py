"""Lazy re-exports for package `__init__` files: a name is imported from its module on first use, so importing
a package (or any module under it) never loads what the package merely offers at its top."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
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
