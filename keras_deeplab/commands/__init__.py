"""Subcommands of `keras-deeplab` that live in their own modules (see keras_deeplab.cli.COMMAND_MODULES)."""
