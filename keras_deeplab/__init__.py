"""keras-deeplab: DeepLabv3 and DeepLabv3+ semantic segmentation in Keras 3."""

from keras_deeplab.evaluation import evaluate, evaluate_model
from keras_deeplab.losses import SegmentationLoss, segmentation_loss
from keras_deeplab.metrics import MeanIoU
from keras_deeplab.model import DeepLab, build_model
from keras_deeplab.recipes import load_recipe
from keras_deeplab.training import train
from keras_deeplab.weights import WeightFileError, load_backbone_weights

__version__ = "0.1.0"
__all__ = [
    "DeepLab",
    "MeanIoU",
    "SegmentationLoss",
    "WeightFileError",
    "build_model",
    "evaluate",
    "evaluate_model",
    "load_backbone_weights",
    "load_recipe",
    "segmentation_loss",
    "train",
]
