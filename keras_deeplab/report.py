"""`evaluate --report DIR`: an evaluation as pictures, tied together by DIR/index.html.

- `per_class_iou.png`: a bar per class (in the class's colour), the mIoU in the title;
- `confusion.png`: the confusion matrix normalised by rows (each true class's pixels: where they went);
- `worst_N_<name>.png`: the images whose own mIoU is lowest, as photo / ground truth / prediction side by side;
- `index.html`: the scores, the figures, and a per-class table (plain HTML, no script, opens from the disk).

`ReportCollector.add` takes each evaluated image as it goes (its confusion matrix is added up; only the worst few
images are kept), `write_report` draws the figures with matplotlib (the `report` extra) and writes the page.
"""

from __future__ import annotations

import heapq
import html
import itertools
import os
import re
from typing import Any

import numpy as np

from keras_deeplab.confusion import confusion_matrix, scores
from keras_deeplab.descriptors import DatasetDescriptor
from keras_deeplab.files import atomic_path, make_folder
from keras_deeplab.visualize import colorize

DEFAULT_WORST = 4
DPI = 100
ANNOTATE_UP_TO = 25  # classes: above this many, the confusion matrix has no numbers in its cells


def require_matplotlib() -> None:
    """ValueError with the install line when matplotlib (the `report` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ValueError("evaluate --report draws with matplotlib: pip install 'keras-deeplab[report]'") from error


class ReportCollector:
    """What the report shows, gathered image by image: the confusion matrix of every counted pixel, and the
    `worst` images by their own mIoU (the classes in their truth or prediction), lowest first."""

    def __init__(self, descriptor: DatasetDescriptor, worst: int = DEFAULT_WORST) -> None:
        self.descriptor = descriptor
        self.worst = worst
        self.confusion = np.zeros((descriptor.num_classes, descriptor.num_classes), np.int64)
        self.images = 0
        self._kept: list[tuple[float, int, str, np.ndarray, np.ndarray, np.ndarray]] = []  # a heap, best on top
        self._order = itertools.count()

    def add(self, name: str, image: np.ndarray, mask: np.ndarray, prediction: np.ndarray) -> None:
        """One evaluated example: `image` uint8 (H, W, 3), `mask` its labels (H, W), `prediction` class ids."""
        confusion = confusion_matrix(mask, prediction, self.descriptor.num_classes, self.descriptor.ignore_label)
        self.confusion += confusion
        self.images += 1
        entry = (-scores(confusion)["miou"], -next(self._order), name, image, mask, prediction)
        if len(self._kept) < self.worst:
            heapq.heappush(self._kept, entry)
        elif self.worst and entry > self._kept[0]:
            heapq.heapreplace(self._kept, entry)

    def worst_images(self) -> list[dict[str, Any]]:
        """[{'name', 'miou', 'image', 'mask', 'prediction'}] of the worst images, lowest mIoU first (ties: the
        earlier image first)."""
        kept = sorted(self._kept, reverse=True)
        return [
            {"name": name, "miou": -negative, "image": image, "mask": mask, "prediction": prediction}
            for negative, _, name, image, mask, prediction in kept
        ]


def write_report(out_dir: str | os.PathLike, collector: ReportCollector, title: str) -> str:
    """Draw the figures and write `index.html` into `out_dir` (made if needed); return the page's path."""
    require_matplotlib()
    out_dir = make_folder(out_dir)
    descriptor = collector.descriptor
    scored = scores(collector.confusion)
    _save(_iou_figure(scored, descriptor), os.path.join(out_dir, "per_class_iou.png"))
    _save(_confusion_figure(collector.confusion, descriptor), os.path.join(out_dir, "confusion.png"))
    worst = collector.worst_images()
    for rank, example in enumerate(worst, start=1):
        example["file"] = f"worst_{rank}_{_file_part(example['name'])}.png"
        _save(_side_by_side(example, descriptor), os.path.join(out_dir, example["file"]))
    path = os.path.join(out_dir, "index.html")
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        file.write(_page(title, scored, collector, worst))
    return path


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "image"


def _save(figure, path: str) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)


def _rgb(color) -> tuple[float, float, float]:
    return tuple(value / 255 for value in color)


def _iou_figure(scored: dict[str, Any], descriptor: DatasetDescriptor):
    from matplotlib.figure import Figure

    names = descriptor.class_names
    values = [0.0 if iou is None else 100 * iou for iou in scored["per_class_iou"]]
    figure = Figure(figsize=(7, 1 + 0.28 * len(names)), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(names))
    axes.barh(positions, values, color=[_rgb(color) for color in descriptor.palette], edgecolor="black", linewidth=0.5)
    for position, iou in zip(positions, scored["per_class_iou"], strict=True):
        label = "absent" if iou is None else f"{100 * iou:.1f}"
        axes.text(100 * (iou or 0) + 1, position, label, va="center", fontsize=8)  # past the bar: room up to 100
    axes.set_yticks(positions, names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 112)
    axes.set_xticks(range(0, 101, 20))
    axes.set_xlabel("IoU (%)")
    axes.set_title(f"Per-class IoU; mIoU {100 * scored['miou']:.2f}%")
    return figure


def _confusion_figure(confusion: np.ndarray, descriptor: DatasetDescriptor):
    from matplotlib.figure import Figure

    totals = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    count = len(descriptor.class_names)
    side = min(max(4.0, 0.35 * count + 2), 30.0)
    figure = Figure(figsize=(side + 1, side), layout="constrained")
    axes = figure.add_subplot()
    picture = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(count)
    axes.set_xticks(ticks, descriptor.class_names, rotation=90, fontsize=8)
    axes.set_yticks(ticks, descriptor.class_names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix, each row normalised (share of the true class's pixels)")
    if count <= ANNOTATE_UP_TO:
        for row, column in zip(*np.nonzero(normalised >= 0.005), strict=True):
            value = normalised[row, column]
            color = "white" if value > 0.5 else "black"
            axes.text(column, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=6, color=color)
    figure.colorbar(picture, ax=axes, shrink=0.8)
    return figure


def _side_by_side(example: dict[str, Any], descriptor: DatasetDescriptor):
    from matplotlib.figure import Figure

    height, width = example["mask"].shape
    figure = Figure(figsize=(3 * 3.6, 3.6 * height / width + 0.5), layout="constrained")
    panels = (
        ("photo", example["image"]),
        ("ground truth", colorize(example["mask"], descriptor)),
        (f"prediction (mIoU {100 * example['miou']:.1f}%)", colorize(example["prediction"], descriptor)),
    )
    for index, (caption, picture) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 3, index)
        axes.imshow(picture, interpolation="nearest")
        axes.set_title(caption, fontsize=10)
        axes.set_axis_off()
    figure.suptitle(example["name"], fontsize=11)
    return figure


def _page(title: str, scored: dict[str, Any], collector: ReportCollector, worst: list[dict[str, Any]]) -> str:
    descriptor = collector.descriptor
    escape = html.escape
    rows = []
    truth_pixels = collector.confusion.sum(axis=1)
    for index, (name, iou) in enumerate(zip(descriptor.class_names, scored["per_class_iou"], strict=True)):
        color = "#{:02x}{:02x}{:02x}".format(*descriptor.palette[index])
        value = "absent" if iou is None else f"{100 * iou:.2f}"
        rows.append(
            f'<tr><td><span class="swatch" style="background:{color}"></span> {escape(name)}</td>'
            f"<td>{value}</td><td>{int(truth_pixels[index]):,}</td></tr>"
        )
    worst_html = "\n".join(
        f'<figure><img src="{escape(example["file"])}" alt="{escape(example["name"])}: photo, ground truth, '
        f'prediction"><figcaption>{escape(example["name"])}: mIoU {100 * example["miou"]:.1f}%</figcaption></figure>'
        for example in worst
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>
  body {{ font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }}
  img {{ max-width: 100%; border: 1px solid #ddd; }}
  table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; text-align: right; }}
  td:first-child, th:first-child {{ text-align: left; }}
  .swatch {{ display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #444; }}
  figure {{ margin: 1em 0; }}
</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p>mIoU <b>{100 * scored["miou"]:.2f}%</b>, pixel accuracy <b>{100 * scored["pixel_accuracy"]:.2f}%</b>
over {collector.images} images ({descriptor.name}, {descriptor.num_classes} classes; pixels labelled
{descriptor.ignore_label} not counted).</p>
<h2>Per-class IoU</h2>
<img src="per_class_iou.png" alt="per-class IoU bar chart">
<h2>Confusion matrix</h2>
<p>Row: the true class; column: the predicted one; each row shows where that class's pixels went.</p>
<img src="confusion.png" alt="row-normalised confusion matrix">
<h2>The {len(worst)} worst images</h2>
<p>Lowest mIoU of the image alone (over the classes in its truth or prediction): photo, ground truth,
prediction.</p>
{worst_html}
<h2>Per class</h2>
<table>
<tr><th>class</th><th>IoU (%)</th><th>true pixels</th></tr>
{chr(10).join(rows)}
</table>
</body>
</html>
"""
