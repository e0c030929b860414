"""CPU engines side by side: TensorFlow, OpenVINO, ONNX Runtime and LiteRT on the same models, one table.

Rows: TensorFlow float32 and bfloat16 (our Keras model, `--precision mixed`), OpenVINO float32, its bf16 hint and
int8 (NNCF), ONNX Runtime float32 and int8 (static QDQ), LiteRT float32 and full int8; for ResNet-101 DeepLabv3
at output stride 16 (fresh weights: speed only) and MobileNetV2 DeepLabv3 (Google's published VOC weights from
../shared/weights, imported with keras_deeplab.importing.import_weights), both at 513x513, batch 1.

Columns: the median of --runs forward passes after one warm-up, each (engine, precision, model) in a process of
its own; the peak memory of that process beyond what it held after its imports (the model loaded and run);
and, for each engine and precision, the pixel agreement of its class maps with TensorFlow float32's and the
mIoU on the real VOC photos of ../shared/data, both measured with the published MobileNetV2 weights run through
that same engine and precision (random weights say nothing of what quantisation costs), and the mIoU of its class
maps against TensorFlow float32's on every real photo of ../shared (the VOC, ADE20K and bird photos): steadier
than the mIoU of 3 photos, where a few pixels of a class the truth lacks move the mean by points. A ResNet-101
row carries the figures of its engine and precision measured so: ResNet-101 has no published weights here. The
int8 variants are calibrated on 16 images made from the unscored photos (the ADE20K sample and the bird photo,
mirrored and cut), never on the VOC photos. Every image is fitted to 513 and padded, the class map taken at the
photo's size.

    python benchmarks/engines.py --json engines.json           # ~40 min on 2 busy cores
    python benchmarks/engines.py --models mobilenetv2 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared"))
PUBLISHED = os.path.join(SHARED, "weights", "deeplabv3_257_mv_gpu.tflite")
ROWS = (
    ("tensorflow", "float32"),
    ("tensorflow", "bfloat16"),
    ("openvino", "float32"),
    ("openvino", "bf16 hint"),
    ("openvino", "int8"),
    ("onnxruntime", "float32"),
    ("onnxruntime", "int8"),
    ("litert", "float32"),
    ("litert", "full_int8"),
)
# (engine, precision) -> (format of `convert`, its variant)
FILES = {
    ("openvino", "float32"): ("openvino", "float32"),
    ("openvino", "bf16 hint"): ("openvino", "float32"),
    ("openvino", "int8"): ("openvino", "int8"),
    ("onnxruntime", "float32"): ("onnx", "float32"),
    ("onnxruntime", "int8"): ("onnx", "int8"),
    ("litert", "float32"): ("tflite", "float32"),
    ("litert", "full_int8"): ("tflite", "full_int8"),
}
SUFFIX = {"openvino": ".xml", "onnx": ".onnx", "tflite": ".tflite"}


def memory_mib(field: str) -> float:
    """A field of /proc/self/status in MiB: VmRSS (now), VmHWM (the peak; unlike ru_maxrss, not inherited from the
    parent across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_runner(engine: str, precision: str, path: str, size: int):
    """(run(pixels (1, S, S, 3)) -> logits, predict_logits for any image) of one row's model file."""
    if engine == "tensorflow":
        import tensorflow as tf

        from keras_deeplab.loading import load_model
        from serving.tflite import fixed_size_logits

        model = load_model(path, precision="float32" if precision == "float32" else "mixed")
        forward = tf.function(lambda pixels: tf.cast(model(pixels, training=False), tf.float32))
        run = lambda pixels: forward(pixels).numpy()  # noqa: E731
        return run, fixed_size_logits(run, size)
    if engine == "litert":
        from serving.tflite import TFLiteModel

        model = TFLiteModel(path, num_threads=os.cpu_count())
    else:
        from serving.engines import EngineModel

        model = EngineModel(path, hint="bf16" if precision == "bf16 hint" else "f32")
    return model.run, model.predict_logits


def measure(engine: str, precision: str, path: str, size: int, runs: int) -> dict:
    """In a process of its own: median seconds and peak memory (MiB beyond the imports) of one row."""
    import numpy as np

    sys.path.insert(0, HERE)
    import peers

    baseline = memory_mib("VmRSS")
    run, _ = open_runner(engine, precision, path, size)
    pixels = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    median_s = peers.median_seconds(lambda: run(pixels), runs, warmup=1)["median_s"]
    return {"median_s": median_s, "peak_mib": memory_mib("VmHWM") - baseline}


def accuracy(files: dict, keras_path: str, size: int) -> dict:
    """{(engine, precision): {"agreement", "miou", "miou_vs_float32"}} of the published MobileNetV2 through each
    engine and precision: agreement and mIoU on the VOC photos; mIoU of its class maps against TensorFlow
    float32's on every real photo (VOC, ADE20K, bird), a steadier figure than 3 photos' truth."""
    import numpy as np

    from keras_deeplab.inference import predict_class_map
    from keras_deeplab.metrics import MeanIoU
    from pipelines import open_source

    examples = list(open_source("voc", os.path.join(SHARED, "data", "voc2012_sample"), "trainval").examples())
    photos = [image for image, _, _ in examples] + unscored_photos()
    maps = {}
    for row in ROWS:
        _, predict_logits = open_runner(*row, keras_path if row[0] == "tensorflow" else files[row], size)
        maps[row] = [predict_class_map(predict_logits, image[np.newaxis])[0].numpy() for image in photos]
    results = {}
    for row in ROWS:
        metric, against_float32 = MeanIoU(21), MeanIoU(21)
        agreeing = pixels = 0
        scored = zip(examples, maps[row][: len(examples)], maps[ROWS[0]][: len(examples)], strict=True)
        for (_, mask, _), class_map, reference in scored:
            metric.update_state(mask[np.newaxis], class_map[np.newaxis])
            agreeing += int(np.sum(class_map == reference))
            pixels += mask.size
        for class_map, reference in zip(maps[row], maps[ROWS[0]], strict=True):
            against_float32.update_state(reference[np.newaxis], class_map[np.newaxis])
        results[row] = {
            "agreement": agreeing / pixels,
            "miou": float(metric.result()),
            "miou_vs_float32": float(against_float32.result()),
        }
    return results


def unscored_photos() -> list:
    """The real photos that are not scored against a truth: the ADE20K sample's and the bird photo."""
    import numpy as np
    from PIL import Image

    folder = os.path.join(SHARED, "data", "ade20k_sample", "images", "validation")
    paths = [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
    paths.append(os.path.join(SHARED, "weights", "bird_segmentation.bmp"))
    return [np.asarray(Image.open(path).convert("RGB")) for path in paths]


def calibration_images() -> list:
    """Real photos that are not scored (the ADE20K sample's and the bird photo), each also mirrored and cut to its
    top-left and bottom-right two thirds: 16 images."""
    import numpy as np

    photos = unscored_photos()
    mirrored = [photo[:, ::-1] for photo in photos]
    top_left = [photo[: photo.shape[0] * 2 // 3, : photo.shape[1] * 2 // 3] for photo in photos]
    bottom_right = [photo[photo.shape[0] // 3 :, photo.shape[1] // 3 :] for photo in photos]
    return [np.ascontiguousarray(image) for image in photos + mirrored + top_left + bottom_right]


def convert_all(name: str, model, work: str, size: int) -> dict:
    """The model's files for each row (made once; kept in `work` for a later run)."""
    from serving.engines import convert_variant

    keras_path = os.path.join(work, f"{name}.keras")
    if not os.path.isfile(keras_path):
        model.save(keras_path)
    calibration = None
    files = {}
    for row, (format, variant) in FILES.items():
        path = os.path.join(work, f"{name}_{variant}_{size}{SUFFIX[format]}")
        if not os.path.isfile(path):
            if calibration is None:
                calibration = calibration_images()
            started = time.perf_counter()
            convert_variant(model, format, variant, work, keras_path, size, calibration)
            print(f"  {path}: converted in {time.perf_counter() - started:.0f} s", flush=True)
        files[row] = path
    return {"keras": keras_path, **files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", choices=("resnet101", "mobilenetv2"), default=["resnet101", "mobilenetv2"]
    )
    parser.add_argument("--input-size", type=int, default=513)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", default=os.path.join("runs", "engines"), help="folder for the converted files")
    parser.add_argument("--json", help="also write the table as JSON here")
    parser.add_argument("--measure", nargs=3, metavar=("ENGINE", "PRECISION", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.input_size, args.runs)))
        return

    from keras_deeplab import build_model, machine
    from keras_deeplab.importing import import_weights

    cpu = machine.describe()
    print(cpu, flush=True)
    os.makedirs(args.work, exist_ok=True)
    size = args.input_size
    print(f"converting (once) into {args.work}", flush=True)
    published = convert_all("mobilenetv2", import_weights(PUBLISHED), args.work, size)
    files = {"mobilenetv2": published}
    if "resnet101" in args.models:
        files["resnet101"] = convert_all("resnet101", build_model(16, backbone="resnet101"), args.work, size)
    print("accuracy of the published MobileNetV2 through each engine and precision", flush=True)
    scores = accuracy(published, published["keras"], size)
    rows = []
    for name in args.models:
        for row in ROWS:
            path = files[name]["keras" if row[0] == "tensorflow" else row]
            command = [sys.executable, __file__, "--measure", *row, path, "--input-size", str(size)]
            done = subprocess.run([*command, "--runs", str(args.runs)], capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{name} {row}: {done.stderr.strip().splitlines()[-1]}")
            timed = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"engine": row[0], "precision": row[1], "model": name, **timed, **scores[row]})
            print(f"  {name} {row[0]} {row[1]}: {timed['median_s']:.3f} s", flush=True)
    print_table(cpu, rows, size)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"cpu": cpu, "input_size": size, "rows": rows}, file, indent=1)


def print_table(cpu: str, rows: list, size: int) -> None:
    print(f"\n{cpu}\n{size}x{size}, batch 1; agreement and mIoU: published MobileNetV2 weights, VOC sample photos;")
    print("mIoU vs f32: its class maps against TensorFlow float32's on every real photo (VOC, ADE20K, bird)")
    print(f"{'model':<13}{'engine':<13}{'precision':<11}{'median s':>9}{'vs TF f32':>10}{'peak MiB':>9}"
          f"{'agreement':>10}{'mIoU':>7}{'mIoU vs f32':>12}")  # fmt: skip
    for row in rows:
        reference = next(r for r in rows if r["model"] == row["model"] and r["engine"] == "tensorflow")
        print(
            f"{row['model']:<13}{row['engine']:<13}{row['precision']:<11}{row['median_s']:>9.3f}"
            f"{reference['median_s'] / row['median_s']:>9.2f}x{row['peak_mib']:>9.0f}"
            f"{row['agreement']:>10.4f}{100 * row['miou']:>7.2f}{100 * row['miou_vs_float32']:>12.2f}"
        )


if __name__ == "__main__":
    main()
