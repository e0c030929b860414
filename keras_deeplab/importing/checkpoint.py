"""TF1 DeepLab checkpoints (`model.ckpt-N` prefix or its `.index`): the weight variables by their names."""

from __future__ import annotations

import numpy as np

from keras_deeplab.importing.sources import SourceWeights, WeightImportError, is_variable_name


def checkpoint_prefix(path: str) -> str:
    """`model.ckpt-N` for `model.ckpt-N` or `model.ckpt-N.index`."""
    return path[: -len(".index")] if path.endswith(".index") else path


def read(path: str) -> SourceWeights:
    """Every weight variable of the checkpoint (optimizer slots such as `.../Momentum` and `global_step` left
    out), as float32."""
    import tensorflow as tf

    prefix = checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError) as error:
        raise WeightImportError(f"{path}: not a readable TF checkpoint ({error})") from error
    try:
        tensors = {
            name: np.asarray(reader.get_tensor(name), np.float32)
            for name, dtype in names.items()
            if is_variable_name(name) and dtype.is_floating
        }
    except (tf.errors.OpError, IndexError, ValueError) as error:  # IndexError: a data file cut short
        message = error.message if isinstance(error, tf.errors.OpError) else str(error)
        raise WeightImportError(
            f"{path}: its data files ({prefix}.data-*) are missing or damaged; expected those written with the "
            f"index ({message})"
        ) from error
    if not tensors:
        raise WeightImportError(f"{path}: the checkpoint holds no weight variables")
    return SourceWeights(path=path, kind="checkpoint", tensors=tensors)
