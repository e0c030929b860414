"""Argument types shared by several subcommands (argparse `type=` functions; no TensorFlow)."""

from __future__ import annotations

import argparse

from keras_deeplab.scales import parse_scales


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
