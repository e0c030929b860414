"""The contract between a backbone and the DeepLab heads."""

from __future__ import annotations

from typing import Any, NamedTuple


class BackboneFeatures(NamedTuple):
    """Symbolic features of a backbone: `low_level` at stride 4 (the v3+ decoder's input) and
    `high_level` at the output stride (the ASPP's input). Both (B, h, w, C)."""

    low_level: Any
    high_level: Any
