"""`keras-deeplab convert --to {tflite,onnx,openvino}` (`convert-tflite`: the same, TFLite by default): variants
of a trained model at a fixed input size, each checked against Keras."""

from __future__ import annotations

import argparse

from keras_deeplab import constants
from keras_deeplab.commands.arguments import add_model_option, add_output_stride_option, positive_int
from serving.settings import DEFAULT_MIN_AGREEMENT, ENGINE_FORMATS, FORMAT_QUANTIZATIONS

VARIANTS = tuple(dict.fromkeys(name for names in FORMAT_QUANTIZATIONS.values() for name in names))


def _agreement_threshold(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        threshold = float(value)
    except ValueError:
        threshold = None
    if name not in VARIANTS or threshold is None:
        raise argparse.ArgumentTypeError(f"expected VARIANT=VALUE with VARIANT one of {VARIANTS}, got {text!r}")
    return name, threshold


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        aliases=["convert-tflite"],
        help="convert a trained model to TFLite, ONNX or OpenVINO variants and check them against Keras",
    )
    parser.add_argument("--to", choices=ENGINE_FORMATS, default="tflite", help="the format (onnx, openvino: the "
                        "engines extra)")  # fmt: skip
    add_model_option(parser, "a .keras model file or a training run folder")
    parser.add_argument("--out", required=True, help="folder for <stem>_<variant>_<size>.tflite / .onnx / .xml")
    parser.add_argument(
        "--quantization",
        nargs="+",
        choices=VARIANTS,
        help="variants (default: all of the format's: "
        + "; ".join(f"{name} {' '.join(names)}" for name, names in FORMAT_QUANTIZATIONS.items())
        + ")",
    )
    parser.add_argument("--input-size", type=positive_int, default=constants.CROP_SIZE, help="S of (1, S, S, 3)")
    add_output_stride_option(parser, "rebuild at this stride")
    parser.add_argument("--format", default="synthetic", help="dataset format of the check and calibration images")
    parser.add_argument("--root", help="dataset folder (not used by synthetic)")
    parser.add_argument("--split", default="val", help="split of the images the variants are checked on")
    parser.add_argument("--num-images", type=positive_int, default=20, help="images to check on")
    parser.add_argument("--representative-split", default="train", help="split of the int8 calibration images")
    parser.add_argument("--representative-images", type=positive_int, default=50, help="int8 calibration images")
    parser.add_argument(
        "--min-agreement",
        type=_agreement_threshold,
        action="append",
        default=[],
        metavar="VARIANT=VALUE",
        help=f"least pixel agreement with Keras (defaults {DEFAULT_MIN_AGREEMENT})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    quantizations = args.quantization or list(FORMAT_QUANTIZATIONS[args.to])
    wrong = [name for name in quantizations if name not in FORMAT_QUANTIZATIONS[args.to]]
    if wrong:
        raise ValueError(
            f"--quantization {' '.join(wrong)}: not a variant of {args.to} (its variants: "
            f"{' '.join(FORMAT_QUANTIZATIONS[args.to])})"
        )
    from keras_deeplab.files import make_folder
    from keras_deeplab.loading import load_model
    from serving.engines import convert_variant
    from serving.tflite import compare_with_keras, dataset_examples

    model = load_model(args.model, args.output_stride)
    representative = None
    if any(name in ("full_int8", "int8") for name in quantizations):
        calibration = dataset_examples(args.format, args.root, args.representative_split, args.representative_images)
        representative = [image for image, _, _ in calibration]
    examples = dataset_examples(args.format, args.root, args.split, args.num_images)
    make_folder(args.out)
    variants = {}
    for quantization in quantizations:
        path, variants[quantization] = convert_variant(
            model, args.to, quantization, args.out, args.model, args.input_size, representative
        )
        print(f"wrote {path} ({variants[quantization].size_bytes / 1e6:.2f} MB)")
    report = compare_with_keras(model, variants, examples)
    thresholds = {**DEFAULT_MIN_AGREEMENT, **dict(args.min_agreement)}
    print(f"{len(examples)} images of {args.format}/{args.split}, each fitted to {args.input_size}x{args.input_size}")
    print(f"{'model':<14}{'size MB':>9}{'agreement':>11}{'mIoU':>8}")
    print(f"{'keras':<14}{'':>9}{'':>11}{report['keras']['miou']:>8.4f}")
    failures = []
    for name in variants:
        result = report[name]
        print(f"{name:<14}{result['size_mb']:>9.2f}{result['agreement']:>11.5f}{result['miou']:>8.4f}")
        if result["agreement"] < thresholds[name]:
            failures.append(f"{name}: pixel agreement {result['agreement']:.5f} is below {thresholds[name]}")
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0
