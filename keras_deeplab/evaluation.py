"""Full-resolution mIoU of a trained model on a dataset split (`keras-deeplab evaluate`).

Every image is predicted at its own size (no crop, no resize of the mask), with class probabilities averaged
over the requested scales and horizontal flips (`inference.class_probabilities`, the v3 paper's protocol).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_deeplab import constants
from keras_deeplab.crf import dense_crf
from keras_deeplab.inference import class_probabilities
from keras_deeplab.layers import on_tensorflow
from keras_deeplab.loading import load_model
from keras_deeplab.metrics import MeanIoU
from keras_deeplab.report import ReportCollector, require_matplotlib, write_report
from keras_deeplab.scales import check_scales
from keras_deeplab.trimap import TrimapMeanIoU
from pipelines.datasets import evaluation_dataset
from pipelines.formats import open_source
from pipelines.source import data_errors


def evaluate_model(
    model: keras.Model,
    source,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fit_to: int | None = None,
    max_examples: int | None = None,
    progress: bool = False,
    crf: Mapping[str, float] | None = None,
    trimap_widths: Sequence[int] = (),
    report: ReportCollector | None = None,
) -> dict[str, Any]:
    """mIoU of `model` on every example of `source` (a pipelines source), at full resolution (or with `fit_to`,
    the official export's input handling: `inference.class_probabilities`).

    `model`: a Keras DeepLab, or a converted model of one input size (serving's TFLite or engine models: any
    object with `predict_logits`, `num_classes` and `build_config`), run eagerly.

    Returns {'miou', 'pixel_accuracy', 'per_class_iou' (None for a class absent from truth and prediction),
    'class_names', 'examples', 'scales', 'flip', 'fit_to', 'output_stride'}. With `trimap_widths`, also 'trimap':
    {width: {'miou', 'pixel_accuracy', 'per_class_iou', 'pixels'}} within that many pixels of the label
    boundaries. With `crf` (keyword arguments of `crf.dense_crf`; {} for its defaults), the same again after the
    fully connected CRF under 'crf', with its 'parameters' and 'seconds_per_image'. Raises ValueError before
    predicting anything when the source is empty or its classes differ from the model's. `report` is given
    each example's name, image, labels and the model's class map (before any CRF).
    """
    num_classes = _check_source(model, source)
    variants = ["model"] if crf is None else ["model", "crf"]
    metrics = {variant: MeanIoU(num_classes) for variant in variants}
    bands = {variant: TrimapMeanIoU(num_classes, trimap_widths) for variant in variants} if trimap_widths else {}
    crf_seconds, examples = 0.0, 0
    for image, mask, probabilities, name in predictions(model, source, scales, flip, max_examples, progress, fit_to):
        class_ids = {"model": probabilities.argmax(-1)}
        if report is not None:
            report.add(name, image, mask, class_ids["model"])
        if crf is not None:
            started = time.perf_counter()
            class_ids["crf"] = dense_crf(image, probabilities, **crf).argmax(-1)
            crf_seconds += time.perf_counter() - started
        for variant in variants:
            metrics[variant].update_state(mask[None], class_ids[variant][None])
            if bands:
                bands[variant].update(mask, class_ids[variant])
        examples += 1
    results = {variant: metrics[variant].results() for variant in variants}
    for variant in bands:
        results[variant]["trimap"] = {width: bands[variant].results()[width] for width in bands[variant].widths}
    if crf is not None:
        results["crf"].update(parameters=dict(crf), seconds_per_image=crf_seconds / examples)
    return {
        **results["model"],
        **({"crf": results["crf"]} if crf is not None else {}),
        "class_names": list(source.class_names),
        "examples": examples,
        "scales": list(check_scales(scales)),
        "flip": flip,
        "fit_to": fit_to,
        "output_stride": (model.build_config or {}).get("output_stride"),
    }


def crf_grid_search(
    model: keras.Model,
    source,
    grid: Mapping[str, Sequence[float]],
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fit_to: int | None = None,
    max_examples: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The CRF's parameters searched on a validation split, as the papers did: every combination of `grid`
    ({dense_crf keyword: values}, the others at their defaults) scored by mIoU on `source`.

    The network runs once per image (its class probabilities are kept in memory: H x W x classes floats per
    image); the CRF runs once per image and combination. Returns [{'parameters', 'miou', 'pixel_accuracy'}],
    best mIoU first.
    """
    num_classes = _check_source(model, source)
    kept = list(predictions(model, source, scales, flip, max_examples, progress, fit_to))
    names = list(grid)
    scored = []
    for values in itertools.product(*(grid[name] for name in names)):
        parameters = dict(zip(names, values, strict=True))
        metric = MeanIoU(num_classes)
        for image, mask, probabilities, _ in kept:
            metric.update_state(mask[None], dense_crf(image, probabilities, **parameters).argmax(-1)[None])
        result = metric.results()
        scored.append({"parameters": parameters, "miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"]})
    return sorted(scored, key=lambda row: -row["miou"])


def predictions(
    model: keras.Model,
    source,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    max_examples: int | None = None,
    progress: bool = False,
    fit_to: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    """(image uint8 (H, W, 3), mask (H, W), class probabilities float32 (H, W, C), name) of each example of
    `source` in order, at full resolution (or fitted to `fit_to` as the official export), averaged over `scales`
    and flips (`inference.class_probabilities`)."""
    scales = check_scales(scales)
    total = len(source) if max_examples is None else min(len(source), max_examples)

    mean_pixel = getattr(model, "mean_pixel", constants.MEAN_PIXEL_RGB)  # what the official code pads with
    if not isinstance(model, keras.Model):  # a converted model of one input size, run outside TensorFlow's graph

        def predict_probabilities(images):
            return class_probabilities(
                model.predict_logits, images, scales=scales, flip=flip, fit_to=fit_to, pad_pixel=mean_pixel
            )

    elif on_tensorflow():

        @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)], reduce_retracing=True)
        def predict_probabilities(images):
            return class_probabilities(
                lambda batch: model(batch, training=False),
                images,
                scales=scales,
                flip=flip,
                fit_to=fit_to,
                pad_pixel=mean_pixel,
            )

    else:  # JAX, PyTorch: Keras' compiled inference step (jit-compiled per image size on JAX)

        def predict_probabilities(images):
            return class_probabilities(
                model.predict_on_batch, images.numpy(), scales=scales, flip=flip, fit_to=fit_to, pad_pixel=mean_pixel
            )

    bar = keras.utils.Progbar(total, unit_name="image") if progress else None
    with data_errors(source):
        for index, (image, mask, name) in enumerate(evaluation_dataset(source).take(total), start=1):
            probabilities = keras.ops.convert_to_numpy(predict_probabilities(image)[0])
            yield image[0].numpy().astype(np.uint8), mask[0].numpy(), probabilities, name.numpy().decode("utf-8")
            if bar is not None:
                bar.update(index)


def _check_source(model: keras.Model, source) -> int:
    """The model's number of classes, after checking that `source` has examples and the same classes."""
    num_classes = int(model.output.shape[-1]) if isinstance(model, keras.Model) else model.num_classes
    if source.num_classes != num_classes:
        raise ValueError(f"{source.name}: the dataset has {source.num_classes} classes, the model {num_classes}")
    if len(source) == 0:
        raise ValueError(f"{source.name}: the dataset has no examples to evaluate")
    return num_classes


def evaluate(
    model_path: str | Any,
    format: str,
    root: str | None,
    split: str,
    *,
    output_stride: int | None = None,
    precision: str = "float32",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fit_to: int | None = None,
    max_examples: int | None = None,
    progress: bool = False,
    crf: Mapping[str, float] | None = None,
    trimap_widths: Sequence[int] = (),
    report_dir: str | None = None,
    **source_options: Any,
) -> dict[str, Any]:
    """Open the split, load the model (`load_model`: a .keras file, a run folder or a published file, at
    `output_stride` and in `precision`; or a model already opened, as `evaluate_model` takes), and
    `evaluate_model`. `report_dir`: also write the report of
    keras_deeplab.report there (its page's path under 'report')."""
    if report_dir is not None:
        require_matplotlib()  # before anything is predicted
    source = open_source(format, root, split, **source_options)
    model = load_model(model_path, output_stride, precision) if isinstance(model_path, str) else model_path
    report = None if report_dir is None else ReportCollector(source.descriptor)
    results = evaluate_model(
        model,
        source,
        scales=scales,
        flip=flip,
        fit_to=fit_to,
        max_examples=max_examples,
        progress=progress,
        crf=crf,
        trimap_widths=trimap_widths,
        report=report,
    )
    if report is not None:
        results["report"] = write_report(
            report_dir,
            report,
            f"{os.path.basename(model_path if isinstance(model_path, str) else model.name)} on {source.name}",
        )
    return results


def format_table(results: dict[str, Any]) -> str:
    """The per-class IoU table (and the same after the CRF), then mIoU, pixel accuracy and the trimap bands, as
    printed by `keras-deeplab evaluate`."""
    columns = [("IoU", results)] + ([("IoU+CRF", results["crf"])] if "crf" in results else [])
    width = max(len(name) for name in [*results["class_names"], "mIoU within 32 px"])
    lines = [f"{'class':<{width}}" + "".join(f"  {title:>7}" for title, _ in columns)]

    def row(label: str, values: list[float | None]) -> str:
        return f"{label:<{width}}" + "".join("        -" if v is None else f"  {100 * v:7.2f}" for v in values)

    for index, name in enumerate(results["class_names"]):
        lines.append(row(name, [column["per_class_iou"][index] for _, column in columns]))
    lines.append(row("mIoU", [column["miou"] for _, column in columns]))
    lines.append(row("pixel accuracy", [column["pixel_accuracy"] for _, column in columns]))
    for band in results.get("trimap", {}):
        lines.append(row(f"mIoU within {band} px", [column["trimap"][band]["miou"] for _, column in columns]))
    scales = ",".join(f"{scale:g}" for scale in results["scales"])
    fitted = "" if results.get("fit_to") is None else f", fitted to {results['fit_to']} as the official export"
    lines.append(
        f"{results['examples']} images, output stride {results['output_stride']}, scales {scales}"
        f"{', flipped too' if results['flip'] else ''}{fitted}"
    )
    if "crf" in results:
        parameters = ", ".join(f"{key} {value:g}" for key, value in results["crf"]["parameters"].items()) or "defaults"
        lines.append(f"CRF ({parameters}): {results['crf']['seconds_per_image']:.2f} s per image")
    return "\n".join(lines)
