"""Argument types shared by several subcommands (argparse `type=` functions; no TensorFlow)."""

from __future__ import annotations

import argparse
import sys

from keras_deeplab import constants
from keras_deeplab.scales import parse_scales

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


def crf_grid(text: str) -> tuple[str, tuple[float, ...]]:
    """`--crf-grid bi_w=3,4,5`: one keyword of `crf.dense_crf` and the values to try."""
    name, _, values = text.partition("=")
    parsed = [crf_parameter(f"{name}={value}")[1] for value in values.split(",") if value.strip()]
    if not parsed:
        raise argparse.ArgumentTypeError(f"{name}: expected comma-separated values, got {text!r}")
    return name, tuple(parsed)


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """`--no-progress`, for a command that shows a progress bar."""
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (none either when stdout is not a terminal)"
    )


def progress_bar_wanted(args: argparse.Namespace) -> bool:
    """False for `--no-progress`, and when stdout is not a terminal: Keras' bar redraws itself with backspaces and
    carriage returns, which end up in a redirected file or pipe."""
    return not args.no_progress and sys.stdout.isatty()
