"""`keras-deeplab`: one command whose subcommands (keras_deeplab/commands/) are thin wrappers over the library.

Building the parser imports no TensorFlow, so `--help` answers at once. TensorFlow's, absl's and LiteRT's log
lines are silenced unless `--verbose` (or KERAS_DEEPLAB_VERBOSE=1) asks for them (keras_deeplab/quiet.py). A
user's mistake (a missing file, a bad value, a recipe key) ends in one line on stderr naming it, exit status 1; a
traceback only with `--debug`. Exit statuses: 0 done, 1 failed (or a check found problems), 2 bad usage
(argparse), 130 interrupted, 141 stdout closed by its reader (`... --json | head`, as a process stopped by
SIGPIPE shows in a shell; nothing printed).
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Sequence

from keras_deeplab import quiet
from keras_deeplab.commands import (
    client,
    convert,
    data,
    demo,
    evaluate,
    export,
    import_weights,
    info,
    predict,
    presets,
    serve,
    train,
)

# In the order of `--help`; each module's register() adds its subcommand.
COMMANDS = (
    info,
    train,
    evaluate,
    data,
    export,
    serve,
    client,
    predict,
    convert,
    demo,
    import_weights,
    presets,
)
VERBOSE_VARIABLE = "KERAS_DEEPLAB_VERBOSE"
# What a user's mistake raises: ValueError (bad values, recipes, data, weight and model files) and OSError
# (missing or unwritable files, ports in use, a server that does not answer, a full disk), FloatingPointError
# (a training loss that is not a number), ImportError (a part the install lacks: the CRF's C++ extension where
# no compiler was found; its message says how to get it).
USER_ERRORS = (ValueError, OSError, FloatingPointError, ImportError)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand registered, nothing heavy imported."""
    parser = argparse.ArgumentParser(
        prog="keras-deeplab", description="DeepLabv3 / DeepLabv3+ semantic segmentation in Keras 3."
    )
    _add_common_options(parser, False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    for subparser in dict.fromkeys(subparsers.choices.values()):  # an alias names its command's parser again
        _add_common_options(subparser, argparse.SUPPRESS)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--verbose", action="store_true", default=default, help="show TensorFlow's log lines")
    parser.add_argument("--debug", action="store_true", default=default, help="show a traceback on errors")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the subcommand, return its exit status."""
    args = build_parser().parse_args(argv)
    verbose = args.verbose or os.environ.get(VERBOSE_VARIABLE, "") not in ("", "0")
    if not verbose:
        # Read when TensorFlow is first imported. 3 silences its C++ error lines too: each failure reaches the
        # user as the Python exception printed below (a lost worker of a cluster, for one, would otherwise add a
        # dozen lines of gRPC detail to the one line that says what happened and what to do).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # and the lines TF_CPP_MIN_LOG_LEVEL does not reach (absl's at import, LiteRT's XNNPACK line)
        quiet.enable()
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError as error:
        if not _stdout_closed():  # a socket's broken pipe: the user's to know
            return _user_error(args, error)
        # The reader of stdout went away: stop quietly, as `cat file | head` does. stdout goes to /dev/null so that
        # the interpreter's last flush of it fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except USER_ERRORS as error:
        return _user_error(args, error)
    except KeyboardInterrupt:
        print(f"keras-deeplab {args.command}: interrupted", file=sys.stderr)
        return 130


def _user_error(args: argparse.Namespace, error: Exception) -> int:
    """One line naming the user's mistake (a traceback with `--debug`), exit status 1."""
    if args.debug:
        raise error
    print(f"keras-deeplab {args.command}: error: {error}", file=sys.stderr)
    if getattr(error, "exit_at_once", False):  # a process whose teardown would hang (a lost worker)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 1


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (poll reports an error on its end; False where the
    platform has no poll)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
