"""keras-deeplab: DeepLabv3 and DeepLabv3+ semantic segmentation in Keras 3."""

from keras_deeplab.model import DeepLab, build_model
from keras_deeplab.weights import WeightFileError, load_backbone_weights

__version__ = "0.1.0"
__all__ = ["DeepLab", "WeightFileError", "build_model", "load_backbone_weights"]
