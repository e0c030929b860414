"""Checkpoints and initial weights: atomic folders, the last K kept, another architecture refused by name."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab import build_model
from keras_deeplab.checkpoints import (
    CheckpointFolder,
    CheckpointMismatchError,
    check_same_architecture,
    checkpoint_model_config,
)
from keras_deeplab.loading import ModelFileError, load_model
from keras_deeplab.recipe import load_recipe
from keras_deeplab.training import train
from keras_deeplab.training.step import make_optimizer
from keras_deeplab.weights import copy_layer_weights, layer_weights

TINY = {"backbone": "resnet50", "width_multiplier": 0.125, "aspp_filters": 16}


def tiny_model(num_classes=3, **options):
    return build_model(16, num_classes=num_classes, **{**TINY, **options})


def model_and_checkpoint(num_classes=3):
    model = tiny_model(num_classes)
    optimizer = make_optimizer(load_recipe("demo").train, "float32")
    optimizer.build(model.trainable_variables)
    return model, optimizer, tf.train.Checkpoint(model=model, optimizer=optimizer)


def test_checkpoints_are_renamed_into_place_and_only_the_last_k_kept(tmp_path):
    model, optimizer, checkpoint = model_and_checkpoint()
    folder = CheckpointFolder(str(tmp_path / "checkpoints"), keep=2)
    for step in (10, 20, 30):
        optimizer.iterations.assign(step)
        folder.save(checkpoint, step, model.build_config)
    assert folder.steps() == [20, 30]
    assert sorted(os.listdir(folder.folder)) == ["ckpt-00000020", "ckpt-00000030"]  # no temporary left
    assert checkpoint_model_config(folder.path(30)) == json.loads(json.dumps(model.build_config))
    restored_model, restored_optimizer, restored = model_and_checkpoint()
    restored.read(os.path.join(folder.path(30), "ckpt")).assert_existing_objects_matched()
    assert int(restored_optimizer.iterations) == 30
    for got, want in zip(restored_model.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_checkpoint_left_half_written_is_ignored_and_cleared(tmp_path):
    """What `kill -9` during a save leaves: a temporary folder, never a ckpt-* folder."""
    folder_path = tmp_path / "checkpoints"
    half = folder_path / ".tmp-40-abcd"
    half.mkdir(parents=True)
    (half / "ckpt.index").write_bytes(b"\x00truncated")
    assert CheckpointFolder(str(folder_path), keep=2, writer=False).steps() == []
    CheckpointFolder(str(folder_path), keep=2)  # the writer clears it
    assert os.listdir(folder_path) == []


def test_another_architecture_is_named_key_by_key():
    config = tiny_model().build_config
    check_same_architecture(config, {**config, "sync_batch_norm": True}, "here")  # replicas may change
    with pytest.raises(CheckpointMismatchError, match=r"ckpt-1 holds a model of another architecture \(num_classes: 4"):
        check_same_architecture(config, {**config, "num_classes": 4}, "ckpt-1")


def copy_weights_by_layer(target, source, where):
    """What training does with train.init_checkpoint."""
    copy_layer_weights(target, layer_weights(source), where, every_model_layer=True, error=CheckpointMismatchError)


def test_initial_weights_are_copied_by_layer_name_and_a_mismatch_names_the_layer():
    source, target = tiny_model(), tiny_model()
    copy_weights_by_layer(target, source, "source.keras")
    for got, want in zip(target.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(CheckpointMismatchError, match=r"source.keras: layer 'logits' has weights of shapes"):
        copy_weights_by_layer(tiny_model(num_classes=5), source, "source.keras")
    with pytest.raises(
        CheckpointMismatchError, match=r"layer 'decoder_\w+' has no layer of that name in source\.keras"
    ):
        copy_weights_by_layer(tiny_model(decoder=True), source, "source.keras")


def test_trained_models_load_from_a_keras_file_or_a_run_directory(tmp_path):
    model, _, checkpoint = model_and_checkpoint()
    model.save(tmp_path / "model.keras")
    from_file = load_model(str(tmp_path / "model.keras"), output_stride=8)
    assert from_file.build_config["output_stride"] == 8
    CheckpointFolder(str(tmp_path / "run" / "checkpoints"), keep=1).save(checkpoint, 5, model.build_config)
    from_run = load_model(str(tmp_path / "run"))
    images = np.random.default_rng(0).uniform(0, 255, (1, 33, 33, 3)).astype(np.float32)
    np.testing.assert_allclose(from_run(images), model(images), atol=1e-5)
    np.testing.assert_allclose(from_file.with_output_stride(16)(images), model(images), atol=1e-5)
    with pytest.raises(ModelFileError, match="absent: no such model file or run folder"):
        load_model(str(tmp_path / "absent"))
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=r"corrupt\.keras: damaged or not a \.keras model file"):
        load_model(str(tmp_path / "corrupt.keras"))
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "dense.keras")
    with pytest.raises(ValueError, match=r"dense\.keras: holds a Functional, not a DeepLab model"):
        load_model(str(tmp_path / "dense.keras"))


def tiny_recipe(tmp_path, *overrides):
    base = [
        f"run_dir={tmp_path / 'run'}",
        f"model={json.dumps({**TINY, 'num_classes': 5, 'output_stride': 16})}",
        'data.options={"num_examples": 4, "image_size": 64}',
        "data.crop_size=65",
        "train.global_batch_size=2",
        "train.steps=2",
        'distribution.devices=["/cpu:0"]',
        "log.progress=false",
    ]
    return load_recipe("demo", [*base, *overrides])


def test_resuming_a_run_of_another_architecture_fails_before_training(tmp_path):
    model, _, checkpoint = model_and_checkpoint(num_classes=5)
    CheckpointFolder(str(tmp_path / "run" / "checkpoints"), keep=1).save(
        checkpoint, 1, {**model.build_config, "backbone": "resnet101"}
    )
    with pytest.raises(CheckpointMismatchError, match=r"ckpt-00000001 holds a model of another architecture"):
        train(tiny_recipe(tmp_path))


def test_an_init_checkpoint_of_another_architecture_fails_before_training(tmp_path):
    # Another number of classes is fine-tuning (every weight but the logits loads); a decoder the recipe lacks is not.
    tiny_model(num_classes=5, decoder=True).save(tmp_path / "other.keras")
    recipe = tiny_recipe(tmp_path, f"train.init_checkpoint={tmp_path / 'other.keras'}")
    with pytest.raises(
        CheckpointMismatchError,
        match=r"train.init_checkpoint .*other.keras: layer 'decoder_\w+' of the file has no layer",
    ):
        train(recipe)
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-00000002")


def test_empty_dataset_and_missing_weight_file_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"split 'train': the dataset has no examples"):
        train(tiny_recipe(tmp_path, 'data.options={"num_examples": 0}'))
    with pytest.raises(FileNotFoundError, match=r"model.backbone_weights: no such file '.*absent.h5'"):
        train(tiny_recipe(tmp_path, f"model.backbone_weights={tmp_path / 'absent.h5'}"))
    with pytest.raises(ValueError, match=r"model\.num_classes is 3 but synthetic/train has 5 classes"):
        train(tiny_recipe(tmp_path, "model.num_classes=3"))
    assert keras.mixed_precision.global_policy().name == "float32"
