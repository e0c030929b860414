"""`keras-deeplab import-weights SOURCE --out MODEL.keras`: a published DeepLab as a `.keras` model.

TensorFlow is imported by `run` only, so that `keras-deeplab --help` stays fast.
"""

from __future__ import annotations

import argparse

from keras_deeplab.commands.arguments import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-weights",
        help="import Google's published DeepLab weights (TF1 checkpoint, model-zoo tarball, frozen graph, TFLite)",
    )
    parser.add_argument(
        "source", help="model.ckpt-N (or its .index), a model-zoo .tar.gz, a frozen_inference_graph.pb or a .tflite"
    )
    parser.add_argument("--out", required=True, help="the .keras model file to write")
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        help="logits channels, when not the source's: its logits are left out, fresh",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.out.endswith(".keras"):
        raise ValueError(f"{args.out}: the output must be a .keras file")
    from keras_deeplab.files import atomic_path, check_new_file
    from keras_deeplab.importing import import_weights
    from keras_deeplab.recipe import model_section_text

    check_new_file(args.out)  # before the import's minutes, and naming --out, not atomic_path's temporary
    model = import_weights(args.source, num_classes=args.num_classes)
    with atomic_path(args.out) as temporary:
        model.save(temporary)
    config = model.build_config
    print(
        f"wrote {args.out}: {config['backbone']} x{config['width_multiplier']:g}, {config['num_classes']} classes, "
        f"output stride {config['output_stride']}, {'v3+ (decoder)' if config['decoder'] else 'v3'}, "
        f"{model.count_params():,} parameters"
    )
    print("a recipe's model section for it (num_classes: your dataset's; the logits then start fresh):")
    print(model_section_text(config))
    return 0
