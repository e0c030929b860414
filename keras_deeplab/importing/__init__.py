"""Importing Google's published DeepLab weights (TF1 checkpoints, model-zoo tarballs, frozen graphs, TFLite).

One reader per source kind turns a file into {official variable name: numpy array} (`sources.SourceWeights`);
`mapping` infers the architecture from those tensors, builds the model and loads them by the official-name
tables kept beside the layers they fill (`backbones.<name>.official_weight_names`, `heads.official_weight_names`).
"""

from keras_deeplab.importing.mapping import import_weights
from keras_deeplab.importing.read import read_source
from keras_deeplab.importing.sources import SourceWeights, WeightImportError

__all__ = ["SourceWeights", "WeightImportError", "import_weights", "read_source"]
