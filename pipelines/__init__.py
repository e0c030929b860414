"""Input pipelines: dataset readers, validation, TFRecord conversion and the tf.data training/evaluation streams.

source = open_source("voc", "/data/VOC2012", "train")        # or "synthetic", "tfrecord", ...
batches = training_dataset(source, crop_size=513, batch_size=8)
for image, mask, name in evaluation_dataset(open_source("voc", "/data/VOC2012", "val")): ...
"""

from __future__ import annotations

from pipelines.check import check_source
from pipelines.datasets import evaluation_dataset, training_dataset
from pipelines.errors import DataError, SkippedExamples
from pipelines.formats import FORMATS, open_source
from pipelines.source import ArraySource, FilePairSource, SegmentationSource
from pipelines.synthetic import synthetic_source
from pipelines.tfrecord import TFRecordSource, write_tfrecords

__all__ = [
    "FORMATS",
    "ArraySource",
    "DataError",
    "FilePairSource",
    "SegmentationSource",
    "SkippedExamples",
    "TFRecordSource",
    "check_source",
    "evaluation_dataset",
    "open_source",
    "synthetic_source",
    "training_dataset",
    "write_tfrecords",
]
