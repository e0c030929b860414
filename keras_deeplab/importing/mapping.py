"""From official tensors to a DeepLab: infer the architecture, build the model, load every weight by name.

The official names map to our layers through the tables kept beside the layers they fill:
each backbone spec's `official` (`BackboneSpec.official`) and `heads.official_weight_names(separable)`. Every tensor of
the source must land in a layer of the model, and every layer must receive all of its weights, with the
shapes it has; anything else raises WeightImportError naming the tensor or layer and the file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from keras import layers

from keras_deeplab import constants, heads
from keras_deeplab.backbones import BackboneSpec, all_specs, backbone_spec
from keras_deeplab.backbones.base import official_tensor
from keras_deeplab.importing.read import read_source
from keras_deeplab.importing.sources import SourceWeights, WeightImportError
from keras_deeplab.model import DeepLab, build_model

DEFAULT_OUTPUT_STRIDE = 16  # for sources that do not say (checkpoints alone): the official eval's
FOLDED_BIAS = "folded_bias"  # slot of a batch norm whose conv's bias holds it (TFLite)


def import_weights(source: str | os.PathLike, *, num_classes: int | None = None) -> DeepLab:
    """A DeepLab holding the weights of a published DeepLab file.

    `source`: a TF1 checkpoint (prefix or `.index`), a model-zoo tarball holding one, a frozen graph `.pb`, or
    a DeepLab `.tflite` (float32, float16 or quantized; folded batch norm loads as identity statistics).
    The architecture is the file's own (backbone, depth multiplier, classes, ASPP kind, separable convs,
    decoder; the output stride where the file says it: a TFLite file's input and logits sizes, a frozen graph's
    (or a tarball's graph's) atrous rates; else 16); resizes align corners as the official code.
    `num_classes` other than the source's: every weight but the logits, which start fresh.
    Raises WeightImportError (a ValueError) naming the file and the tensor or layer that does not fit.
    """
    weights = read_source(source)
    config = infer_build_config(weights)
    skip_layers: tuple[str, ...] = ()
    if num_classes is not None and num_classes != config["num_classes"]:
        config["num_classes"], skip_layers = num_classes, ("logits",)
    model = build_model(**config)
    load_official_weights(model, weights, skip_layers=skip_layers)
    return model


def infer_build_config(weights: SourceWeights) -> dict[str, Any]:
    """`build_model` arguments that reproduce the network of `weights`, read from its tensor names and shapes."""
    tensors, path = weights.tensors, weights.path
    scopes = {name.split("/", 1)[0] for name in tensors}
    official = {spec.official.scope: spec for spec in all_specs() if spec.official is not None}
    found = [scope for scope in official if scope in scopes]
    if len(found) != 1:
        raise WeightImportError(
            f"{path}: expected the variables of exactly one backbone under {sorted(official)}, "
            f"found top-level scopes {sorted(scopes)}"
        )
    spec = official[found[0]]

    def has(prefix: str) -> bool:
        return any(name.startswith(prefix) for name in tensors)

    num_classes = _require(weights, "logits/semantic/weights").shape[-1]
    _require(weights, "image_pooling/weights")  # our ASPP always has the image pooling branch
    light = not has("aspp1/") and not has("aspp1_")
    aspp_separable, decoder = has("aspp1_depthwise/"), has("decoder/")
    decoder_separable = has("decoder/decoder_conv0_depthwise/")
    if not light and decoder and aspp_separable != decoder_separable:
        raise WeightImportError(
            f"{path}: separable ASPP convs {'with' if aspp_separable else 'without'} separable decoder convs; "
            "this project builds both alike"
        )
    config: dict[str, Any] = {
        "output_stride": weights.output_stride or DEFAULT_OUTPUT_STRIDE,
        "num_classes": int(num_classes),
        "backbone": spec.name,
        "decoder": decoder,
        "separable": decoder_separable if light else aspp_separable,
        "aspp_filters": int(_require(weights, "aspp0/weights").shape[-1]),
        "light_aspp": light,
        "align_corners": True,
    }
    try:
        config.update(spec.official.infer_options(tensors))
    except ValueError as error:
        raise WeightImportError(f"{path}: {error}") from error
    if weights.output_stride is None and weights.atrous_rates:
        config["output_stride"] = output_stride_of_rates(config, weights, spec.official.scope)
    return config


def output_stride_of_rates(config: dict[str, Any], weights: SourceWeights, scope: str) -> int:
    """The output stride at which our network's backbone convs run at the rates the file's do (the atrous rates
    of the last blocks are what an output stride changes); the ASPP's rates are the export's own choice and are
    not compared. WeightImportError when no output stride gives the file's rates."""
    rates = {name: rate for name, rate in weights.atrous_rates.items() if name.startswith(f"{scope}/")}
    likely = constants.OUTPUT_STRIDES[-1] // max(rates.values(), default=1)  # most backbones: rate 32 / stride
    for output_stride in sorted(constants.OUTPUT_STRIDES, key=lambda stride: stride != likely):
        table, _ = official_weight_table({**config, "output_stride": output_stride})
        model = build_model(**{**config, "output_stride": output_stride})
        if all(name in table and _layer_rate(model.get_layer(table[name][0])) == rate for name, rate in rates.items()):
            return output_stride
    found = ", ".join(f"{name} {rate}" for name, rate in sorted(rates.items()) if rate > 1) or "none above 1"
    raise WeightImportError(
        f"{weights.path}: its backbone's atrous rates ({found}) are those of no output stride in "
        f"{constants.OUTPUT_STRIDES} of this project's {config['backbone']}"
    )


def _layer_rate(layer: layers.Layer) -> int:
    return int(max(getattr(layer, "dilation_rate", (1, 1))))


def _require(weights: SourceWeights, name: str) -> np.ndarray:
    try:
        return official_tensor(weights.tensors, name)
    except ValueError as error:
        raise WeightImportError(f"{weights.path}: {error}") from error


def official_weight_table(build_config: dict[str, Any]) -> tuple[dict[str, tuple[str, str]], dict[str, float]]:
    """{official name: (our layer, slot)} for a model's backbone and heads, and {our batch-norm layer: the
    official epsilon its statistics were computed with}."""
    spec: BackboneSpec = backbone_spec(build_config["backbone"])
    if spec.official is None:
        raise WeightImportError(f"no official weight table for backbone {build_config['backbone']!r}")
    try:
        backbone_table = spec.official.weight_names(build_config)
    except ValueError as error:
        raise WeightImportError(str(error)) from error
    head_table = heads.official_weight_names(build_config["separable"])
    epsilons = {layer: spec.official.batch_norm_epsilon for layer, _ in backbone_table.values()}
    epsilons.update({layer: heads.OFFICIAL_BATCH_NORM_EPSILON for layer, _ in head_table.values()})
    return {**backbone_table, **head_table}, epsilons


def load_official_weights(model: DeepLab, weights: SourceWeights, *, skip_layers: tuple[str, ...] = ()) -> None:
    """Set every weight of `model` from `weights` by the official-name tables; layers in `skip_layers` keep
    theirs (and the source's tensors for them are dropped)."""
    table, epsilons = official_weight_table(model.build_config)
    path = weights.path
    by_layer: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
    for name, value in sorted(weights.tensors.items()):
        layer, slot = _resolve(name, table, weights.tensors, path)
        by_layer.setdefault(layer, {})[slot] = (name, value)
    model_layers = {layer.name: layer for layer in model.layers if layer.weights}
    for layer_name, given in by_layer.items():
        if layer_name not in model_layers:
            name = next(iter(given.values()))[0]
            raise WeightImportError(
                f"{path}: tensor {name!r} maps to layer {layer_name!r}, which the model inferred from the file lacks"
            )
    official_names = {entry: name for name, entry in table.items()}
    for layer in model_layers.values():
        if layer.name in skip_layers:
            continue
        given = by_layer.get(layer.name, {})
        if isinstance(layer, layers.BatchNormalization):
            values = _batch_norm_values(layer, given, epsilons.get(layer.name, layer.epsilon), official_names, path)
        else:
            values = []
            for variable in layer.weights:
                if variable.name not in given:
                    expected = official_names.get((layer.name, variable.name), "(none in the table)")
                    raise WeightImportError(
                        f"{path}: no tensor {expected!r} for the {variable.name} of layer {layer.name!r}"
                    )
                values.append(given[variable.name])
        for variable, (name, value) in zip(layer.weights, values, strict=True):
            if tuple(value.shape) != tuple(variable.shape):
                raise WeightImportError(
                    f"{path}: tensor {name!r} has shape {tuple(value.shape)}, but the {variable.name} of layer "
                    f"{layer.name!r} has {tuple(variable.shape)}"
                )
        layer.set_weights([value for _, value in values])


def _resolve(name: str, table: dict[str, tuple[str, str]], tensors: dict[str, np.ndarray], path: str):
    entry = table.get(name)
    if entry is None and name.endswith("/biases"):
        # a conv whose batch norm was folded into it: its bias is the batch norm's whole effect
        beta = f"{name[: -len('/biases')]}/BatchNorm/beta"
        if beta in table and beta not in tensors:
            entry = (table[beta][0], FOLDED_BIAS)
    if entry is None:
        raise WeightImportError(
            f"{path}: tensor {name!r} {tuple(tensors[name].shape)} maps to no layer (not in the official-name tables)"
        )
    return entry


def _batch_norm_values(layer, given, official_epsilon: float, official_names, path: str):
    """[gamma, beta, moving_mean, moving_variance] as (official name, value) pairs for our BN `layer`.

    Folded: gamma 1, beta the conv's bias, mean 0 and variance 1 - epsilon, an identity on the conv's output.
    Otherwise the official statistics, the variance shifted by the difference of the epsilons so that
    sqrt(variance + epsilon) is the official one; a missing gamma (slim's `scale=False`) is 1."""
    width = int(layer.weights[0].shape[0])
    if FOLDED_BIAS in given:
        name, bias = given[FOLDED_BIAS]
        return [
            (name, np.ones(width, np.float32)),
            (name, bias),
            (name, np.zeros(width, np.float32)),
            (name, np.full(width, 1.0 - layer.epsilon, np.float32)),
        ]
    values = []
    for slot in ("gamma", "beta", "moving_mean", "moving_variance"):
        if slot in given:
            values.append(given[slot])
        elif slot == "gamma":
            values.append((official_names.get((layer.name, slot), slot), np.ones(width, np.float32)))
        else:
            expected = official_names.get((layer.name, slot), "(none in the table)")
            raise WeightImportError(f"{path}: no tensor {expected!r} for the {slot} of layer {layer.name!r}")
    name, variance = values[3]
    values[3] = (name, np.maximum(variance + official_epsilon - layer.epsilon, 0.0).astype(np.float32))
    return values
