"""Recipes: the shipped files carry the papers' numbers; every bad file, key or value is named in the error."""

import json
import os

import pytest

from keras_deeplab.recipe import RecipeError, available_recipes, load_recipe


def write(tmp_path, values, name="recipe.json"):
    path = tmp_path / name
    path.write_text(json.dumps(values) if not isinstance(values, str) else values)
    return str(path)


def test_shipped_recipes_load_and_carry_the_papers_settings():
    shipped = {
        "demo",
        "voc_resnet101_os16",
        "voc_resnet101_os8_finetune",
        "cityscapes_resnet101_os16",
        "ade20k_resnet101_os16",
    }
    assert shipped <= set(available_recipes())
    first = load_recipe("voc_resnet101_os16")
    assert first.model["backbone"] == "resnet101" and first.model["output_stride"] == 16
    assert first.model["batch_norm_momentum"] == 0.9997 and first.model["backbone_weights"].endswith(".h5")
    assert (first.data.crop_size, first.data.min_scale, first.data.max_scale, first.data.flip) == (513, 0.5, 2.0, True)
    assert (first.train.global_batch_size, first.train.learning_rate, first.train.lr_power) == (16, 0.007, 0.9)
    assert (first.train.steps, first.train.momentum, first.train.freeze_batch_norm) == (30000, 0.9, False)
    assert first.train.weight_decay > 0
    second = load_recipe("voc_resnet101_os8_finetune.json")
    assert second.model["output_stride"] == 8 and second.train.freeze_batch_norm
    assert second.train.learning_rate == 0.001 and second.train.init_checkpoint == first.run_dir
    assert load_recipe("cityscapes_resnet101_os16").num_classes == 19
    ade20k = load_recipe("ade20k_resnet101_os16")
    assert (ade20k.num_classes, ade20k.data.format, ade20k.data.eval_split) == (151, "ade20k", "validation")
    assert load_recipe("demo").data.format == "synthetic"


def test_overrides_set_any_key_with_json_values(tmp_path):
    recipe = load_recipe(
        "demo",
        [
            "train.steps=7",
            "run_dir=" + str(tmp_path / "run"),
            "model.decoder=false",
            "eval.scales=[0.75, 1.25]",
            "train.class_weights=null",
            "data.format=voc",
        ],
    )
    assert recipe.train.steps == 7 and recipe.run_dir == str(tmp_path / "run")
    assert recipe.model["decoder"] is False and recipe.eval.scales == [0.75, 1.25] and recipe.data.format == "voc"
    assert recipe.to_dict()["train"]["steps"] == 7


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trian": {}}, "unknown key 'trian'"),
        ({"train": {"step": 5}}, r"unknown key 'train.step' \(expected one of: steps,"),
        ({"model": {"backbon": "resnet50"}}, r"unknown key 'model.backbon' \(build_model accepts: output_stride,"),
        ({"model": {"sync_batch_norm": True}}, "model.sync_batch_norm is set by training itself"),
        ({"train": {"steps": "ten"}}, "'train.steps' must be an integer, got 'ten'"),
        ({"train": {"steps": True}}, "'train.steps' must be an integer, got True"),
        ({"train": {"steps": 0}}, "'train.steps' must be positive"),
        ({"train": {"learning_rate": "fast"}}, "'train.learning_rate' must be a number"),
        ({"eval": {"scales": [1, "x"]}}, "'eval.scales' must be a list of a number"),
        ({"train": {"precision": "float16"}}, r"'train.precision' must be one of \('float32', 'mixed', 'auto'\)"),
        ({"model": {"num_classes": 3}, "train": {"class_weights": [1, 2]}}, "has 2 entries for 3 classes"),
        ({"data": {"min_scale": 2.0, "max_scale": 1.0}}, "'data.max_scale' .* is below"),
        ({"data": []}, "'data' must be an object"),
        ([1, 2], "expected a JSON object of sections"),
    ],
)
def test_bad_recipes_name_the_file_and_the_key(tmp_path, values, message):
    path = write(tmp_path, values)
    with pytest.raises(RecipeError, match=message) as error:
        load_recipe(path)
    assert path in str(error.value)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(RecipeError, match=r"nope.json: no such recipe file, and not a shipped recipe \(shipped: "):
        load_recipe(str(tmp_path / "nope.json"))
    corrupt = write(tmp_path, '{"train": {"steps": 5,}}')
    with pytest.raises(RecipeError, match=rf"{corrupt}: not valid JSON: .*line 1"):
        load_recipe(corrupt)
    with pytest.raises(RecipeError, match=r"expected section\.key=value"):
        load_recipe("demo", ["train.steps"])
    with pytest.raises(RecipeError, match=r"unknown key 'train\.stepz'"):
        load_recipe("demo", ["train.stepz=4"])


@pytest.mark.slow(37)
def test_finetune_published_recipe_raises_the_miou_on_the_training_photos(shared_data_dir, tmp_path, capsys):
    """The shipped fine-tuning recipe, with its defaults (batch norm in inference mode, learning rate 1e-4), from the
    shipped TFLite model on two real VOC photos: the mIoU on them rises within a few steps."""
    from keras_deeplab.evaluation import evaluate_model
    from keras_deeplab.files import PUBLISHED_MODEL
    from keras_deeplab.importing import import_weights
    from keras_deeplab.recipe import model_section
    from keras_deeplab.training import train
    from pipelines import open_source

    published = import_weights(PUBLISHED_MODEL)
    recipe = load_recipe("finetune_published")
    assert recipe.model == model_section(published.build_config)  # the shipped model's architecture
    assert recipe.train.freeze_batch_norm is None and recipe.train.learning_rate == 1e-4
    root = os.path.join(shared_data_dir, "voc2012_sample")
    photos = open_source("voc", root, "train")
    before = evaluate_model(published, photos)["miou"]
    overrides = [
        f"run_dir={tmp_path / 'run'}",
        f"data.root={root}",
        "data.eval_split=train",
        "data.crop_size=257",
        "train.global_batch_size=2",
        "train.steps=10",
        f"train.init_checkpoint={PUBLISHED_MODEL}",
        "log.progress=false",
        'distribution.devices=["/cpu:0"]',
    ]
    after = train("finetune_published", overrides)["eval"]["miou"]
    assert "batch norm in inference mode" in capsys.readouterr().out
    assert after > before + 0.01, (before, after)  # 59.38 -> 61.46 on the AVX2 machine
