"""ImageNet initialisation from a local keras.applications weight file (nothing is downloaded)."""

from __future__ import annotations

import os
from collections.abc import Collection

import h5py
import keras


class WeightFileError(ValueError):
    """A weight file does not fit the model: names the file and the first layer that does not match."""


def read_legacy_h5_weights(path: str | os.PathLike) -> dict[str, list]:
    """Layer name -> list of arrays, in the layer's weight order, from a Keras HDF5 weight file.

    Reads the layout of keras.applications' published files (`layer_names` at the root, each layer a group
    with `weight_names`) and of `model.save("x.h5")` (the same under `model_weights`).
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
    model_layers = {layer.name: layer for layer in model.layers}
    updates = []
    for layer_name, arrays in file_weights.items():
        layer = model_layers.get(layer_name)
        if layer is None:
            raise WeightFileError(
                f"{path}: layer '{layer_name}' of the file has no layer of that name in model "
                f"'{model.name}' (is the file for another backbone or depth, or the model built with another stem?)"
            )
        expected = [tuple(variable.shape) for variable in layer.weights]
        found = [tuple(array.shape) for array in arrays]
        if expected != found:
            raise WeightFileError(
                f"{path}: layer '{layer_name}' has weights of shapes {found} in the file, "
                f"but the model expects {expected}"
            )
        updates.append((layer, arrays))
    for layer, arrays in updates:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in updates]


def _strings(values) -> list[str]:
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]
