"""keras-deeplab: DeepLabv3 and DeepLabv3+ semantic segmentation in Keras 3.

The names below are imported from their modules on first use: `keras_deeplab.build_model` loads the model
code only, never training, evaluation, `pipelines` or `serving`.
"""

from __future__ import annotations

from keras_deeplab.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "DeepLab": "keras_deeplab.model",
    "build_model": "keras_deeplab.model",
    "load_model": "keras_deeplab.loading",
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
