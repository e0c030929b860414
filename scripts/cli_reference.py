"""The command-line reference of docs/cli.md, made from the parser itself so that the page cannot drift.

`python scripts/cli_reference.py` rewrites the part of docs/cli.md between its two markers; `--check` only says
whether it is current (exit status 1 when not). tests/test_docs.py checks it. Building the parser imports no
TensorFlow, so this takes well under a second.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from keras_deeplab.cli import build_parser  # noqa: E402

PAGE = os.path.join(ROOT, "docs", "cli.md")
BEGIN = "<!-- cli-reference: begin (made by scripts/cli_reference.py) -->"
END = "<!-- cli-reference: end -->"
COMMON = ("--verbose", "--debug")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name ({} when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every runnable command, "data check" style for nested ones, in the order `keras-deeplab --help` lists them."""
    found = {}
    for name, parser in subcommands(build_parser()).items():
        if parser in found.values():  # an alias (convert-tflite of convert)
            continue
        nested = subcommands(parser)
        if nested:
            found.update({f"{name} {sub}": subparser for sub, subparser in nested.items()})
        else:
            found[name] = parser
    return found


def help_lines(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each subcommand's one-line help, by name (nested ones as "data check")."""
    lines = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                lines[choice.dest] = choice.help or ""
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _argument(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices:
        text = "{" + ",".join(map(str, action.choices)) + "}"
        return text + (" ..." if action.nargs in ("+", "*") else "")
    metavar = action.metavar or action.dest.upper()
    return metavar + (" ..." if action.nargs in ("+", "*") else "")


def _meaning(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    default = action.default
    if action.required:
        text += " (required)"
    elif default not in (None, False, [], argparse.SUPPRESS) and "default" not in text and action.nargs != 0:
        text += f" (default {', '.join(map(str, default)) if isinstance(default, (list, tuple)) else default})"
    return text.strip()


def reference() -> str:
    """The markdown of every command's arguments and options (the common --verbose and --debug once)."""
    top = build_parser()
    summaries = help_lines(top)
    for name, parser in subcommands(top).items():
        summaries.update({f"{name} {sub}": text for sub, text in help_lines(parser).items()})
    out = [
        "Every command also takes `--verbose` (show TensorFlow's log lines) and `--debug` (a traceback on errors).",
        "",
    ]
    for name, parser in commands().items():
        out += [f"### keras-deeplab {name}", "", f"{summaries.get(name, '')}.".replace("..", "."), ""]
        rows = []
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if action.option_strings and action.option_strings[0] in COMMON:
                continue
            if action.option_strings:
                names = ", ".join(f"`{option}`" for option in action.option_strings)
            else:
                names = f"`{action.metavar or action.dest}`" + (" ..." if action.nargs in ("+", "*") else "")
            argument = _argument(action)
            rows.append(f"| {names} | {f'`{argument}`' if argument else ''} | {_cell(_meaning(parser, action))} |")
        if rows:
            out += ["| argument or option | value | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(out).rstrip("\n") + "\n"


def page_with_reference(page: str) -> str:
    """`page` with the text between the markers replaced by the current reference."""
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{PAGE}: the markers {BEGIN!r} and {END!r} are missing")
    return f"{head}{BEGIN}\n\n{reference()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that docs/cli.md is current")
    args = parser.parse_args()
    with open(PAGE, encoding="utf8") as handle:
        page = handle.read()
    wanted = page_with_reference(page)
    if args.check:
        if wanted != page:
            print(f"{PAGE} is out of date: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    if wanted != page:
        with open(PAGE, "w", encoding="utf8") as handle:
            handle.write(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
