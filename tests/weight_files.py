"""Test helper: write a model's weights in the legacy Keras HDF5 layout that keras.applications publishes.

The published `*_notop.h5` files hold a root attribute `layer_names` and one group per layer with an attribute
`weight_names` naming its datasets ("conv1_conv/kernel:0", ...), in the layer's weight order.
"""

import h5py
import keras
import numpy as np


def randomize_batch_norm(model: keras.Model, seed: int = 0) -> None:
    """Give every BatchNormalization layer random gamma, beta, moving mean and variance (not the identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (w.shape for w in layer.get_weights())
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma).astype("float32"),
                    rng.normal(0.0, 0.1, beta).astype("float32"),
                    rng.normal(0.0, 0.1, mean).astype("float32"),
                    rng.uniform(0.5, 2.0, variance).astype("float32"),
                ]
            )


def write_legacy_h5_weights(model: keras.Model, path) -> None:
    """Write `model`'s weights as keras.applications' published weight files are laid out."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode("utf8") for layer in model.layers]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = keras.__version__.encode("utf8")
        for layer in model.layers:
            group = handle.create_group(layer.name)
            names = [f"{layer.name}/{variable.name}:0" for variable in layer.weights]
            group.attrs["weight_names"] = [name.encode("utf8") for name in names]
            for name, value in zip(names, layer.get_weights(), strict=True):
                group.create_dataset(name, data=value)
