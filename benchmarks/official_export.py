"""`--fit-to SIZE` against the class maps of a frozen graph in the official export's form, on real photos.

Writes a DeepLab (MobileNetV2 x0.5, 21 classes, untrained, its logits scaled and balanced so its class maps vary)
as research/deeplab's export_model.py exports one: real ops under the official names at output stride 8, input
`ImageTensor:0` (uint8), its own resize (longer side to SIZE, corners aligned), mean-pixel padding, argmax, crop and
nearest resize back, output `SemanticPredictions:0` (tests/official_graphs.py). Imports the graph
(`import_weights`, which reads the output stride from its atrous rates), predicts each photo with
`inference.predict_class_map(..., fit_to=SIZE)` and prints the share of pixels equal to the graph's.

    python benchmarks/official_export.py                 # ../shared/data: 3 VOC + 3 ADE20K photos, SIZE 513
    python benchmarks/official_export.py --size 257 PHOTO...
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import keras
import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # the test helper that writes graphs in the official form

import official_graphs  # noqa: E402

from keras_deeplab import machine  # noqa: E402
from keras_deeplab.importing import import_weights  # noqa: E402
from keras_deeplab.inference import predict_class_map  # noqa: E402
from keras_deeplab.model import build_model  # noqa: E402

SHARED_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))
MODEL = {
    "backbone": "mobilenetv2",
    "width_multiplier": 0.5,
    "width_divisor": 1,
    "light_aspp": True,
    "decoder": False,
    "num_classes": 21,
    "output_stride": 8,
    "align_corners": True,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="*", help="default: the photos of ../shared/data")
    parser.add_argument("--size", type=int, default=513, help="the export's crop size and --fit-to SIZE")
    args = parser.parse_args()
    photos = args.photos or sorted(
        glob.glob(os.path.join(SHARED_DATA, "*", "JPEGImages", "*.jpg"))
        + glob.glob(os.path.join(SHARED_DATA, "*", "images", "validation", "*.jpg"))
    )
    print(machine.describe())
    keras.utils.set_random_seed(0)
    model = build_model(**MODEL)
    official_graphs.balance_logits(model, args.size)
    graph = official_graphs.exported_graph_def(model, args.size)
    path = official_graphs.write(graph, os.path.join(os.environ.get("TMPDIR", "/tmp"), "official_export.pb"))
    imported = import_weights(path)
    print(f"graph exported at output stride 8: imported at {imported.build_config['output_stride']}")
    run_graph = official_graphs.graph_function(graph, "ImageTensor:0", "SemanticPredictions:0")
    agreeing = total = 0
    for photo in photos:
        pixels = tf.io.decode_image(tf.io.read_file(photo), channels=3)[tf.newaxis]
        reference = run_graph(pixels).numpy()
        ours = predict_class_map(lambda images: imported(images, training=False), pixels.numpy(), fit_to=args.size)
        same = int(np.sum(ours.numpy() == reference))
        agreeing, total = agreeing + same, total + reference.size
        print(
            f"  {os.path.basename(photo)} {reference.shape[1]}x{reference.shape[2]}: {same / reference.size:.6f} "
            f"({len(np.unique(reference))} classes in the graph's map)"
        )
    print(f"--fit-to {args.size}: {agreeing} of {total} pixels as SemanticPredictions ({agreeing / total:.6f})")


if __name__ == "__main__":
    main()
