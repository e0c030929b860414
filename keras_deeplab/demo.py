"""The demo (`keras-deeplab demo`): the whole flow on the embedded synthetic dataset, from data to REST and
TFLite answers.

Data -> train the `demo` recipe -> evaluate (single scale; multi-scale + flip) -> SavedModel export ->
`keras-deeplab serve` on loopback answering real REST requests from the client -> full-int8 TFLite checked
against Keras -> overlay pictures -> a summary of figures and timings. Re-running resumes or reuses the run.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from keras_deeplab.crf import dense_crf
from keras_deeplab.descriptors import VOC
from keras_deeplab.evaluation import evaluate_model, format_table
from keras_deeplab.files import PUBLISHED_MODEL, PUBLISHED_PHOTO, write_bytes, write_json
from keras_deeplab.importing import import_weights
from keras_deeplab.inference import class_probabilities, predict_class_map
from keras_deeplab.loading import load_model
from keras_deeplab.recipe import load_recipe
from keras_deeplab.training import train
from keras_deeplab.training.inputs import open_sources
from pipelines.check import check_source
from pipelines.formats import open_source
from pipelines.synthetic import baseline_scores
from serving.client import ServingError, predict_class_maps, request_json
from serving.export import export_saved_model, folder_bytes
from serving.predict import write_outputs
from serving.tflite import TFLiteModel, compare_with_keras, convert

MODEL_NAME = "deeplab"
MULTI_SCALES = (0.75, 1.0, 1.25)
SERVER_START_TIMEOUT_S = 120.0
SHARED_VOC_SAMPLE = os.path.join("..", "shared", "data", "voc2012_sample")  # beside the project, when present
TRIMAP_WIDTHS = (4, 8, 16, 32)


class StageClock:
    """Wall time of each named stage of the demo, in seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 1)
        print(f"--- {name}: {self.seconds[name]:.1f} s", flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(base_path: str, port: int, log_path: str) -> Iterator[str]:
    """`keras-deeplab serve base_path` on 127.0.0.1:port in a child process; yields its base URL, stops it."""
    command = [sys.executable, "-m", "keras_deeplab.cli", "serve", base_path, "--port", str(port)]
    with open(log_path, "w", encoding="utf8") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited with status {server.returncode}; see {log_path}")
                try:
                    status = request_json(f"{url}/v1/models/{MODEL_NAME}", timeout_s=2.0)
                    if status["model_version_status"][0]["state"] == "AVAILABLE":
                        break
                except ServingError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the server did not answer within {SERVER_START_TIMEOUT_S:.0f} s; see {log_path}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


def run_demo(out_dir: str = "runs/demo", overrides: tuple[str, ...] = (), num_requests: int = 4) -> dict[str, Any]:
    """Run every stage into `out_dir`; return (and write to `out_dir/summary.json`) the figures and timings."""
    clock = StageClock()
    os.makedirs(out_dir, exist_ok=True)
    recipe = load_recipe("demo", (f"run_dir={os.path.join(out_dir, 'run')}", *overrides))
    summary: dict[str, Any] = {}

    with clock.stage("data: the embedded synthetic dataset"):
        train_source, val_source = open_sources(recipe)
        baselines = baseline_scores(train_source, val_source)
        check = check_source(val_source)
        print(
            f"{len(train_source)} training and {len(val_source)} validation images of {check['image_height_range']}"
            f" px, {train_source.num_classes} classes: {', '.join(train_source.class_names)}"
        )
        print(
            f"naive baselines on validation, mIoU: constant {100 * baselines['constant']:.1f}%, "
            f"colour threshold {100 * baselines['colour_threshold']:.1f}%"
        )
        summary["baselines_miou"] = baselines

    with clock.stage("train the demo recipe"):
        trained = train(recipe)
        model = load_model(trained["model_path"])
        summary["train"] = {"steps": trained["step"], "seconds": trained["seconds"], "model": trained["model_path"]}

    with clock.stage("evaluate"):
        single = evaluate_model(model, val_source)
        multi = evaluate_model(model, val_source, scales=MULTI_SCALES, flip=True)
        print(format_table(single), "\n")
        print(format_table(multi))
        summary["miou"] = {"single_scale": single["miou"], "multi_scale_flip": multi["miou"]}

    export_base = os.path.join(out_dir, "export", MODEL_NAME)
    with clock.stage("export a SavedModel for TF Serving"):
        shutil.rmtree(export_base, ignore_errors=True)
        version_path = export_saved_model(model, export_base, version=1)
        size = folder_bytes(version_path)
        print(
            f"{version_path}: {size / 1e6:.1f} MB for {model.count_params():,} parameters "
            f"({size / model.count_params():.2f} bytes each)"
        )
        summary["saved_model"] = {"path": version_path, "bytes_per_parameter": size / model.count_params()}

    examples = list(itertools.islice(val_source.examples(), num_requests))
    images_dir, answers_dir = os.path.join(out_dir, "images"), os.path.join(out_dir, "answers")
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(answers_dir, exist_ok=True)
    image_paths = []
    for image, _, name in examples:
        image_paths.append(os.path.join(images_dir, f"{name}.png"))
        Image.fromarray(image).save(image_paths[-1])
    with clock.stage("serve over REST on loopback and ask it"):
        with running_server(export_base, free_port(), os.path.join(out_dir, "server.log")) as url:
            encoded = [Path(path).read_bytes() for path in image_paths]
            started = time.perf_counter()
            answers = predict_class_maps(url, MODEL_NAME, encoded)
            request_seconds = time.perf_counter() - started
        direct = [predict_class_map(model, image[np.newaxis])[0].numpy() for image, _, _ in examples]
        equal = sum(int(np.array_equal(answer, expected)) for answer, expected in zip(answers, direct, strict=True))
        written = [
            write_outputs(answers_dir, path, image, answer, val_source.descriptor)
            for path, (image, _, _), answer in zip(image_paths, examples, answers, strict=True)
        ]
        print(
            f"{url}: {len(answers)} images in one request, {request_seconds:.2f} s; "
            f"{equal}/{len(answers)} class maps equal to direct prediction; overlays in {answers_dir}/"
        )
        summary["rest"] = {
            "images": len(answers),
            "equal_to_direct": equal,
            "seconds": round(request_seconds, 2),
            "outputs": [overlay for _, overlay in written],
        }

    with clock.stage("TFLite full int8, checked against Keras"):
        size = max(check["image_height_range"][1], check["image_width_range"][1])  # the images' own size
        representative = [image for image, _, _ in itertools.islice(train_source.examples(), 32)]
        tflite_path = os.path.join(out_dir, f"deeplab_full_int8_{size}.tflite")
        write_bytes(tflite_path, convert(model, "full_int8", size, representative))
        report = compare_with_keras(model, {"full_int8": TFLiteModel(tflite_path)}, val_source.examples())
        print(
            f"{tflite_path}: {report['full_int8']['size_mb']:.2f} MB; pixel agreement with Keras "
            f"{100 * report['full_int8']['agreement']:.2f}%; mIoU {100 * report['full_int8']['miou']:.2f}% "
            f"(Keras at the same fixed input: {100 * report['keras']['miou']:.2f}%)"
        )
        summary["tflite_full_int8"] = {
            "path": tflite_path,
            **report["full_int8"],
            "keras_miou": report["keras"]["miou"],
        }

    with clock.stage("published weights on real photos, with the fully connected CRF"):
        summary["published"] = segment_real_photos(os.path.join(out_dir, "published"))

    summary["seconds"] = clock.seconds
    summary["total_seconds"] = round(sum(clock.seconds.values()), 1)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    print_summary(summary)
    return summary


def segment_real_photos(out_dir: str, voc_sample: str = SHARED_VOC_SAMPLE) -> dict[str, Any]:
    """Google's published MobileNetV2 DeepLabv3 (VOC, shipped in keras_deeplab/assets/published/), imported into
    Keras, segments the shipped bird photo with and without the CRF and writes masks and overlays to `out_dir`;
    where `voc_sample` exists (../shared's real VOC pairs), it is scored there with and without the CRF."""
    model = import_weights(PUBLISHED_MODEL)
    photo = np.asarray(Image.open(PUBLISHED_PHOTO).convert("RGB"))
    probabilities = class_probabilities(lambda images: model(images, training=False), photo[np.newaxis])[0].numpy()
    started = time.perf_counter()
    refined = dense_crf(photo, probabilities)
    crf_seconds = time.perf_counter() - started
    os.makedirs(out_dir, exist_ok=True)
    found = {}
    for stem, scores in (("bird", probabilities), ("bird_crf", refined)):
        class_map = scores.argmax(-1)
        write_outputs(out_dir, f"{stem}.png", photo, class_map, VOC)
        shares = np.bincount(class_map.ravel(), minlength=VOC.num_classes) / class_map.size
        found[stem] = {
            VOC.class_names[index]: round(float(shares[index]), 4) for index in np.flatnonzero(shares > 0.01)
        }
    changed = float(np.mean(probabilities.argmax(-1) != refined.argmax(-1)))
    print(f"{PUBLISHED_MODEL.name} imported: {model.count_params():,} parameters, output stride 8")
    for stem, shares in found.items():
        print(f"{stem}: " + ", ".join(f"{name} {100 * share:.1f}%" for name, share in shares.items()))
    print(f"the CRF changed {100 * changed:.2f}% of the pixels in {crf_seconds:.2f} s; overlays in {out_dir}/")
    result: dict[str, Any] = {"classes": found, "crf_changed": changed, "crf_seconds": round(crf_seconds, 2)}
    if os.path.isdir(voc_sample):
        source = open_source("voc", voc_sample, "trainval")
        scores = evaluate_model(model, source, crf={}, trimap_widths=TRIMAP_WIDTHS)
        print(f"{voc_sample} (real VOC 2012 pairs), full resolution:")
        print(format_table(scores))
        result["voc_sample"] = {"miou": scores["miou"], "miou_crf": scores["crf"]["miou"]}
    else:
        print(f"{voc_sample} is absent (a fresh clone has no ../shared): scoring on real VOC pairs skipped")
    return result


def print_summary(summary: dict[str, Any]) -> None:
    out = io.StringIO()
    print("\n=== summary ===", file=out)
    print(
        f"mIoU on synthetic val: {100 * summary['miou']['single_scale']:.2f}% single scale, "
        f"{100 * summary['miou']['multi_scale_flip']:.2f}% scales {','.join(map(str, MULTI_SCALES))} + flip "
        f"(naive baselines: constant {100 * summary['baselines_miou']['constant']:.1f}%, colour threshold "
        f"{100 * summary['baselines_miou']['colour_threshold']:.1f}%)",
        file=out,
    )
    rest = summary["rest"]
    print(f"REST: {rest['equal_to_direct']}/{rest['images']} answers equal to direct prediction", file=out)
    tflite = summary["tflite_full_int8"]
    print(f"TFLite full int8: {tflite['size_mb']:.2f} MB, {100 * tflite['agreement']:.2f}% pixel agreement", file=out)
    published = summary["published"]
    bird = ", ".join(f"{name} {100 * share:.1f}%" for name, share in published["classes"]["bird_crf"].items())
    print(f"Published MobileNetV2 on the bird photo, with the CRF: {bird}", file=out)
    if "voc_sample" in published:
        voc = published["voc_sample"]
        print(
            f"  on real VOC pairs: mIoU {100 * voc['miou']:.2f}%, with the CRF {100 * voc['miou_crf']:.2f}%", file=out
        )
    for stage, seconds in summary["seconds"].items():
        print(f"  {seconds:7.1f} s  {stage}", file=out)
    print(f"  {summary['total_seconds']:7.1f} s  in all", file=out)
    print(out.getvalue(), end="", flush=True)
