"""The image scales of multi-scale inference, checked in one place for every caller (recipes, evaluation,
inference, the command line)."""

from __future__ import annotations

from collections.abc import Sequence


def check_scales(scales: Sequence[float], what: str = "scales") -> tuple[float, ...]:
    """`scales` as a tuple of floats; ValueError naming `what` unless it is a non-empty list of positive numbers."""
    try:
        values = tuple(float(scale) for scale in scales)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be numbers, got {scales!r}") from error
    if not values or min(values) <= 0:
        raise ValueError(f"{what} must be a non-empty list of positive numbers, got {list(scales)!r}")
    return values


def parse_scales(text: str) -> tuple[float, ...]:
    """Comma-separated scales ("0.5,0.75,1") checked as `check_scales` does."""
    try:
        values = [float(value) for value in text.split(",") if value.strip()]
    except ValueError as error:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from error
    return check_scales(values, f"scales {text!r}")
