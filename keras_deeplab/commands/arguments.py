"""What several subcommands share: argument types (argparse `type=` functions), option groups declared once
(model stride and precision, the CRF, the dataset source, progress) and the readers of their values. No
TensorFlow is imported here."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from keras_deeplab import constants
from keras_deeplab.scales import parse_scales
from pipelines.formats import FORMATS

if TYPE_CHECKING:
    from keras_deeplab.descriptors import DatasetDescriptor

MAX_PORT = 65535


def scales(text: str) -> tuple[float, ...]:
    """`--scales 0.5,0.75,1`: positive numbers, comma-separated."""
    try:
        return parse_scales(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def number_pair(text: str) -> tuple[float, float]:
    """`--input-range -1,1`: two comma-separated numbers."""
    try:
        values = tuple(float(value) for value in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers, got {text!r}") from error
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers (low,high), got {text!r}")
    return values


def positive_int(text: str) -> int:
    """A whole number above 0."""
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from error
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port: a whole number from 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from error
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to {MAX_PORT}, got {value}")
    return value


def crf_parameter(text: str) -> tuple[str, float]:
    """`--crf-param bi_w=5`: one keyword of `crf.dense_crf` and its value."""
    name, _, value = text.partition("=")
    if name not in constants.DENSE_CRF:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME one of {', '.join(constants.DENSE_CRF)}, got {text!r}"
        )
    try:
        number = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{name}: expected a number, got {value!r}") from error
    from keras_deeplab.crf import check_parameter  # numpy, no TensorFlow

    try:
        return name, check_parameter(name, number)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def crf_settings(args: argparse.Namespace) -> dict[str, float] | None:
    """The CRF's parameters of `--crf` / `--crf-param` (None when neither was given), after checking that the CRF
    can run here (its C++ extension is built), so that a command fails before its work, not after."""
    if not (args.crf or args.crf_param):
        return None
    from keras_deeplab.crf import extension

    extension()
    return dict(args.crf_param)


def name_value(text: str) -> tuple[str, str]:
    """`--backbone-option stem=beta`: a name and its value as written (checked when the command runs)."""
    name, equals, value = text.partition("=")
    if not name or not equals:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def backbone_options(backbone: str, given: list[tuple[str, str]]) -> dict[str, Any]:
    """`--backbone-option NAME=VALUE` pairs as `build_model` keywords, each value read as the type of the
    option's default in the backbone's spec (true/false, a number, a word, comma-separated integers or
    "none"); ValueError naming an option the backbone does not declare or a value that does not read."""
    from keras_deeplab.backbones import backbone_spec

    declared = backbone_spec(backbone).options
    options = {}
    for name, text in given:
        if name not in declared:
            raise ValueError(
                f"--backbone-option {name}: {backbone} takes {', '.join(declared) or 'no options'} (got {name}={text})"
            )
        options[name] = _read_value(name, text, declared[name])
    return options


def _read_value(name: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if isinstance(default, int | float):
            return type(default)(text)
        if isinstance(default, tuple | list) or default is None:
            return None if text.lower() == "none" else [int(value) for value in text.split(",")]
        return text
    except ValueError:
        kind = {bool: "true or false", int: "a whole number", float: "a number", str: "a word"}.get(
            type(default), "comma-separated integers or none"
        )
        raise ValueError(f"--backbone-option {name}: expected {kind}, got {text!r}") from None


def crf_grid(text: str) -> tuple[str, tuple[float, ...]]:
    """`--crf-grid bi_w=3,4,5`: one keyword of `crf.dense_crf` and the values to try."""
    name, _, values = text.partition("=")
    parsed = [crf_parameter(f"{name}={value}")[1] for value in values.split(",") if value.strip()]
    if not parsed:
        raise argparse.ArgumentTypeError(f"{name}: expected comma-separated values, got {text!r}")
    return name, tuple(parsed)


def add_model_option(parser: argparse.ArgumentParser, kinds: str) -> None:
    """`--model`: one of `kinds` (what the command reads), or `preset:NAME` (keras_deeplab.loading.model_file)."""
    parser.add_argument("--model", required=True, help=f"{kinds}, or preset:NAME (keras-deeplab presets)")


def add_output_stride_option(parser: argparse.ArgumentParser, help: str, default: int | None = None) -> None:
    """`--output-stride 8|16|32`."""
    parser.add_argument("--output-stride", type=int, default=default, choices=constants.OUTPUT_STRIDES, help=help)


def add_fit_to_option(parser: argparse.ArgumentParser) -> None:
    """`--fit-to SIZE`: the official export's input handling (`inference.class_probabilities`)."""
    parser.add_argument(
        "--fit-to",
        type=positive_int,
        metavar="SIZE",
        help="as Google's exported graphs: longer side to SIZE, pad to SIZExSIZE with the mean pixel, predict, "
        "crop, class map back to the photo (nearest); 513 for the published frozen graphs",
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """`--precision`: the arithmetic a model runs in."""
    parser.add_argument(
        "--precision", choices=constants.PRECISIONS, default="float32", help="arithmetic (auto: bfloat16 where native)"
    )


def add_crf_options(parser: argparse.ArgumentParser, help: str) -> None:
    """`--crf` (what the CRF does for this command: `help`) and `--crf-param NAME=VALUE`; read by `crf_settings`."""
    group = parser.add_argument_group("fully connected CRF")
    group.add_argument("--crf", action="store_true", help=help)
    group.add_argument(
        "--crf-param",
        type=crf_parameter,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a CRF parameter other than its default ({', '.join(constants.DENSE_CRF)})",
    )


def add_source_options(parser: argparse.ArgumentParser, split_default: str | None = None) -> None:
    """Where a dataset split is read from: `--format`, `--root`, `--split` (required unless `split_default`) and
    each format's own options; `source_options(args)` gives the latter to `pipelines.open_source`."""
    group = parser.add_argument_group("dataset")
    group.add_argument("--format", required=True, choices=FORMATS, help="how the dataset is stored")
    group.add_argument("--root", help="dataset folder (TFDS: data_dir; not used by synthetic)")
    group.add_argument(
        "--split",
        required=split_default is None,
        default=split_default,
        help="e.g. train, val, train_aug, training, all" + (f" (default {split_default})" if split_default else ""),
    )
    group.add_argument("--tfds-name", help="TFDS dataset: oxford_iiit_pet, scene_parse150, cityscapes")
    group.add_argument("--num-examples", type=int, help="synthetic: examples to generate")
    group.add_argument("--image-size", type=int, help="synthetic: image side in pixels")
    group.add_argument("--seed", type=int, help="synthetic: generator seed")
    group.add_argument("--num-classes", type=int, help="tfrecord: classes of shards that have no .json")


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The format options of `add_source_options` that were given, as `pipelines.open_source` keywords."""
    given = {
        "dataset": args.tfds_name,
        "num_examples": args.num_examples,
        "image_size": args.image_size,
        "seed": args.seed,
        "num_classes": args.num_classes,
    }
    return {key: value for key, value in given.items() if value is not None}


def dataset_descriptor(text: str) -> DatasetDescriptor:
    """--dataset: a known dataset (voc, cityscapes, ade20k, oxford_iiit_pet, or an alias), or a dataset's own class
    list: a `class_names.txt` / `classes.txt` file (line i names class id i) or the dataset folder holding one. A
    known name wins over a folder of that name."""
    from keras_deeplab.descriptors import descriptor_for
    from pipelines.errors import DataError
    from pipelines.lists import class_list_descriptor

    try:
        return descriptor_for(text)
    except ValueError as error:
        if not os.path.exists(text):
            raise argparse.ArgumentTypeError(f"{error}; nor is it a class list file or a dataset folder") from error
    try:
        return class_list_descriptor(text)
    except DataError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_dataset_option(parser: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """`--dataset NAME_OR_PATH`: the class names and colours of the pictures (`dataset_descriptor`)."""
    parser.add_argument(
        "--dataset",
        type=dataset_descriptor,
        default=default,
        metavar="NAME_OR_PATH",
        help=f"{help}: voc, cityscapes, ade20k, oxford_iiit_pet, or a class_names.txt / classes.txt (or its folder)",
    )


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """`--no-progress`, for a command that shows a progress bar."""
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (none either when stdout is not a terminal)"
    )


def progress_bar_wanted(args: argparse.Namespace) -> bool:
    """False for `--no-progress`, and when stdout is not a terminal: Keras' bar redraws itself with backspaces and
    carriage returns, which end up in a redirected file or pipe."""
    return not args.no_progress and sys.stdout.isatty()
