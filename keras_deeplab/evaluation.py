"""Full-resolution mIoU of a trained model on a dataset split (`keras-deeplab evaluate`).

Every image is predicted at its own size (no crop, no resize of the mask), with class probabilities averaged
over the requested scales and horizontal flips (`inference.class_probabilities`, the v3 paper's protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from keras_deeplab.inference import class_probabilities
from keras_deeplab.loading import load_model
from keras_deeplab.metrics import MeanIoU
from keras_deeplab.scales import check_scales
from pipelines.datasets import evaluation_dataset
from pipelines.formats import open_source


def evaluate_model(
    model: keras.Model,
    source,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    max_examples: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """mIoU of `model` on every example of `source` (a pipelines source), at full resolution.

    Returns {'miou', 'pixel_accuracy', 'per_class_iou' (None for a class absent from truth and prediction),
    'class_names', 'examples', 'scales', 'flip', 'output_stride'}. Raises ValueError before predicting
    anything when the source is empty or its classes differ from the model's.
    """
    num_classes = int(model.output.shape[-1])
    if source.num_classes != num_classes:
        raise ValueError(f"{source.name}: the dataset has {source.num_classes} classes, the model {num_classes}")
    total = len(source) if max_examples is None else min(len(source), max_examples)
    if total == 0:
        raise ValueError(f"{source.name}: the dataset has no examples to evaluate")
    scales = check_scales(scales)

    def predict_logits(images):
        return model(images, training=False)

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)], reduce_retracing=True)
    def predict_class_ids(images):
        probabilities = class_probabilities(predict_logits, images, scales=scales, flip=flip)
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)

    metric = MeanIoU(num_classes)
    bar = keras.utils.Progbar(total, unit_name="image") if progress else None
    examples = 0
    for image, mask, _ in evaluation_dataset(source).take(total):
        metric.update_state(mask, predict_class_ids(image))
        examples += 1
        if bar is not None:
            bar.update(examples)
    return {
        **metric.results(),
        "class_names": list(source.class_names),
        "examples": examples,
        "scales": list(scales),
        "flip": flip,
        "output_stride": model.build_config["output_stride"],
    }


def evaluate(
    model_path: str,
    format: str,
    root: str | None,
    split: str,
    *,
    output_stride: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    max_examples: int | None = None,
    progress: bool = False,
    **source_options: Any,
) -> dict[str, Any]:
    """Open the split, load the model (a .keras file or a run folder, `load_model`), and `evaluate_model`."""
    source = open_source(format, root, split, **source_options)
    model = load_model(model_path, output_stride)
    return evaluate_model(model, source, scales=scales, flip=flip, max_examples=max_examples, progress=progress)


def format_table(results: dict[str, Any]) -> str:
    """The per-class IoU table, then mIoU and pixel accuracy, as printed by `keras-deeplab evaluate`."""
    width = max(len(name) for name in results["class_names"])
    lines = [f"{'class':<{width}}  IoU"]
    for name, iou in zip(results["class_names"], results["per_class_iou"], strict=True):
        lines.append(f"{name:<{width}}  {'-' if iou is None else f'{100 * iou:.2f}'}")
    lines.append(f"{'mIoU':<{width}}  {100 * results['miou']:.2f}")
    lines.append(f"{'pixel accuracy':<{width}}  {100 * results['pixel_accuracy']:.2f}")
    scales = ",".join(f"{scale:g}" for scale in results["scales"])
    lines.append(
        f"{results['examples']} images, output stride {results['output_stride']}, scales {scales}"
        f"{', flipped too' if results['flip'] else ''}"
    )
    return "\n".join(lines)
