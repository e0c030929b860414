"""Training recipes: JSON files of sections (model, data, train, checkpoint, eval, distribution, log), checked.

A recipe is named (one of the files shipped in `keras_deeplab/recipes/`) or given as a path. Every key is
checked against the sections below, with `--set section.key=value` overrides applied first; a missing or
corrupt file, an unknown key or a value of the wrong type raises RecipeError naming the file and the key.
The `model` section is passed to `build_model` as keyword arguments, so any `build_model` option is a key.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import types
import typing
from collections.abc import Sequence
from importlib import resources
from typing import Any

from keras_deeplab import constants
from keras_deeplab.backbones import all_specs
from keras_deeplab.losses import check_hard_pixel_fraction
from keras_deeplab.model import build_model
from keras_deeplab.scales import check_scales

MODEL_KEYS_SET_BY_TRAINING = ("input_shape", "name", "sync_batch_norm")


class RecipeError(ValueError):
    """A recipe file, key or value is missing or wrong; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Where the examples come from (`pipelines.open_source`) and how training crops are made."""

    format: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    eval_split: str = "val"
    eval_format: str | None = None  # None: `format` (e.g. "voc" masks for val beside "voc_aug" for train_aug)
    options: dict = dataclasses.field(default_factory=dict)  # extra keyword arguments of open_source
    crop_size: int = constants.CROP_SIZE
    min_scale: float = constants.MIN_SCALE
    max_scale: float = constants.MAX_SCALE
    scale_step: float | None = constants.SCALE_STEP
    flip: bool = True
    cache: bool = False


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The optimisation: SGD with momentum, poly (or step) learning rate, L2 weight decay on conv kernels.

    `lr_schedule` "poly": (learning_rate - end) * (1 - step / steps) ** lr_power + end (v2, v3); "step":
    learning_rate * lr_step_factor ** floor(step / lr_step_every) (v1). `classifier_lr_multiplier` scales the
    learning rate of the class-score layers ("logits", v1/v2's fc8 "logits_1".."logits_4"), as v1/v2's lr_mult 10.
    """

    steps: int = 30000
    global_batch_size: int = 16
    learning_rate: float = 0.007
    lr_schedule: str = "poly"
    end_learning_rate: float = 0.0
    lr_power: float = 0.9
    lr_step_every: int | None = None
    lr_step_factor: float = 0.1
    classifier_lr_multiplier: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Batch norm in inference mode (its statistics and scale kept; research/deeplab's fine_tune_batch_norm=False).
    # None: frozen when training starts from init_checkpoint (a converged network), trained otherwise. Layers whose
    # statistics were folded into the convs (published TFLite files) stay frozen whatever this says.
    freeze_batch_norm: bool | None = None
    # A .keras file, a run folder or a published DeepLab (keras_deeplab.load_model), loaded by layer name; of
    # another number of classes, everything but the logits (fine-tuning a published model on one's own classes).
    init_checkpoint: str | None = None
    class_weights: list[float] | None = None
    hard_pixel_fraction: float = 1.0
    precision: str = "float32"  # constants.PRECISIONS: float32, mixed (GPU float16 / CPU bfloat16), auto
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
    every_steps: int = 1000
    keep: int = 3


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Evaluation on `data.eval_split` at the end of training (and every `every_steps` when above 0)."""

    every_steps: int = 0
    output_stride: int | None = None  # None: the training output stride
    scales: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    flip: bool = False
    max_examples: int | None = None  # None: the whole split


@dataclasses.dataclass(frozen=True)
class DistributionSettings:
    """ "auto": MultiWorkerMirroredStrategy when TF_CONFIG names several workers, else MirroredStrategy over
    `devices` (None: every visible GPU, or the CPU when there is none)."""

    strategy: str = "auto"
    devices: list[str] | None = None


@dataclasses.dataclass(frozen=True)
class LogSettings:
    every_steps: int = 10  # TensorBoard scalars (loss, learning rate)
    image_every_steps: int = 200  # TensorBoard images (input, truth, prediction); 0: never
    progress: bool = True


SECTIONS = {
    "data": DataSettings,
    "train": TrainSettings,
    "checkpoint": CheckpointSettings,
    "eval": EvalSettings,
    "distribution": DistributionSettings,
    "log": LogSettings,
}
CHOICES = {
    ("train", "precision"): constants.PRECISIONS,
    ("train", "lr_schedule"): ("poly", "step"),
    ("distribution", "strategy"): ("auto", "mirrored", "multi_worker"),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A checked recipe. `model` holds `build_model` keyword arguments; `source` is where it was read."""

    name: str
    description: str
    run_dir: str
    model: dict
    data: DataSettings
    train: TrainSettings
    checkpoint: CheckpointSettings
    eval: EvalSettings
    distribution: DistributionSettings
    log: LogSettings
    source: str = ""

    @property
    def num_classes(self) -> int:
        """model.num_classes, or build_model's default when the recipe does not say."""
        return self.model.get("num_classes", inspect.signature(build_model).parameters["num_classes"].default)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready data (what `run_dir/recipe.json` holds); `source` left out."""
        values = dataclasses.asdict(self)
        values.pop("source")
        return values


def available_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    folder = resources.files("keras_deeplab").joinpath("recipes")
    return sorted(entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json"))


def load_recipe(name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe by shipped name (e.g. "demo") or file path, apply "section.key=value" overrides, check it.

    Override values are JSON ("8", "0.01", "true", "[1.0, 1.5]", "null") or else taken as strings.
    """
    path = os.fspath(name_or_path)
    shipped = path.removesuffix(".json")
    if os.path.isfile(path):
        with open(path, encoding="utf8") as handle:
            text = handle.read()
    elif shipped in available_recipes():
        text = resources.files("keras_deeplab").joinpath("recipes", f"{shipped}.json").read_text(encoding="utf8")
        path = f"keras_deeplab/recipes/{shipped}.json"
    else:
        raise RecipeError(
            f"{path}: no such recipe file, and not a shipped recipe (shipped: {', '.join(available_recipes())})"
        )
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecipeError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: expected a JSON object of sections, got {type(values).__name__}")
    for override in overrides:
        apply_override(values, override, path)
    return recipe_from_dict(values, path)


def apply_override(values: dict, override: str, path: str) -> None:
    """Set `values[section][key]` from "section.key=value" (or a top-level "key=value"), in place."""
    key, separator, text = override.partition("=")
    if not separator or not key:
        raise RecipeError(f"--set {override!r}: expected section.key=value")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    *sections, field = key.split(".")
    target = values
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise RecipeError(f"{path}: --set {key}: '{section}' is not a section")
    target[field] = value


def recipe_from_dict(values: dict[str, Any], path: str = "<recipe>") -> Recipe:
    """Check every section and key of `values` (a parsed recipe) and build the Recipe."""
    known = {"name", "description", "run_dir", "model", *SECTIONS}
    for key in values:
        if key not in known:
            raise RecipeError(f"{path}: unknown key '{key}' (expected one of: {', '.join(sorted(known))})")
    name = values.get("name", os.path.basename(path).removesuffix(".json"))
    run_dir = values.get("run_dir", os.path.join("runs", str(name)))
    description = values.get("description", "")
    for key, value in (("name", name), ("run_dir", run_dir), ("description", description or "-")):
        if not isinstance(value, str) or not value:
            raise RecipeError(f"{path}: '{key}' must be a non-empty string, got {value!r}")
    sections = {
        section: _section(settings_class, values.get(section, {}), section, path)
        for section, settings_class in SECTIONS.items()
    }
    recipe = Recipe(
        name=name,
        description=description,
        run_dir=run_dir,
        model=_model_section(values.get("model", {}), path),
        source=path,
        **sections,
    )
    _check_values(recipe, path)
    return recipe


def model_section(build_config: dict[str, Any]) -> dict[str, Any]:
    """A recipe's `model` section for the network of `build_config` (a DeepLab's): every `build_model` argument
    but those training sets itself (MODEL_KEYS_SET_BY_TRAINING)."""
    return {key: value for key, value in build_config.items() if key not in MODEL_KEYS_SET_BY_TRAINING}


def model_section_text(build_config: dict[str, Any]) -> str:
    """`model_section` as the `"model": {...}` member that pastes into a recipe's JSON object."""
    return '"model": ' + json.dumps(model_section(build_config), indent=2)


def _model_section(model: Any, path: str) -> dict[str, Any]:
    if not isinstance(model, dict):
        raise RecipeError(f"{path}: 'model' must be an object of build_model arguments, got {model!r}")
    parameters = inspect.signature(build_model).parameters.values()
    accepted = [
        *(p.name for p in parameters if p.kind != p.VAR_KEYWORD and p.name not in MODEL_KEYS_SET_BY_TRAINING),
        *dict.fromkeys(option for spec in all_specs() for option in spec.options),
    ]
    for key in model:
        if key in MODEL_KEYS_SET_BY_TRAINING:
            raise RecipeError(f"{path}: model.{key} is set by training itself and cannot be given in a recipe")
        if key not in accepted:
            raise RecipeError(f"{path}: unknown key 'model.{key}' (build_model accepts: {', '.join(accepted)})")
    return dict(model)


def _section(settings_class: type, values: Any, section: str, path: str):
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: '{section}' must be an object, got {values!r}")
    hints = typing.get_type_hints(settings_class)
    fields = [field.name for field in dataclasses.fields(settings_class)]
    for key, value in values.items():
        if key not in fields:
            raise RecipeError(f"{path}: unknown key '{section}.{key}' (expected one of: {', '.join(fields)})")
        if not _has_type(value, hints[key]):
            raise RecipeError(f"{path}: '{section}.{key}' must be {_type_name(hints[key])}, got {value!r}")
        choices = CHOICES.get((section, key))
        if choices and value not in choices:
            raise RecipeError(f"{path}: '{section}.{key}' must be one of {choices}, got {value!r}")
    return settings_class(**values)


def _has_type(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in (types.UnionType, typing.Union):
        return any(_has_type(value, option) for option in typing.get_args(expected))
    if origin is list:
        (item,) = typing.get_args(expected)
        return isinstance(value, list) and all(_has_type(entry, item) for entry in value)
    if expected is type(None):
        return value is None
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(option) for option in typing.get_args(expected))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(expected)[0])}"
    return {type(None): "null", float: "a number", int: "an integer", bool: "true or false", str: "a string"}.get(
        expected, expected.__name__
    )


def _check_values(recipe: Recipe, path: str) -> None:
    positive = {
        "train.steps": recipe.train.steps,
        "train.global_batch_size": recipe.train.global_batch_size,
        "train.learning_rate": recipe.train.learning_rate,
        "train.lr_step_factor": recipe.train.lr_step_factor,
        "train.classifier_lr_multiplier": recipe.train.classifier_lr_multiplier,
        "data.crop_size": recipe.data.crop_size,
        "data.min_scale": recipe.data.min_scale,
        "checkpoint.every_steps": recipe.checkpoint.every_steps,
        "checkpoint.keep": recipe.checkpoint.keep,
    }
    for key, value in positive.items():
        if value <= 0:
            raise RecipeError(f"{path}: '{key}' must be positive, got {value}")
    if recipe.train.lr_schedule == "step" and not (recipe.train.lr_step_every or 0) > 0:
        raise RecipeError(f"{path}: 'train.lr_step_every' must be a positive integer with lr_schedule \"step\"")
    if recipe.data.max_scale < recipe.data.min_scale:
        raise RecipeError(f"{path}: 'data.max_scale' ({recipe.data.max_scale}) is below 'data.min_scale'")
    try:
        check_hard_pixel_fraction(recipe.train.hard_pixel_fraction, "'train.hard_pixel_fraction'")
        check_scales(recipe.eval.scales, "'eval.scales'")
    except ValueError as error:
        raise RecipeError(f"{path}: {error}") from error
    if recipe.eval.output_stride is not None and recipe.eval.output_stride not in constants.OUTPUT_STRIDES:
        raise RecipeError(f"{path}: 'eval.output_stride' must be one of {constants.OUTPUT_STRIDES} or null")
    weights = recipe.train.class_weights
    if weights is not None and len(weights) != recipe.num_classes:
        raise RecipeError(f"{path}: 'train.class_weights' has {len(weights)} entries for {recipe.num_classes} classes")
