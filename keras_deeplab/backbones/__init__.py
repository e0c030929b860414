"""The backbone registry: each backbone's `BackboneSpec` lives in its own file; this names them.

Adding a backbone: its file defines the spec (builder, pixel normalisation, options, ImageNet file), and it gets
one entry in BACKBONES and in `_specs`. Names are readable without importing Keras (the command line's
`--help`); a spec's module is imported on first use.
"""

from __future__ import annotations

from typing import Any

from keras_deeplab.backbones.base import BackboneFeatures, BackboneSpec, FeatureInfo

BACKBONES = ("resnet50", "resnet101", "xception65", "mobilenetv2", "vgg16")


def _specs() -> dict[str, BackboneSpec]:
    from keras_deeplab.backbones import mobilenetv2, resnet, vgg, xception

    return {spec.name: spec for spec in (*resnet.SPECS, xception.SPEC, mobilenetv2.SPEC, vgg.SPEC)}


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of backbone `name`; ValueError listing the backbones for an unknown name."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
    return _specs()[name]


def backbone_build_options(name: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The options of `given` (build_model's backbone-specific options) that backbone `name` takes.

    Another option set away from its default in `defaults` (a ResNet option given to Xception, say) is a
    ValueError naming it and the backbones that take it; None and a list equal to a default tuple count as unset.
    """
    specs = _specs()
    for option, value in given.items():
        default = defaults[option]
        unset = value is None or value == default or (isinstance(default, tuple) and tuple(value) == default)
        if option not in specs[name].options and not unset:
            owners = ", ".join(spec.name for spec in specs.values() if option in spec.options)
            raise ValueError(f"{option} applies to the backbones {owners} only, not to {name!r}")
    return {option: given[option] for option in specs[name].options}


__all__ = ["BACKBONES", "BackboneFeatures", "BackboneSpec", "FeatureInfo", "backbone_build_options", "backbone_spec"]
