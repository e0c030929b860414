"""`keras-deeplab evaluate`: full-resolution mIoU of a trained model on a dataset split.

Every image is predicted at its own size (no crop, no resize of the mask), with class probabilities averaged
over the requested scales and horizontal flips (`inference.class_probabilities`, the v3 paper's protocol).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from keras_deeplab import constants


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
    import pipelines
    from keras_deeplab.inference import class_probabilities
    from keras_deeplab.metrics import MeanIoU

    num_classes = int(model.output.shape[-1])
    if source.num_classes != num_classes:
        raise ValueError(f"{source.name}: the dataset has {source.num_classes} classes, the model {num_classes}")
    total = len(source) if max_examples is None else min(len(source), max_examples)
    if total == 0:
        raise ValueError(f"{source.name}: the dataset has no examples to evaluate")
    scales = tuple(float(scale) for scale in scales)

    def predict_logits(images):
        return model(images, training=False)

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)], reduce_retracing=True)
    def predict_class_ids(images):
        probabilities = class_probabilities(predict_logits, images, scales=scales, flip=flip)
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)

    metric = MeanIoU(num_classes)
    bar = keras.utils.Progbar(total, unit_name="image") if progress else None
    examples = 0
    for image, mask, _ in pipelines.evaluation_dataset(source).take(total):
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
    """Open the split, load the model (a .keras file or a run directory), and `evaluate_model`."""
    import pipelines
    from keras_deeplab.training import load_trained_model

    source = pipelines.open_source(format, root, split, **source_options)
    model = load_trained_model(model_path, output_stride)
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


def _scales(text: str) -> list[float]:
    try:
        scales = [float(value) for value in text.split(",") if value.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error
    if not scales or min(scales) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive scales, got {text!r}")
    return scales


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="mIoU of a trained model on a dataset split, full resolution")
    parser.add_argument("--model", required=True, help="a .keras model file or a training run directory")
    parser.add_argument("--format", required=True, help="dataset format, e.g. voc, cityscapes, ade20k, synthetic")
    parser.add_argument("--root", default=None, help="dataset folder (not needed for synthetic)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--output-stride", type=int, default=None, choices=constants.OUTPUT_STRIDES)
    parser.add_argument("--scales", type=_scales, default=[1.0], help="e.g. 0.5,0.75,1.0,1.25,1.5,1.75")
    parser.add_argument("--flip", action="store_true", help="average with the left-right flipped image")
    parser.add_argument("--max-examples", type=int, default=None, help="only the first N examples")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = evaluate(
        args.model,
        args.format,
        args.root,
        args.split,
        output_stride=args.output_stride,
        scales=args.scales,
        flip=args.flip,
        max_examples=args.max_examples,
        progress=not args.json,
    )
    print(json.dumps(results) if args.json else format_table(results))
    return 0
