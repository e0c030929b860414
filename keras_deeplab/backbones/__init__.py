"""The backbone registry: each backbone's `BackboneSpec` lives in its own file; REGISTRY names them.

Adding a backbone: its file defines the spec (builder, options with their defaults, layer groups, pixel
normalisation, ImageNet file, official weights) in a `SPECS` tuple, and it gets one line in REGISTRY: nothing
else names it (`build_model` passes its options through, `info`, the cost breakdown and the importer read the
spec). Names are readable without importing Keras (the command line's `--help`); a spec's module is imported on
first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from keras_deeplab.backbones.base import BackboneFeatures, BackboneSpec, FeatureInfo, OfficialWeights

# Backbone name -> the module whose SPECS hold its spec.
REGISTRY = {
    "resnet50": "keras_deeplab.backbones.resnet",
    "resnet101": "keras_deeplab.backbones.resnet",
    "xception65": "keras_deeplab.backbones.xception",
    "mobilenetv2": "keras_deeplab.backbones.mobilenetv2",
    "vgg16": "keras_deeplab.backbones.vgg",
}
BACKBONES = tuple(REGISTRY)


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of backbone `name`; ValueError listing the backbones for an unknown name."""
    if name not in REGISTRY:
        raise ValueError(f"backbone must be one of {tuple(REGISTRY)}, got {name!r}")
    specs = {spec.name: spec for spec in importlib.import_module(REGISTRY[name]).SPECS}
    return specs[name]


def all_specs() -> list[BackboneSpec]:
    """Every registered backbone's spec, in REGISTRY's order."""
    return [backbone_spec(name) for name in REGISTRY]


def backbone_build_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of backbone `name` (its spec's defaults, updated by `given`), in the spec's order, with
    tuples as lists (as a saved config holds them).

    `given` may also hold options that only other backbones take, at those backbones' defaults (the configs
    that older versions saved hold every backbone's options); one set away from its default is a ValueError
    naming it and the backbones that take it. An option no backbone declares is a TypeError, as an unknown
    keyword argument is.
    """
    spec = backbone_spec(name)
    for option, value in given.items():
        if option in spec.options:
            continue
        owners = [other for other in all_specs() if option in other.options]
        if not owners:
            raise TypeError(f"build_model() got an unexpected keyword argument {option!r}")
        if not all(_is_default(value, other.options[option]) for other in owners):
            raise ValueError(
                f"{option} applies to the backbones {', '.join(other.name for other in owners)} only, not to {name!r}"
            )
    return {option: _saved(given.get(option, default)) for option, default in spec.options.items()}


def canonical_build_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A saved `build_model` config as this version saves it, to compare two configs: the backbone's options
    filled in with their defaults, other backbones' options at their defaults dropped (older versions saved
    every backbone's options). A config naming no known backbone is returned as it is."""
    if config.get("backbone") not in REGISTRY:
        return dict(config)
    spec, specs = backbone_spec(config["backbone"]), all_specs()
    canonical = {
        key: value
        for key, value in config.items()
        if key in spec.options
        or not (owners := [other for other in specs if key in other.options])
        or not all(_is_default(value, other.options[key]) for other in owners)
    }
    return {**canonical, **{option: _saved(config.get(option, default)) for option, default in spec.options.items()}}


def _saved(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _is_default(value: Any, default: Any) -> bool:
    """None and a list equal to a default tuple count as the default (JSON has no tuples)."""
    if isinstance(default, tuple) and isinstance(value, list | tuple):
        return list(value) == list(default)
    return value is None or value == default


__all__ = [
    "BACKBONES",
    "REGISTRY",
    "BackboneFeatures",
    "BackboneSpec",
    "FeatureInfo",
    "OfficialWeights",
    "all_specs",
    "backbone_build_options",
    "backbone_spec",
    "canonical_build_config",
]
