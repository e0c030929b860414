"""keras-deeplab: DeepLabv3 and DeepLabv3+ semantic segmentation in Keras 3.

The names below are imported from their modules on first use: `keras_deeplab.build_model` loads the model
code only, never training, evaluation, `pipelines` or `serving`.

Keras finds the classes of a saved model by their registered names ("keras_deeplab>DeepLab"), so Keras' own
`keras.models.load_model` needs them registered. Registering means importing the model code, which needs Keras
(and TensorFlow) and so cannot happen at `import keras_deeplab` (the command line's `--help` loads neither): the
model module is imported as soon as Keras is (at once when it already is), wherever Keras' import happens.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator

from keras_deeplab.lazy import initializing, lazy_exports, wrap_imports

__version__ = "0.1.0"

_EXPORTS = {
    "DeepLab": "keras_deeplab.model",
    "build_model": "keras_deeplab.model",
    "load_model": "keras_deeplab.loading",
    "from_preset": "keras_deeplab.loading",
    "import_weights": "keras_deeplab.importing",
    "dense_crf": "keras_deeplab.crf",
    "MeanIoU": "keras_deeplab.metrics",
    "SegmentationLoss": "keras_deeplab.losses",
    "segmentation_loss": "keras_deeplab.losses",
    "WeightFileError": "keras_deeplab.weights",
    "load_backbone_weights": "keras_deeplab.weights",
    "load_recipe": "keras_deeplab.recipe",
    "evaluate": "keras_deeplab.evaluation",
    "evaluate_model": "keras_deeplab.evaluation",
    "train": "keras_deeplab.training",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

# The module whose import registers every class a saved model names (DeepLab and, through it, keras_deeplab.layers).
_REGISTERING_MODULE = "keras_deeplab.model"


@contextlib.contextmanager
def _register_after(name: str) -> Iterator[None]:
    """Around the first import of Keras and of each keras_deeplab module: once Keras is whole and none of the
    project's modules is half-imported (the import under way may be the one that reaches the model module), import
    the model module."""
    yield
    ours = [module for module in sys.modules if module.startswith(f"{__name__}.") and module != name]
    keras_whole = name == "keras" or ("keras" in sys.modules and not initializing("keras"))
    if keras_whole and _REGISTERING_MODULE not in sys.modules and not any(initializing(m) for m in ours):
        importlib.import_module(_REGISTERING_MODULE)


if "keras" in sys.modules:
    importlib.import_module(_REGISTERING_MODULE)
else:
    wrap_imports(lambda name: name == "keras" or name.startswith(f"{__name__}."), _register_after)
