"""Input pipelines: dataset readers, validation, TFRecord conversion and the tf.data training/evaluation streams.

source = open_source("voc", "/data/VOC2012", "train")        # or "synthetic", "tfrecord", ...
batches = training_dataset(source, crop_size=513, batch_size=8)
for image, mask, name in evaluation_dataset(open_source("voc", "/data/VOC2012", "val")): ...

The names below are imported from their modules on first use, so `import pipelines` (or of one of its
modules) loads TensorFlow only when a module that needs it is used.
"""

from __future__ import annotations

from keras_deeplab.lazy import lazy_exports

_EXPORTS = {
    "FORMATS": "pipelines.formats",
    "open_source": "pipelines.formats",
    "check_source": "pipelines.check",
    "evaluation_dataset": "pipelines.datasets",
    "training_dataset": "pipelines.datasets",
    "DataError": "pipelines.errors",
    "SkippedExamples": "pipelines.errors",
    "ArraySource": "pipelines.source",
    "FilePairSource": "pipelines.source",
    "SegmentationSource": "pipelines.source",
    "synthetic_source": "pipelines.synthetic",
    "TFRecordSource": "pipelines.tfrecord",
    "write_tfrecords": "pipelines.tfrecord",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
