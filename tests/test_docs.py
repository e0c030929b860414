"""The README and the manual in docs/ say what the code does, and their commands run as written.

- `mkdocs build --strict` builds the site (a broken link, anchor or page fails it); the README stays a front door.
- Every `keras-deeplab COMMAND ... --option` and `python benchmarks/X.py ... --option` written in the README or
  docs/ names an option that command has; every other `--option` in code names one of some command, script or
  tool the pages use.
- docs/cli.md's reference equals what scripts/cli_reference.py makes from the parser.
- Blocks marked `<!-- docs-test: KIND ... -->` (invisible on GitHub and in the site) are checked as written:
  `run` runs each command line in bash (after the OLD=NEW substitutions the marker lists, which the text beside
  the block states), `run python` runs the snippet, `voc-stages` loads the VOC stages' recipes with their `--set`
  values, `recipe NAME` / `recipe-command NAME` load a recipe written in the docs with its command's `--set`.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from keras_deeplab.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import cli_reference  # noqa: E402

DOCS = os.path.join(ROOT, "docs")
PAGES = ["README.md", *sorted(f"docs/{name}" for name in os.listdir(DOCS) if name.endswith(".md"))]
README_MAX_LINES = 250
BIN = os.path.dirname(sys.executable)
# Options of the other tools the pages show (pip, docker, curl, make, kubectl, mkdocs, pytest).
OTHER_TOOLS_OPTIONS = {"--rm", "--build-arg", "--gpus", "--site-dir", "--strict", "--upgrade", "--quiet"}
# What the pages write for "any command", "any option", "any benchmark"
PLACEHOLDERS = {"COMMAND", "COMMAND:", "--option", "benchmarks/X.py"}
MARKER = re.compile(r"<!-- docs-test: (.*?) -->\n```(\w*)\n(.*?)\n```", re.S)
FENCE = re.compile(r"```\w*\n(.*?)\n```", re.S)
INLINE = re.compile(r"`([^`\n]+)`")
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf8") as handle:
        return handle.read()


def blocks(kind: str) -> list[tuple[str, list[str], str, str]]:
    """(page, the marker's words after KIND, the block's language, its text) of every `docs-test: KIND` block."""
    found = []
    for page in PAGES:
        for marker, language, text in MARKER.findall(read(page)):
            words = marker.split()
            if words[0] == kind:
                found.append((page, words[1:], language, text))
    return found


def command_lines(text: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = text.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def substituted(text: str, words: list[str]) -> str:
    for word in words:
        if "=" in word:
            old, new = word.split("=", 1)
            text = text.replace(old, new)
    return text


def code_texts(page: str) -> list[str]:
    """Every code block line (continuations joined) and inline code span of a page."""
    text = read(page)
    lines = [line for block in FENCE.findall(text) for line in command_lines(block)]
    return lines + INLINE.findall(FENCE.sub("", text))


def cli_options() -> dict[str, set[str]]:
    """Options by command ("predict", "data check", ...), the common ones included."""
    options = {}
    for name, parser in cli_reference.commands().items():
        options[name] = {option for action in parser._actions for option in action.option_strings}
    return options


def script_options(path: str) -> set[str]:
    """The options a benchmark or script declares (its add_argument calls, and peers' when it uses them)."""
    with open(path, encoding="utf8") as handle:
        tree = ast.parse(handle.read())
    options = {"--help"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            options |= {arg.value for arg in node.args if isinstance(arg, ast.Constant) and str(arg.value)[:2] == "--"}
        if isinstance(node, ast.Attribute) and node.attr == "add_model_arguments" and "peers" not in path:
            options |= script_options(os.path.join(ROOT, "benchmarks", "peers.py"))
    return options


def invocations(code: str) -> list[tuple[str, str]]:
    """(program, rest of its command) for each `keras-deeplab ...` / `python X.py ...` in a line of code; each
    `$(...)` is its own invocation, and a command ends at a comment, `;`, `&&` or a shell pipe."""
    pieces = [code]
    while SUBSTITUTION.search(pieces[0]):
        pieces += SUBSTITUTION.findall(pieces[0])
        pieces[0] = SUBSTITUTION.sub("X", pieces[0])
    found = []
    for piece in pieces:
        for command in re.split(r"\s(?:#|\||&&|;)\s|\s#\s?|;", piece):
            match = re.search(r"(keras-deeplab(?=\s)|python (?:benchmarks|scripts)/\w+\.py)(.*)", command)
            if match:
                found.append((match.group(1), match.group(2)))
    return found


def documented_option_errors() -> list[str]:
    commands = cli_options()
    top = {option for action in build_parser()._actions for option in action.option_strings}
    errors = []
    known_everywhere = set(top) | OTHER_TOOLS_OPTIONS
    for options in commands.values():
        known_everywhere |= options
    for folder in ("benchmarks", "scripts"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if name.endswith(".py"):
                known_everywhere |= script_options(os.path.join(ROOT, folder, name))
    for page in PAGES:
        for code in code_texts(page):
            for program, rest in invocations(code):
                words = rest.split()
                if program == "keras-deeplab":
                    name = next((word for word in words if not word.startswith("-")), None)
                    if name == "data":
                        name = f"data {words[words.index('data') + 1]}" if len(words) > 1 else name
                    if name not in commands:
                        if name is not None and name not in PLACEHOLDERS:
                            errors.append(f"{page}: `keras-deeplab {rest.strip()}`: no command {name!r}")
                        continue
                    allowed = commands[name] | top
                else:
                    path = os.path.join(ROOT, program.split()[1])
                    if program.split()[1] in PLACEHOLDERS:
                        continue
                    if not os.path.isfile(path):
                        errors.append(f"{page}: `{program}`: no such file")
                        continue
                    allowed = script_options(path)
                model = re.search(r"--model\s+(\S+)", rest)
                one_size = model and (".tflite" in model.group(1) or "--published" in code)  # refuses --scales
                if program == "keras-deeplab" and name == "predict" and one_size and "--scales" in rest:
                    errors.append(f"{page}: `{code.strip()}`: predict refuses --scales with a .tflite model")
                for option in OPTION.findall(rest):
                    if option not in allowed | PLACEHOLDERS:
                        errors.append(f"{page}: `{program} {rest.strip()}`: {option} is not an option of it")
            for option in OPTION.findall(code):
                if option not in known_everywhere | PLACEHOLDERS:
                    errors.append(f"{page}: `{code.strip()}`: {option} is no option of any command or script")
    return errors


def test_mkdocs_builds_the_manual_strictly(tmp_path):
    """A missing page, a broken link or anchor, a page left out of the navigation: each fails the build."""
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "cli" / "index.html").is_file()


def test_readme_is_a_front_door():
    readme = read("README.md")
    assert len(readme.splitlines()) <= README_MAX_LINES
    for section in ("## Two commands", "## Install", "## Segment a photo", "## Fine-tune", "## Serve", "## Convert"):
        assert section in readme
    assert 'pip install "keras-deeplab[cpu]"' not in readme.replace("Once the package is on PyPI", "")
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert os.path.isfile(os.path.join(ROOT, link)), link


def test_every_documented_option_exists():
    assert documented_option_errors() == []


def test_the_option_check_sees_mistakes():
    """The checker itself: a wrong option, command or one hidden in $(...) is reported."""
    assert invocations('keras-deeplab predict p.jpg --model "$(keras-deeplab info --published)" --out m/') == [
        ("keras-deeplab", ' predict p.jpg --model "X" --out m/'),
        ("keras-deeplab", " info --published"),
    ]
    commands = cli_options()
    assert "--scales" in commands["predict"] and "--published" in commands["info"]
    assert "--published" not in commands["predict"]
    assert "--root" in commands["data check"]
    assert "--runs" in script_options(os.path.join(ROOT, "benchmarks", "winograd.py"))
    assert "--size" in script_options(os.path.join(ROOT, "benchmarks", "forward.py"))  # peers' options


def test_cli_reference_is_current():
    page = read("docs/cli.md")
    assert cli_reference.page_with_reference(page) == page, "run python scripts/cli_reference.py"
    for name, parser in cli_reference.commands().items():
        assert f"### keras-deeplab {name}\n" in page
        for action in parser._actions:
            if action.option_strings and action.help != argparse.SUPPRESS:
                assert f"`{action.option_strings[-1]}`" in page


def test_marked_command_lines_run_as_written(tmp_path):
    """The cheap commands (the shipped model's path, a photo to a mask with it) in a fresh folder."""
    assert shutil.which("bash")
    shell = [(page, words, text) for page, words, language, text in blocks("run") if language == "sh"]
    assert len(shell) >= 3
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    commands = {}  # the README and the manual show some lines twice: run each once
    for page, words, text in shell:
        for line in command_lines(text):
            pairs = [f"{old}={os.path.join(ROOT, new)}" for old, new in _pairs(words)]
            commands.setdefault(substituted(line, pairs), page)
    for command, page in commands.items():
        completed = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120
        )
        assert completed.returncode == 0, f"{page}: {command}\n{completed.stdout}{completed.stderr}"
        if "--out masks/" in command:
            stem = os.path.splitext(os.path.basename(command.split()[2]))[0]
            assert (tmp_path / "masks" / f"{stem}.png").is_file()
            assert (tmp_path / "masks" / f"{stem}_overlay.jpg").is_file()
        if command.strip() == "keras-deeplab info --published":
            assert os.path.isfile(completed.stdout.strip()), completed.stdout


def _pairs(words: list[str]) -> list[tuple[str, str]]:
    return [tuple(word.split("=", 1)) for word in words if "=" in word]


def test_marked_python_snippets_run(tmp_path):
    """Every marked snippet, self-contained, in one process (one TensorFlow import), each in its own namespace."""
    python = [substituted(text, words) for _, words, language, text in blocks("run") if language == "python"]
    python = list(dict.fromkeys(python))  # the README shows the manual's first snippet: run it once
    assert len(python) >= 3
    program = "\n".join(
        f"exec(compile({snippet!r}, 'snippet {index}', 'exec'), {{}})" for index, snippet in enumerate(python)
    )
    completed = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "bird" in completed.stdout


def _train_overrides(line: str) -> tuple[str, list[str]]:
    words = shlex.split(line)
    recipe = words[words.index("--recipe") + 1]
    overrides = [words[index + 1] for index, word in enumerate(words) if word == "--set"]
    return recipe, overrides


def test_voc_stages_share_their_data_and_chain():
    """The second stage is told the first stage's data.root, and starts from the first stage's run folder."""
    from keras_deeplab.recipe import load_recipe

    stages = [text for _, _, _, text in blocks("voc-stages")]
    assert len(stages) >= 2
    for text in stages:
        trains = [line for line in command_lines(text) if line.split()[:2] == ["keras-deeplab", "train"]]
        first, second = (load_recipe(*_train_overrides(line.split("#")[0])) for line in trains)
        assert first.name == "voc_resnet101_os16" and second.name == "voc_resnet101_os8_finetune"
        assert second.data.root == first.data.root == "VOCdevkit/VOC2012"
        assert second.train.init_checkpoint == first.run_dir
        assert first.model["backbone_weights"] == "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"


def test_fine_tuning_recipe_fits_the_published_model(tmp_path):
    """The docs' recipe loads with its command's --set, and its model section is the shipped model's
    architecture (all but the classes), so train.init_checkpoint can load it."""
    from keras_deeplab.files import PUBLISHED_MODEL
    from keras_deeplab.recipe import load_recipe

    recipes = {words[0]: text for _, words, _, text in blocks("recipe")}
    commands = [(words[0], text) for _, words, _, text in blocks("recipe-command")]
    assert recipes and len(commands) >= 2
    published = str(PUBLISHED_MODEL)
    for name, text in commands:
        (tmp_path / name).write_text(recipes[name])
        trains = [line for line in command_lines(text) if line.split()[:2] == ["keras-deeplab", "train"]]
        assert trains
        for line in trains:
            line = line.replace('"$(keras-deeplab info --published)"', published)
            recipe_name, overrides = _train_overrides(line)
            recipe = load_recipe(str(tmp_path / recipe_name), overrides)
            assert recipe.train.init_checkpoint == published
            assert recipe.data.format == "folder"
    recipe = load_recipe(str(tmp_path / "my_recipe.json"))
    from keras_deeplab.importing import import_weights

    config = import_weights(PUBLISHED_MODEL).build_config
    for key, value in recipe.model.items():
        if key != "num_classes":
            assert config[key] == value, key
    assert json.loads(recipes["my_recipe.json"])["model"]["num_classes"] != config["num_classes"]


def test_winograd_help_does_not_run_the_benchmark():
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "winograd.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0 and "usage:" in completed.stdout
    assert "GFLOP/s" not in completed.stdout and "CPU:" not in completed.stdout


def test_shipped_model_path_needs_no_tensorflow():
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keras_deeplab.cli", "info", "--published"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0
    assert completed.stdout.strip().endswith(os.path.join("assets", "published", "deeplabv3_257_mv_gpu.tflite"))
    assert " tensorflow\n" not in completed.stderr  # -X importtime lists every module imported
