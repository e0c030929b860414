"""`keras-deeplab`: one command whose subcommands are thin wrappers over library functions.

Each module in COMMAND_MODULES has `register(subparsers)`, which adds its subcommand and sets `run`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "keras_deeplab.info",
    "keras_deeplab.training",
    "keras_deeplab.evaluation",
    "pipelines.commands",
    "serving.export",
    "serving.server",
    "serving.client",
    "serving.predict",
    "serving.tflite",
    "keras_deeplab.demo",
    "keras_deeplab.commands.import_weights",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the subcommand, return its exit status."""
    parser = argparse.ArgumentParser(
        prog="keras-deeplab", description="DeepLabv3 / DeepLabv3+ semantic segmentation in Keras 3."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
