"""bfloat16 inference beside float32: its speed on this CPU and its accuracy cost on a trained model.

Speed: DeepLabv3 ResNet-101 at output stride 16, batch 1, 513x513, float32 and mixed_bfloat16 policies (the
same weights). Accuracy: a trained model (default: the one `make demo` trains) rebuilt under each policy with
the same weights, its mIoU on the synthetic validation split and the share of pixels whose class agrees.
bfloat16 pays off where the CPU computes it natively (AMX, AVX512_BF16); elsewhere it is converted in software.

Usage: python benchmarks/bfloat16.py [--model runs/demo/run/model.keras] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

POLICIES = ("float32", "mixed_bfloat16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(peers.ROOT, "runs", "demo", "run", "model.keras"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not os.path.isfile(args.model):
        parser.error(f"{args.model}: no trained model there (run `make demo` first, or pass --model)")

    import numpy as np
    import tensorflow as tf

    import pipelines
    from keras_deeplab import build_model
    from keras_deeplab.evaluation import evaluate_model
    from keras_deeplab.inference import predict_class_map
    from keras_deeplab.loading import load_model
    from keras_deeplab.training.strategy import dtype_policy

    native = peers.native_bfloat16_flags()
    print(f"{os.cpu_count()} CPU cores; native bfloat16 instructions: {', '.join(native) or 'none'}")

    reference = build_model(16, backbone="resnet101", input_shape=(513, 513, 3))
    pixels = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 513, 513, 3)).astype("float32"))
    print(f"\n{'DeepLabv3 R101 OS16, 513x513':<32}{'forward s':>10}")
    for policy in POLICIES:
        with dtype_policy(policy):
            model = build_model(16, backbone="resnet101", input_shape=(513, 513, 3))
        model.set_weights(reference.get_weights())
        forward = tf.function(lambda x, model=model: model(x, training=False))
        timing = peers.median_seconds(lambda forward=forward: forward(pixels).numpy(), args.runs, warmup=2)
        print(f"{policy:<32}{timing['median_s']:>10.2f}")

    trained = load_model(args.model)
    source = pipelines.open_source("synthetic", None, "val")
    maps = {}
    print(f"\n{args.model} on synthetic val ({len(source)} images)")
    for policy in POLICIES:
        with dtype_policy(policy):
            model = build_model(**{**trained.build_config, "sync_batch_norm": False})
        model.set_weights(trained.get_weights())
        miou = evaluate_model(model, source)["miou"]
        maps[policy] = np.concatenate(
            [predict_class_map(model, image[np.newaxis]).numpy().ravel() for image, _, _ in source.examples()]
        )
        print(f"{policy:<32}mIoU {miou:.4f}")
    agreement = float(np.mean(maps["float32"] == maps["mixed_bfloat16"]))
    print(f"class agreement of bfloat16 with float32: {agreement:.2%} of pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
