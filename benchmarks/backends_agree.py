"""The same DeepLab on TensorFlow, JAX and PyTorch: logits of models saved under TensorFlow, read under each backend.

Under TensorFlow (this process): Google's published MobileNetV2 DeepLabv3 TFLite (../shared/weights) imported and
saved as .keras, and a DeepLabv3+ ResNet-50 (random weights, half-pixel resizes) and a DeepLab v2 VGG-16 with
multi-scale inputs (random weights) saved likewise; their logits on the real photos of ../shared/data. Then one
process per backend (KERAS_BACKEND=jax, =torch) reads each file through `keras_deeplab.load_model` and
`keras.models.load_model`, imports the TFLite file itself, and computes the logits of the same photos (under
`jax.jit` through `predict_on_batch` on JAX). Prints, per backend and loader, the largest difference relative to
the largest TensorFlow logit and the share of pixels whose argmax agrees, with the CPU line.

Usage: python benchmarks/backends_agree.py [--photos 4] [--side 321]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
TFLITE = os.path.join(SHARED, "weights", "deeplabv3_257_mv_gpu.tflite")
BACKENDS = ("jax", "torch")


def photos(count: int, side: int) -> np.ndarray:
    """`count` real photos (VOC 2012 and ADE20K samples, then the bird), centre-cropped square and resized to
    `side`: float32 (N, side, side, 3) in [0, 255]."""
    from PIL import Image

    paths = sorted(glob.glob(os.path.join(SHARED, "data", "voc2012_sample", "JPEGImages", "*.jpg")))
    paths += sorted(glob.glob(os.path.join(SHARED, "data", "ade20k_sample", "images", "**", "*.jpg"), recursive=True))
    paths.append(os.path.join(SHARED, "weights", "bird_segmentation.bmp"))
    images = []
    for path in paths[:count]:
        image = Image.open(path).convert("RGB")
        crop = min(image.size)
        left, top = (image.width - crop) // 2, (image.height - crop) // 2
        image = image.crop((left, top, left + crop, top + crop)).resize((side, side), Image.BILINEAR)
        images.append(np.asarray(image, np.float32))
    return np.stack(images)


def models():
    """{name: DeepLab} saved under TensorFlow."""
    from keras_deeplab import build_model, import_weights

    return {
        "mobilenetv2_tflite": import_weights(TFLITE),
        "resnet50_v3plus": build_model(16, backbone="resnet50", decoder=True, width_multiplier=0.5),
        "vgg16_v2_msc": build_model(
            8, backbone="vgg16", head="aspp_v2", width_multiplier=0.25, multi_scale_inputs=(1.0, 0.75, 0.5)
        ),
    }


def logits_of(model, images: np.ndarray) -> np.ndarray:
    """Logits of each photo on its own (batch 1), as NumPy."""
    return np.concatenate([np.asarray(model.predict_on_batch(image[None])) for image in images])


def backend_side(folder: str) -> dict:
    """In a KERAS_BACKEND=jax/torch process: the logits of every saved model through both loaders, and of the TFLite
    file imported here."""
    import keras

    import keras_deeplab

    images = np.load(os.path.join(folder, "photos.npy"))
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.keras"))):
        name = os.path.basename(path)[: -len(".keras")]
        out[f"{name}/load_model"] = logits_of(keras_deeplab.load_model(path), images)
        out[f"{name}/keras.models.load_model"] = logits_of(keras.models.load_model(path, compile=False), images)
    out["mobilenetv2_tflite/import_weights"] = logits_of(keras_deeplab.import_weights(TFLITE), images)
    np.savez(os.path.join(folder, f"{keras.backend.backend()}.npz"), **out)
    return {"backend": keras.backend.backend(), "tensorflow_imported": "tensorflow" in sys.modules}


def agreement(expected: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max |got - expected| / max |expected|, share of pixels with the same argmax)."""
    relative = float(np.abs(got - expected).max() / np.abs(expected).max())
    return relative, float((got.argmax(-1) == expected.argmax(-1)).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=4, help="real photos compared")
    parser.add_argument("--side", type=int, default=321, help="photos are centre-cropped and resized to side x side")
    parser.add_argument("--backend-side", help=argparse.SUPPRESS)  # internal: the JAX/PyTorch process
    args = parser.parse_args()
    if args.backend_side:
        print(json.dumps(backend_side(args.backend_side)))
        return 0
    if not os.path.isfile(TFLITE):
        print(f"backends_agree: {TFLITE} is absent (../shared/weights)", file=sys.stderr)
        return 1
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from keras_deeplab import machine

    with tempfile.TemporaryDirectory() as folder:
        images = photos(args.photos, args.side)
        np.save(os.path.join(folder, "photos.npy"), images)
        expected = {}
        for name, model in models().items():
            model.save(os.path.join(folder, f"{name}.keras"))
            expected[name] = logits_of(model, images)
        print(machine.describe())
        print(f"{len(images)} real photos at {args.side}x{args.side}; logits against TensorFlow's")
        print(f"{'backend':<8}{'model / loader':<52}{'max rel diff':>14}{'argmax agree':>14}")
        for backend in BACKENDS:
            env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": ROOT}
            script = [sys.executable, os.path.abspath(__file__), "--backend-side", folder]
            done = subprocess.run(script, capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode != 0:
                print(f"{backend}: failed\n{done.stderr[-3000:]}")
                continue
            got = np.load(os.path.join(folder, f"{backend}.npz"))
            for key in got.files:
                relative, agree = agreement(expected[key.split("/")[0]], got[key])
                print(f"{backend:<8}{key:<52}{relative:>14.2e}{agree:>14.4%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
