"""ImageNet initialisation from a local keras.applications weight file (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection

import h5py
import keras
import numpy as np


class WeightFileError(ValueError):
    """A weight file does not fit the model: names the file and the first layer that does not match."""


def read_legacy_h5_weights(path: str | os.PathLike, only: Collection[str] | None = None) -> dict[str, list]:
    """Layer name -> list of arrays, in the layer's weight order, from a Keras HDF5 weight file.

    Reads the layout of keras.applications' published files (`layer_names` at the root, each layer a group
    with `weight_names`) and of `model.save("x.h5")` (the same under `model_weights`). `only`: read just the
    layers of these names that the file has (the others are not read from disk).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weight file")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise WeightFileError(f"{path}: not an HDF5 file ({error})") from error
    with handle:
        group = handle.get("model_weights", handle)
        if "layer_names" not in group.attrs:
            raise WeightFileError(
                f"{path}: no 'layer_names' attribute; expected a Keras HDF5 weight file such as "
                "keras.applications' resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"
            )
        weights = {}
        for layer_name in _strings(group.attrs["layer_names"]):
            if only is not None and layer_name not in only:
                continue
            layer_group = group[layer_name]
            names = _strings(layer_group.attrs.get("weight_names", []))
            weights[layer_name] = [layer_group[name][()] for name in names]
        return weights


def load_backbone_weights(
    model: keras.Model, path: str | os.PathLike, unused_layers: Collection[str] = ()
) -> list[str]:
    """Load a keras.applications weight file into the backbone layers of `model`, by layer name.

    Every weighted layer of the file except `unused_layers` (layers of the file the backbone leaves out on
    purpose, such as MobileNetV2's final `Conv_1`) must exist in `model` with weights of the same shapes, or
    WeightFileError names the first one that does not. Returns the names of the layers loaded.
    """
    file_weights = {
        name: arrays for name, arrays in read_legacy_h5_weights(path).items() if arrays and name not in unused_layers
    }
    if not file_weights:
        raise WeightFileError(f"{path}: the file holds no weights")
    hint = "is the file for another backbone or depth, or the model built with another stem?"
    return copy_layer_weights(model, file_weights, os.fspath(path), missing_hint=hint)


def weighted_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Layer name -> layer, for every layer of `model` that has weights, the layers of nested sub-models (the
    shared "scale_network" of a model with multi_scale_inputs) in place of the sub-model itself."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(weighted_layers(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def layer_weights(model: keras.Model) -> dict[str, list]:
    """Layer name -> its weights (arrays), for every layer of `model` that has weights (`weighted_layers`)."""
    return {name: layer.get_weights() for name, layer in weighted_layers(model).items()}


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of every weight of `model` (its dtype, shape and bytes, in the model's order): equal on two
    models exactly when they hold the same numbers in the same places (the workers of a cluster after training,
    a saved model and the one it was saved from)."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        array = np.ascontiguousarray(weight)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def copy_layer_weights(
    model: keras.Model,
    weights: dict[str, list],
    where: str,
    *,
    every_model_layer: bool = False,
    fresh: Collection[str] = (),
    missing_hint: str = "",
    error: type[WeightFileError] = WeightFileError,
) -> list[str]:
    """Set the layers of `model` named in `weights` (layer name -> arrays), after checking every name and shape.

    With `every_model_layer`, each weighted layer of `model` must be in `weights` too, except the `fresh` ones
    (layers that keep their initial weights on purpose, such as the logits of another number of classes).
    Raises `error` naming `where` and the first layer missing on either side or differing in shape; nothing is set
    then. Returns the names of the layers set.
    """
    model_layers = weighted_layers(model)
    for name in weights:
        if name not in model_layers:
            detail = f" ({missing_hint})" if missing_hint else ""
            raise error(
                f"{where}: layer '{name}' of the file has no layer of that name in model '{model.name}'{detail}"
            )
    if every_model_layer:
        for name in model_layers:
            if name not in weights and name not in fresh:
                raise error(f"{where}: the model's layer '{name}' has no layer of that name in {where}")
    for name, arrays in weights.items():
        expected = [tuple(variable.shape) for variable in model_layers[name].weights]
        found = [tuple(array.shape) for array in arrays]
        if expected != found:
            raise error(
                f"{where}: layer '{name}' has weights of shapes {found} there, but the model expects {expected}"
            )
    for name, arrays in weights.items():
        model_layers[name].set_weights(arrays)
    return list(weights)


def _strings(values) -> list[str]:
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]
