"""mIoU of Google's published MobileNetV2 DeepLabv3 (float TFLite) imported into Keras, beside LiteRT's own.

Imports the TFLite file (`keras_deeplab.importing.import_weights`), saves it as .keras, and prints:
- `keras-deeplab evaluate`'s full-resolution mIoU of the imported model at output stride 8 and 16, single
  scale and scales 0.5..1.75 with flips (the v3 paper's protocol), and with `--fit-to 513` (the official
  export's input handling) at output stride 8;
- the mIoU of LiteRT running the source file and of the imported model, both on each image stretched to the
  file's 257x257 input, the class map resized back (nearest): the same numbers for the same network.

    python benchmarks/published_miou.py                     # ../shared: the VOC sample, trainval (3 images)
    python benchmarks/published_miou.py --root VOC2012 --split val
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import tensorflow as tf

from keras_deeplab import machine
from keras_deeplab.evaluation import evaluate
from keras_deeplab.importing import import_weights
from keras_deeplab.litert import open_interpreter
from keras_deeplab.metrics import MeanIoU
from pipelines import open_source

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared"))
MULTI_SCALE = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def stretched_miou(predict, source, size: int, num_classes: int) -> float:
    """mIoU of `predict` (uint8 (1, S, S, 3) -> class ids (S, S)) on each image stretched to S x S, the class
    map resized back to the image's size (nearest)."""
    metric = MeanIoU(num_classes)
    for image, mask, _ in source.examples():
        pixels = tf.cast(tf.image.resize(image, (size, size), method="bilinear"), tf.float32).numpy()
        class_map = predict(np.round(np.clip(pixels, 0, 255))[np.newaxis])
        back = tf.image.resize(class_map[..., np.newaxis], mask.shape[:2], method="nearest")[..., 0]
        metric.update_state(mask[np.newaxis], back.numpy()[np.newaxis])
    return float(metric.result())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflite", default=os.path.join(SHARED, "weights", "deeplabv3_257_mv_gpu.tflite"))
    parser.add_argument("--root", default=os.path.join(SHARED, "data", "voc2012_sample"), help="a VOC folder")
    parser.add_argument("--split", default="trainval")
    args = parser.parse_args()
    print(machine.describe())

    model = import_weights(args.tflite)
    source = open_source("voc", args.root, args.split)
    num_classes = int(model.output.shape[-1])
    print(f"{args.tflite}: imported as {model.build_config['backbone']} x{model.build_config['width_multiplier']:g}")
    print(f"VOC {args.split} at {args.root}: {len(source)} images")

    interpreter, _, _ = open_interpreter(args.tflite)
    source_input, source_output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    size = int(source_input["shape"][1])

    def litert(pixels):
        interpreter.set_tensor(source_input["index"], (pixels / 127.5 - 1).astype(np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(source_output["index"])[0].argmax(-1).astype(np.int32)

    def keras_model(pixels):
        return model(pixels.astype(np.float32), training=False).numpy()[0].argmax(-1).astype(np.int32)

    print(f"\nstretched to {size}x{size}, class map resized back (nearest):")
    print(f"  LiteRT (source file)  mIoU {stretched_miou(litert, source, size, num_classes):.4f}")
    print(f"  Keras (imported)      mIoU {stretched_miou(keras_model, source, size, num_classes):.4f}")

    print("\nkeras-deeplab evaluate, full resolution:")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "imported.keras")
        model.save(path)
        for stride in (8, 16):
            for scales, flip in (((1.0,), False), (MULTI_SCALE, True)):
                result = evaluate(path, "voc", args.root, args.split, output_stride=stride, scales=scales, flip=flip)
                label = "single scale" if len(scales) == 1 else "scales 0.5..1.75 + flip"
                print(
                    f"  OS {stride:>2} {label:<24} mIoU {result['miou']:.4f}  "
                    f"pixel accuracy {result['pixel_accuracy']:.4f}"
                )
        result = evaluate(path, "voc", args.root, args.split, output_stride=8, fit_to=513)
        print("\nkeras-deeplab evaluate --fit-to 513 (the official export's handling):")
        print(f"  OS  8 {'single scale':<24} mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}")


if __name__ == "__main__":
    main()
