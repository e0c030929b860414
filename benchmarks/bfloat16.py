"""bfloat16 beside float32: its speed on this CPU, and its accuracy cost on real photos with published weights.

Speed: DeepLabv3 ResNet-101 at output stride 16, batch 1, 513x513, float32 and mixed_bfloat16 policies (the same
weights), and what `--precision auto` picks here. Accuracy: Google's published DeepLabv3 models (the MobileNetV2
shipped in keras_deeplab/assets/published/, and any other published file given with --model), imported and run
under each policy on real VOC 2012 photos (`../shared/data/voc2012_sample`, else the shipped bird photo alone):
the share of pixels whose class agrees with float32, and mIoU and pixel accuracy against the true labels.
bfloat16 pays off where the CPU computes it natively (AVX512_BF16, AMX); elsewhere oneDNN emulates it, slowly,
but the numbers, and so the accuracy cost, are the same.

Usage: python benchmarks/bfloat16.py [--model FILE ...] [--voc ../shared/data/voc2012_sample] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

POLICIES = ("float32", "mixed_bfloat16")
SHIPPED = os.path.join(peers.ROOT, "keras_deeplab", "assets", "published", "deeplabv3_257_mv_gpu.tflite")
SHARED_VOC = os.path.join(os.path.dirname(peers.ROOT), "shared", "data", "voc2012_sample")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=[SHIPPED], help="published DeepLab files (or .keras models)")
    parser.add_argument("--voc", default=SHARED_VOC, help="a VOC-layout folder of real photos and labels")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-speed", action="store_true", help="only the accuracy part")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from keras_deeplab import build_model, machine
    from keras_deeplab.loading import load_model
    from keras_deeplab.precision import precision_policy
    from pipelines.formats import open_source

    print(machine.describe())
    print(f"--precision auto here: {precision_policy('auto')}")
    if not args.no_speed:
        reference = build_model(16, backbone="resnet101", input_shape=(513, 513, 3))
        pixels = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 513, 513, 3)).astype("float32"))
        print(f"\n{'DeepLabv3 R101 OS16, 513x513':<32}{'forward s':>10}")
        for policy in POLICIES:
            model = reference.with_dtype_policy(policy)
            forward = tf.function(lambda x, model=model: model(x, training=False))
            timing = peers.median_seconds(lambda forward=forward: forward(pixels).numpy(), args.runs, warmup=2)
            print(f"{policy:<32}{timing['median_s']:>10.2f}")

    if os.path.isdir(args.voc):
        source = open_source("voc", args.voc, "trainval")
        photos = f"{len(source)} real VOC 2012 photos of {args.voc}"
    else:
        source, photos = None, "the shipped bird photo (no VOC folder: --voc)"
    print(f"\naccuracy on {photos}")
    print(f"{'model':<44}{'policy':<16}{'agree':>8}{'mIoU':>8}{'pixel acc':>10}")
    for path in args.model:
        trained = load_model(path)
        maps = {}
        for policy in POLICIES:
            maps[policy], scores = class_maps_and_scores(trained.with_dtype_policy(policy), source)
            agree = float(np.mean(maps[policy] == maps["float32"]))
            miou = f"{100 * scores['miou']:.2f}" if scores else "-"
            accuracy = f"{100 * scores['pixel_accuracy']:.2f}" if scores else "-"
            print(f"{os.path.basename(path)[:43]:<44}{policy:<16}{100 * agree:>7.2f}%{miou:>8}{accuracy:>10}")
    return 0


def class_maps_and_scores(model, source):
    """(the class ids of every photo of `source`, flattened; {'miou', 'pixel_accuracy', ...} against its labels),
    each photo predicted once; for `source` None, the shipped bird photo's class ids and no scores."""
    import numpy as np
    from PIL import Image

    from keras_deeplab.evaluation import predictions
    from keras_deeplab.inference import predict_class_map
    from keras_deeplab.metrics import MeanIoU

    if source is None:
        bird = os.path.join(os.path.dirname(SHIPPED), "bird_segmentation.bmp")
        photo = np.asarray(Image.open(bird).convert("RGB"), np.float32)[np.newaxis]
        return predict_class_map(model, photo).numpy().ravel(), None
    metric, maps = MeanIoU(source.num_classes), []
    for _, mask, probabilities, _ in predictions(model, source):
        class_ids = probabilities.argmax(-1)
        metric.update_state(mask[None], class_ids[None])
        maps.append(class_ids.ravel())
    return np.concatenate(maps), metric.results()


if __name__ == "__main__":
    sys.exit(main())
