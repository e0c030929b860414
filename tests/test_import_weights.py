"""Importing published DeepLab weights: TFLite files checked against LiteRT on real photos, TF1 checkpoints,
frozen graphs and tarballs written here with the official variable names, and the errors."""

import glob
import json
import os
import tarfile

import keras
import numpy as np
import official_graphs
import pytest
import tensorflow as tf
from PIL import Image

from keras_deeplab import cli
from keras_deeplab.checkpoints import CheckpointMismatchError, check_same_architecture
from keras_deeplab.importing import WeightImportError, import_weights, read_source
from keras_deeplab.importing.mapping import official_weight_table
from keras_deeplab.litert import open_interpreter
from keras_deeplab.model import build_model
from keras_deeplab.recipe import load_recipe

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
FLOAT_TFLITE = "deeplabv3_257_mv_gpu.tflite"  # float32, 257x257, output stride 8
QUANT_TFLITE = "deeplabv3_mnv2_dm05_pascal_quant.tflite"  # uint8, 513x513, output stride 16


@pytest.fixture
def shared_weights_dir():
    folder = os.path.join(SHARED, "weights")
    if not os.path.isfile(os.path.join(folder, FLOAT_TFLITE)):
        pytest.skip("../shared/weights is absent (a user's fresh clone has none): published-weight checks skipped")
    return os.path.abspath(folder)


def real_photos(weights_dir, data_dir):
    """The shared VOC and ADE20K photos and the bird photo."""
    return [
        *sorted(glob.glob(os.path.join(data_dir, "voc2012_sample", "JPEGImages", "*.jpg"))),
        *sorted(glob.glob(os.path.join(data_dir, "ade20k_sample", "images", "validation", "*.jpg"))),
        os.path.join(weights_dir, "bird_segmentation.bmp"),
    ]


def litert_agreement(path, model, photos):
    """Pixel agreement of the model's class map with LiteRT running the source, each photo resized to the
    source's input size and fed as the source expects it (floats in [-1, 1], or uint8 pixels)."""
    interpreter, _, _ = open_interpreter(path)
    source_input, source_output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    size = int(source_input["shape"][1])
    agreeing = total = 0
    for photo in photos:
        pixels = np.asarray(Image.open(photo).convert("RGB").resize((size, size), Image.BILINEAR))
        if source_input["dtype"] == np.uint8:  # scale 1/128, zero point 128: pixel p is (p - 128) / 128
            interpreter.set_tensor(source_input["index"], pixels[np.newaxis])
        else:
            interpreter.set_tensor(source_input["index"], pixels[np.newaxis].astype(np.float32) / 127.5 - 1)
        interpreter.invoke()
        result = interpreter.get_tensor(source_output["index"])[0]
        reference = result if result.ndim == 2 else result.argmax(-1)  # ArgMax output or logits
        ours = model(pixels[np.newaxis].astype(np.float32)).numpy()[0].argmax(-1)
        agreeing += int(np.sum(ours == reference))
        total += reference.size
    return agreeing / total


@pytest.mark.parametrize(
    ("file", "stride", "least"), [(FLOAT_TFLITE, 8, 0.995), (QUANT_TFLITE, 16, 0.97)], ids=["float32", "uint8"]
)
def test_published_tflite_agrees_with_litert_on_real_photos(shared_weights_dir, shared_data_dir, file, stride, least):
    path = os.path.join(shared_weights_dir, file)
    model = import_weights(path)
    config = model.build_config
    assert (config["backbone"], config["width_multiplier"], config["width_divisor"]) == ("mobilenetv2", 0.5, 1)
    assert (config["num_classes"], config["output_stride"], config["light_aspp"], config["decoder"]) == (
        21,
        stride,
        True,
        False,
    )
    photos = real_photos(shared_weights_dir, shared_data_dir)
    assert len(photos) == 7
    agreement = litert_agreement(path, model, photos)
    print(f"{file}: argmax agreement with LiteRT {agreement:.5f} over {len(photos)} real photos")
    assert agreement >= least


def test_imported_model_saves_loads_and_changes_stride(shared_weights_dir, tmp_path):
    model = import_weights(os.path.join(shared_weights_dir, FLOAT_TFLITE))
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 97, 65, 3)).astype(np.float32)  # any size
    logits = model(pixels).numpy()
    assert logits.shape == (1, 97, 65, 21)
    model.save(tmp_path / "imported.keras")
    loaded = keras.models.load_model(tmp_path / "imported.keras")
    assert loaded.build_config == model.build_config
    np.testing.assert_allclose(loaded(pixels).numpy(), logits, atol=1e-5)
    at16 = model.with_output_stride(16)
    assert at16(pixels).shape == (1, 97, 65, 21)
    np.testing.assert_allclose(at16.with_output_stride(8)(pixels).numpy(), logits, atol=1e-5)


# A small network with everything the tables cover: full ASPP, decoder, separable convs, MobileNetV2 at depth
# multiplier 0.5 with the official widths; exported under the official names as a TF1 checkpoint would hold it.
SMALL = {
    "backbone": "mobilenetv2",
    "width_multiplier": 0.5,
    "width_divisor": 1,
    "decoder": True,
    "separable": True,
    "light_aspp": False,
    "aspp_filters": 32,
    "num_classes": 5,
    "output_stride": 16,
    "align_corners": True,
}


def official_tensors(model):
    """{official name: array} of `model` by the tables, batch norms with random statistics (variances as the
    official epsilon would give the same normalisation)."""
    table, epsilons = official_weight_table(model.build_config)
    rng = np.random.default_rng(1)
    tensors = {}
    for name, (layer_name, slot) in table.items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:  # the table covers variants (non-separable) this model does not build
            continue
        variable = next(weight for weight in layer.weights if weight.name == slot)
        if slot in ("gamma", "moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))
        elif slot in ("beta", "moving_mean", "bias"):
            variable.assign(rng.normal(0, 0.1, variable.shape).astype(np.float32))
        tensors[name] = np.asarray(variable.numpy())
        if slot == "moving_variance":
            tensors[name] = tensors[name] + np.float32(layer.epsilon - epsilons[layer_name])
    return tensors


def write_checkpoint(prefix, tensors):
    """A TF1 checkpoint of tf.compat.v1 variables named as `tensors`, with a global step and Momentum slots."""
    with tf.Graph().as_default():
        for name, value in tensors.items():
            tf.compat.v1.Variable(value, name=name)
            tf.compat.v1.Variable(np.zeros_like(value), name=f"{name}/Momentum")
        tf.compat.v1.Variable(30000, dtype=tf.int64, name="global_step")
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(session, prefix)


def write_frozen_graph(path, tensors):
    """A GraphDef whose weights are constants named as `tensors`, beside constants that are no weights."""
    with tf.Graph().as_default() as graph:
        for name, value in tensors.items():
            tf.constant(value, name=name)
        tf.constant([513, 513], name="ResizeBilinear/size")
        tf.constant(127.5, name="sub/y")
    with open(path, "wb") as file:
        file.write(graph.as_graph_def().SerializeToString())
    return path


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official")
    model = build_model(**SMALL)
    tensors = official_tensors(model)
    pixels = np.random.default_rng(2).uniform(0, 255, (1, 67, 83, 3)).astype(np.float32)
    return {
        "folder": folder,
        "tensors": tensors,
        "config": model.build_config,
        "pixels": pixels,
        "logits": model(pixels).numpy(),
        "checkpoint": write_checkpoint(str(folder / "model.ckpt-30000"), tensors),
        "graph": write_frozen_graph(str(folder / "frozen_inference_graph.pb"), tensors),
    }


def test_checkpoint_and_frozen_graph_import_to_identical_logits(small_source):
    from_checkpoint = import_weights(small_source["checkpoint"])
    from_index = import_weights(small_source["checkpoint"] + ".index")
    from_graph = import_weights(small_source["graph"])
    assert from_checkpoint.build_config == small_source["config"]
    assert from_graph.build_config == small_source["config"]
    logits = from_checkpoint(small_source["pixels"]).numpy()
    np.testing.assert_array_equal(from_graph(small_source["pixels"]).numpy(), logits)
    np.testing.assert_array_equal(from_index(small_source["pixels"]).numpy(), logits)
    np.testing.assert_allclose(logits, small_source["logits"], atol=1e-4)


def test_tarball_holding_the_checkpoint_imports(small_source, tmp_path):
    tarball = tmp_path / "deeplabv3_small_2018_01_01.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for path in [*glob.glob(small_source["checkpoint"] + ".*"), small_source["graph"]]:
            archive.add(path, arcname=f"deeplabv3_small/{os.path.basename(path)}")
    source = read_source(tarball)
    assert "checkpoint" in source.kind
    model = import_weights(tarball)
    np.testing.assert_allclose(model(small_source["pixels"]).numpy(), small_source["logits"], atol=1e-4)


def test_unmapped_tensor_is_named(small_source, tmp_path):
    extra = {**small_source["tensors"], "MobilenetV2/expanded_conv_17/project/weights": np.ones((1, 1, 160, 8))}
    prefix = write_checkpoint(str(tmp_path / "model.ckpt-1"), extra)
    with pytest.raises(WeightImportError, match=r"model\.ckpt-1.*'MobilenetV2/expanded_conv_17/project/weights'"):
        import_weights(prefix)


def test_missing_tensor_is_named(small_source, tmp_path):
    name = "MobilenetV2/expanded_conv_5/project/weights"
    fewer = {key: value for key, value in small_source["tensors"].items() if key != name}
    path = write_frozen_graph(str(tmp_path / "missing.pb"), fewer)
    with pytest.raises(WeightImportError, match=rf"missing\.pb: no tensor '{name}'.*'block_5_project'"):
        import_weights(path)


def test_wrong_shape_is_named(small_source, tmp_path):
    name = "decoder/feature_projection0/weights"
    changed = {**small_source["tensors"], name: np.ones((1, 1, 24, 40), np.float32)}
    path = write_frozen_graph(str(tmp_path / "shape.pb"), changed)
    with pytest.raises(WeightImportError, match=rf"shape\.pb: tensor '{name}' has shape \(1, 1, 24, 40\)"):
        import_weights(path)


def test_num_classes_override_keeps_every_other_weight(small_source):
    same = import_weights(small_source["graph"])
    other = import_weights(small_source["graph"], num_classes=3)
    assert other.build_config["num_classes"] == 3
    assert other(small_source["pixels"]).shape[-1] == 3
    compared = 0
    for layer in same.layers:
        if layer.weights and layer.name != "logits":
            for ours, theirs in zip(layer.get_weights(), other.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(ours, theirs)
                compared += 1
    assert compared == len(same.weights) - 2  # all but the logits' kernel and bias


def test_import_weights_command(small_source, tmp_path, capsys):
    out = tmp_path / "imported.keras"
    assert cli.main(["import-weights", small_source["checkpoint"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mobilenetv2" in printed.splitlines()[0]
    loaded = keras.models.load_model(out)
    np.testing.assert_allclose(loaded(small_source["pixels"]).numpy(), small_source["logits"], atol=1e-4)
    # the printed model section pastes into a recipe, which loads and builds the imported network
    section = printed[printed.index('"model": ') :]
    recipe_path = tmp_path / "pasted.json"
    recipe_path.write_text('{"description": "pasted", "train": {"steps": 10},\n' + section + "}\n")
    recipe = load_recipe(str(recipe_path))
    assert set(loaded.build_config) - set(recipe.model) == {"input_shape", "sync_batch_norm"}  # training sets them
    assert build_model(**recipe.model).build_config == loaded.build_config

    assert cli.main(["import-weights", str(tmp_path / "absent.tflite"), "--out", str(tmp_path / "x.keras")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "absent.tflite" in error
    assert not os.path.exists(tmp_path / "x.keras")


@pytest.mark.slow
def test_xception65_checkpoint_imports_as_the_official_network(tmp_path):
    """Xception-65 (at width 1/8 to stay small) with the official code's depthwise convs (no ReLU after them
    outside the exit flow's last block) and its batch-norm epsilon 1e-3, through a TF1 checkpoint."""
    config = {**SMALL, "backbone": "xception65", "width_multiplier": 0.125, "depthwise_relu": False}
    del config["width_divisor"]
    model = build_model(**config)
    tensors = official_tensors(model)
    assert "xception_65/middle_flow/block1/unit_16/xception_module/separable_conv3_pointwise/BatchNorm/beta" in tensors
    pixels = np.random.default_rng(3).uniform(0, 255, (1, 65, 49, 3)).astype(np.float32)
    imported = import_weights(write_checkpoint(str(tmp_path / "model.ckpt"), tensors))
    assert imported.build_config == model.build_config
    np.testing.assert_allclose(imported(pixels).numpy(), model(pixels).numpy(), atol=1e-4)


def test_load_model_reads_a_published_file_through_the_import(small_source):
    """keras_deeplab.load_model, the loader every --model goes through, takes published files too."""
    from keras_deeplab.loading import load_model

    model = load_model(small_source["checkpoint"], output_stride=16)
    np.testing.assert_allclose(model(small_source["pixels"]).numpy(), small_source["logits"], atol=1e-4)


# The official DeepLab ResNet-v1-101 "beta" (tensorflow/models research/deeplab/core/resnet_v1_beta.py) at width
# 1/8: the slim layout, stride in the 3x3 conv of each block's last unit, multi-grid (1, 2, 4) in block4.
SLIM_RESNET = {
    **{key: value for key, value in SMALL.items() if key != "width_divisor"},
    "backbone": "resnet101",
    "width_multiplier": 0.125,
    "stem": "beta",
    "resnet_layout": "slim",
    "separable": False,
}


def test_resnet_v1_101_beta_checkpoint_imports_as_the_official_network(tmp_path):
    model = build_model(**SLIM_RESNET)
    tensors = official_tensors(model)
    for name in (
        "resnet_v1_101/conv1_3/BatchNorm/moving_variance",
        "resnet_v1_101/block1/unit_1/bottleneck_v1/shortcut/weights",
        "resnet_v1_101/block3/unit_23/bottleneck_v1/conv2/weights",
        "resnet_v1_101/block4/unit_3/bottleneck_v1/conv3/BatchNorm/gamma",
        "decoder/decoder_conv0/decoder_conv0_2/weights",
    ):
        assert name in tensors
    assert not any(name.endswith("/biases") and name.startswith("resnet_v1_101/") for name in tensors)
    assert "resnet_v1_101/block1/unit_3/bottleneck_v1/shortcut/weights" not in tensors  # a max pool subsample
    pixels = np.random.default_rng(4).uniform(0, 255, (1, 65, 97, 3)).astype(np.float32)
    imported = import_weights(write_checkpoint(str(tmp_path / "model.ckpt"), tensors))
    config = imported.build_config
    assert config == model.build_config
    assert (config["stem"], config["resnet_layout"], config["multi_grid"]) == ("beta", "slim", [1, 2, 4])
    np.testing.assert_allclose(imported(pixels).numpy(), model(pixels).numpy(), atol=1e-4)


def test_resnet_keras_layout_refuses_official_weights_and_older_configs_still_match():
    model = build_model(backbone="resnet50", width_multiplier=0.125, num_classes=3, aspp_filters=8)
    assert model.build_config["resnet_layout"] == "keras"
    # as versions before the backbones declared their options saved it: every backbone's options at their
    # defaults, resnet_layout left out at "keras"
    older = {key: value for key, value in model.build_config.items() if key != "resnet_layout"}
    older.update(width_divisor=8, depthwise_relu=True)
    check_same_architecture(model.build_config, older, "an older checkpoint")
    assert build_model(**older).build_config == model.build_config
    with pytest.raises(CheckpointMismatchError, match="stem: 'beta' there, 'keras' here"):
        check_same_architecture(model.build_config, {**older, "stem": "beta"}, "an older checkpoint")
    assert model.get_layer("preprocessing").reverse_channels  # keras.applications' "caffe" inputs
    with pytest.raises(WeightImportError, match="resnet_layout='slim' only"):
        official_weight_table(model.build_config)
    with pytest.raises(ValueError, match="resnet_layout must be one of"):
        build_model(backbone="resnet50", width_multiplier=0.125, resnet_layout="caffe")
    with pytest.raises(ValueError, match="resnet_layout applies to the backbones resnet50, resnet101 only"):
        build_model(backbone="mobilenetv2", resnet_layout="slim")


@pytest.mark.parametrize("stem", ["beta", "keras"])
def test_slim_layout_is_resnet_v1_at_every_output_stride(stem):
    """Strides in the last unit of block1 and block2 (a 1x1 max-pool shortcut there, no weights), the stride-4 feature
    at block1 unit 2, the output stride on odd sizes, and equal weights at 8, 16 and 32."""
    config = {**SLIM_RESNET, "backbone": "resnet50", "stem": stem, "output_stride": 16}
    model = build_model(**config)
    names = {layer.name for layer in model.layers}
    for block, units in zip((2, 3), (3, 4), strict=True):
        assert f"conv{block}_block{units}_0_pool" in names and f"conv{block}_block{units}_2_pad" in names
    assert "conv4_block6_0_pool" not in names  # block3 would stride past output stride 16: it dilates instead
    assert all(f"conv{block}_block1_0_conv" in names for block in (2, 3, 4, 5))  # each block's depth changes
    assert not any(layer.get_config().get("use_bias") for layer in model.layers if layer.name.startswith("conv"))
    expected_input = ((127.5,) * 3, 1 / 127.5) if stem == "beta" else ((123.15, 115.90, 103.06), 1.0)
    preprocessing = model.get_layer("preprocessing")
    assert (tuple(preprocessing.mean), preprocessing.scale, preprocessing.reverse_channels) == (*expected_input, False)
    pixels = np.random.default_rng(5).uniform(0, 255, (1, 97, 129, 3)).astype(np.float32)
    reference = model(pixels).numpy()
    for output_stride in (8, 32, 16):
        other = model.with_output_stride(output_stride)
        for height, width in ((65, 65), (97, 129)):
            features = other.feature_model()(pixels[:, :height, :width])
            assert features["low_level"].shape[1:3] == (-(-height // 4), -(-width // 4))
            assert features["high_level"].shape[1:3] == (-(-height // output_stride), -(-width // output_stride))
        if output_stride == 16:
            np.testing.assert_allclose(other(pixels).numpy(), reference, atol=1e-5)
    low_level = model.feature_model()(pixels)["low_level"]
    block1_unit2 = keras.Model(model.input, model.get_layer("conv2_block2_3_bn").output)(pixels)
    np.testing.assert_array_equal(low_level.numpy(), block1_unit2.numpy())


def official_resnet_v1_beta(tensors, scope, units, images, output_stride, multi_grid=(1, 2, 4)):
    """The official network, written here from tensorflow/models research/deeplab/core/resnet_v1_beta.py
    (`bottleneck`, `root_block_fn_for_beta_variant`, `resnet_v1_beta`) and research/slim/nets/resnet_utils.py
    (`conv2d_same`, `subsample`, `stack_blocks_dense`) with tf.nn ops on the official tensors, independent of our
    layers: (decoder input 'block1/unit_2/bottleneck_v1/conv3', final feature)."""

    def conv(x, name, stride=1, rate=1, relu=True, padding="SAME"):
        x = tf.nn.conv2d(x, tensors[f"{name}/weights"], stride, padding, dilations=rate)
        bn = {slot: tensors[f"{name}/BatchNorm/{slot}"] for slot in ("gamma", "beta", "moving_mean", "moving_variance")}
        x = tf.nn.batch_normalization(x, bn["moving_mean"], bn["moving_variance"], bn["beta"], bn["gamma"], 1e-5)
        return tf.nn.relu(x) if relu else x

    def conv2d_same(x, name, stride, rate=1):
        if stride == 1:
            return conv(x, name, rate=rate)
        pad_total = 3 + 2 * (rate - 1) - 1
        begin = pad_total // 2
        x = tf.pad(x, [[0, 0], [begin, pad_total - begin], [begin, pad_total - begin], [0, 0]])
        return conv(x, name, stride, rate, padding="VALID")

    def bottleneck(x, name, stride, rate):
        depth = tensors[f"{name}/conv3/weights"].shape[-1]
        if depth == x.shape[-1]:
            shortcut = x if stride == 1 else tf.nn.max_pool2d(x, 1, stride, "SAME")
        else:
            shortcut = conv(x, f"{name}/shortcut", stride, relu=False)
        residual = conv(x, f"{name}/conv1")
        residual = conv2d_same(residual, f"{name}/conv2", stride, rate)
        residual = conv(residual, f"{name}/conv3", relu=False)
        return tf.nn.relu(shortcut + residual), residual

    net = images * (2.0 / 255.0) - 1.0
    net = conv2d_same(net, f"{scope}/conv1_1", 2)
    net = conv(net, f"{scope}/conv1_2")
    net = conv(net, f"{scope}/conv1_3")
    net = tf.nn.max_pool2d(net, 3, 2, "SAME")
    blocks = [[(1, 1)] * (count - 1) + [(2, 1)] for count in units[:3]] + [[(1, rate) for rate in multi_grid]]
    current_stride, rate, decoder_input = 1, 1, None
    for block, block_units in enumerate(blocks, start=1):
        for unit, (stride, unit_rate) in enumerate(block_units, start=1):
            name = f"{scope}/block{block}/unit_{unit}/bottleneck_v1"
            if current_stride == output_stride // 4:
                net, residual = bottleneck(net, name, 1, rate * unit_rate)
                rate *= stride
            else:
                net, residual = bottleneck(net, name, stride, unit_rate)
                current_stride *= stride
            if (block, unit) == (1, 2):
                decoder_input = residual
    return decoder_input, net


@pytest.mark.parametrize("output_stride", [16, 8])
def test_slim_layout_computes_the_official_resnet_v1_beta(output_stride, tmp_path):
    """The imported ResNet-v1-50 beta's features equal those of the official network written with tf.nn ops."""
    config = {**SLIM_RESNET, "backbone": "resnet50", "output_stride": output_stride}
    tensors = official_tensors(build_model(**config))
    model = import_weights(write_checkpoint(str(tmp_path / "model.ckpt"), tensors))
    assert model.build_config["output_stride"] == 16
    model = model.with_output_stride(output_stride)
    official = {name: value for name, value in tensors.items() if name.startswith("resnet_v1_50/")}
    # 64 rows: an even map before the stem's max pool, whose "SAME" padding is then asymmetric; 97 columns: odd
    pixels = np.random.default_rng(6).uniform(0, 255, (1, 64, 97, 3)).astype(np.float32)
    expected = official_resnet_v1_beta(official, "resnet_v1_50", (3, 4, 6, 3), tf.constant(pixels), output_stride)
    features = model.feature_model()(pixels)
    for ours, theirs in zip((features["low_level"], features["high_level"]), expected, strict=True):
        theirs = theirs.numpy()
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_a_recipe_fine_tunes_a_published_model_on_its_own_classes(tmp_path):
    """train.init_checkpoint takes a published file; of another number of classes, all but the logits load."""
    from keras_deeplab.recipe import load_recipe
    from keras_deeplab.training.run import TrainingRun
    from keras_deeplab.training.strategy import make_strategy

    source = build_model(**{**SMALL, "num_classes": 7})
    checkpoint = write_checkpoint(str(tmp_path / "published" / "model.ckpt-1"), official_tensors(source))
    model_keys = {
        key: value for key, value in source.build_config.items() if key not in ("input_shape", "sync_batch_norm")
    }
    recipe = load_recipe(
        "demo",
        [
            f"run_dir={tmp_path / 'run'}",
            f"model={json.dumps({**model_keys, 'num_classes': 5})}",
            f"train.init_checkpoint={checkpoint}",
            'distribution.devices=["/cpu:0"]',
        ],
    )
    run = TrainingRun(recipe, make_strategy(recipe.distribution), "float32", progress=False)
    assert run.restore_or_initialise() == 0
    imported = {layer.name: layer.get_weights() for layer in source.layers if layer.weights}
    for layer in run.model.layers:
        if layer.weights and layer.name != "logits":
            for got, want in zip(layer.get_weights(), imported[layer.name], strict=True):
                np.testing.assert_allclose(got, want, atol=1e-6)  # batch-norm variances pass through an epsilon shift
    assert run.model.get_layer("logits").kernel.shape[-1] == 5


# A network as Google's export wrote it: real ops under the official names (tests/official_graphs.py), at output
# stride 8, with the export's own resize, mean-pixel padding, argmax, crop and resize back. Crop 65, not 513: the
# handling is the same at any size (benchmarks/official_export.py gives the figure at 513).
EXPORTED = {**SMALL, "width_multiplier": 0.25, "light_aspp": True, "decoder": False, "separable": False}
EXPORT_CROP = 65


@pytest.fixture(scope="module")
def exported_graph(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    keras.utils.set_random_seed(0)
    model = build_model(**{**EXPORTED, "output_stride": 8})
    official_graphs.balance_logits(model)
    graph = official_graphs.exported_graph_def(model, EXPORT_CROP)
    path = official_graphs.write(graph, folder / "frozen_inference_graph.pb")
    return {"graph": graph, "path": path, "imported": import_weights(path)}


def test_frozen_graph_exported_at_output_stride_8_imports_at_8(exported_graph, tmp_path, capsys):
    source = read_source(exported_graph["path"])
    assert source.atrous_rates["MobilenetV2/expanded_conv_13/depthwise/depthwise_weights"] == 2
    assert source.atrous_rates["MobilenetV2/expanded_conv_16/depthwise/depthwise_weights"] == 4
    out = tmp_path / "imported.keras"
    assert cli.main(["import-weights", exported_graph["path"], "--out", str(out)]) == 0
    assert "output stride 8" in capsys.readouterr().out
    # a zoo tarball: the checkpoint's weights, the output stride of the graph beside it
    prefix = write_checkpoint(str(tmp_path / "model.ckpt-30000"), source.tensors)
    tarball = tmp_path / "deeplabv3_exported.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for path in [*glob.glob(prefix + ".*"), exported_graph["path"]]:
            archive.add(path, arcname=f"deeplabv3_exported/{os.path.basename(path)}")
    assert import_weights(tarball).build_config["output_stride"] == 8


def test_fit_to_gives_the_exported_graphs_class_maps_on_real_photos(exported_graph, shared_data_dir, tmp_path):
    photos = [
        *sorted(glob.glob(os.path.join(shared_data_dir, "voc2012_sample", "JPEGImages", "*.jpg"))),
        *sorted(glob.glob(os.path.join(shared_data_dir, "ade20k_sample", "images", "validation", "*.jpg"))),
    ]
    assert len(photos) == 6
    model_path = tmp_path / "imported.keras"
    exported_graph["imported"].save(model_path)
    out = tmp_path / "out"
    assert (
        cli.main(["predict", *photos, "--model", str(model_path), "--out", str(out), "--fit-to", str(EXPORT_CROP)]) == 0
    )
    agreeing = total = 0
    graph_run = official_graphs.graph_function(exported_graph["graph"], "ImageTensor:0", "SemanticPredictions:0")
    classes = set()
    for photo in photos:
        pixels = tf.io.decode_image(tf.io.read_file(photo), channels=3)[tf.newaxis].numpy()  # as predict decodes
        graph = graph_run(tf.constant(pixels)).numpy()
        classes.update(np.unique(graph).tolist())
        ours = np.array(Image.open(out / (os.path.splitext(os.path.basename(photo))[0] + ".png")))
        assert ours.shape == graph.shape[1:] == pixels.shape[1:3]
        agreeing += int(np.sum(ours == graph[0]))
        total += ours.size
    print(
        f"--fit-to {EXPORT_CROP}: agreement with SemanticPredictions {agreeing / total:.6f} over {len(photos)} photos"
    )
    assert agreeing == total
    assert len(classes) > 1  # the class maps say something


def test_float16_tflite_from_todays_converter_imports_through_its_graph(tmp_path):
    """Today's converter keeps no name on a float16 weight constant; the DEQUANTIZE after it and the conv it feeds
    carry the official scope (the published ADE20K float16 file's case)."""
    model = build_model(**EXPORTED)
    official_graphs.random_statistics(model)
    graph, input_name, output_name = official_graphs.official_graph_def(model, size=33)
    flatbuffer = official_graphs.float16_tflite(graph, input_name, output_name)
    path = tmp_path / "deeplabv3_float16.tflite"
    path.write_bytes(official_graphs.unname_dequantized_constants(flatbuffer))
    imported = import_weights(path)
    assert imported.build_config["output_stride"] == 16
    pixels = np.random.default_rng(3).uniform(0, 255, (1, 33, 33, 3)).astype(np.float32)
    reference = official_graphs.run_graph_def(graph, pixels, input_name, output_name)
    logits = imported(pixels).numpy()
    np.testing.assert_allclose(logits, reference, atol=0.02 * np.abs(reference).max())  # weights in float16
    assert np.mean(logits.argmax(-1) == reference.argmax(-1)) >= 0.98


def test_atrous_rates_are_read_through_space_to_batch_dilations_and_fake_quantization():
    """The three ways TF1 graphs hold a conv's rate: a SpaceToBatchND block before it (slim's atrous convs), its
    `dilations`, and a kernel behind `weights/read` or an 8-bit model's FakeQuant."""
    from keras_deeplab.importing.frozen_graph import atrous_rates

    names = [f"MobilenetV2/expanded_conv_{index}/depthwise/depthwise_weights" for index in (7, 14)]
    names.append("MobilenetV2/expanded_conv_14/project/weights")
    with tf.Graph().as_default() as graph:
        pixels = tf.compat.v1.placeholder(tf.float32, [1, 12, 12, 4])
        kernels = [tf.constant(np.ones((3, 3, 4, 1), np.float32), name=name) for name in names[:2]]
        kernels.append(tf.constant(np.ones((1, 1, 4, 4), np.float32), name=names[2]))
        blocks = tf.space_to_batch_nd(pixels, [2, 2], [[0, 0], [0, 0]])
        read = tf.identity(kernels[0], name=f"{names[0]}/read")
        tf.raw_ops.DepthwiseConv2dNative(input=blocks, filter=read, strides=[1] * 4, padding="SAME")
        tf.raw_ops.DepthwiseConv2dNative(
            input=pixels, filter=kernels[1], strides=[1] * 4, padding="SAME", dilations=[1, 4, 4, 1]
        )
        quantized = tf.quantization.fake_quant_with_min_max_vars(kernels[2], -1.0, 1.0)
        tf.nn.conv2d(pixels, quantized, 1, "SAME")
    rates = atrous_rates(graph.as_graph_def(), dict.fromkeys(names))
    assert rates == {names[0]: 2, names[1]: 4, names[2]: 1}
