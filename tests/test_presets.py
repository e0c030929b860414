"""Presets (keras_deeplab/presets.py): a model-zoo tarball written here, served from a loopback HTTP server that
stands in for the zoo (KERAS_DEEPLAB_ZOO_URL), fetched once into KERAS_HOME and imported once; the shipped phone
model as an offline preset on a real photo; the one-line errors. Nothing here reaches the real zoo."""

import contextlib
import functools
import hashlib
import http.server
import os
import re
import tarfile
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_deeplab import cli, presets
from keras_deeplab.descriptors import descriptor_for
from keras_deeplab.files import PUBLISHED_PHOTO
from keras_deeplab.importing.mapping import official_weight_table
from keras_deeplab.loading import from_preset
from keras_deeplab.model import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The zoo's MobileNetV2 DeepLab (light ASPP, no decoder), small: depth multiplier 0.25, 3 classes
TINY = {
    "backbone": "mobilenetv2",
    "width_multiplier": 0.25,
    "width_divisor": 1,
    "light_aspp": True,
    "aspp_filters": 8,
    "num_classes": 3,
    "output_stride": 8,  # a checkpoint does not say: it imports at 16, and the preset rebuilds it at 8
    "align_corners": True,
}
TINY_PRESET = presets.Preset(
    name="tiny_voc",
    file="deeplabv3_tiny_pascal_2026_01_01.tar.gz",
    dataset="voc",
    num_classes=3,
    backbone="mobilenetv2",
    width_multiplier=0.25,
    output_stride=8,
    evaluations=(presets.Evaluation(8, "1.0", False, 12.34, "val"),),
    size="1MB",
    page="tests/test_presets.py",
)


def write_zoo_tarball(path, model):
    """`model`'s weights under the official names in a TF1 checkpoint, in a tarball laid out as the zoo's."""
    table, epsilons = official_weight_table(model.build_config)
    layers = {layer.name: layer for layer in model.layers}
    tensors = {}
    for name, (layer_name, slot) in table.items():
        if layer_name not in layers:  # the table covers variants (decoder, full ASPP) this model does not build
            continue
        layer = layers[layer_name]
        value = next(weight for weight in layer.weights if weight.name == slot).numpy()
        if slot == "moving_variance":  # the same normalisation under the official epsilon
            value = value + np.float32(layer.epsilon - epsilons[layer_name])
        tensors[name] = value
    prefix = os.path.join(os.path.dirname(path), "model.ckpt")
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=[tensors[n] for n in names]
    )
    with tarfile.open(path, "w:gz") as archive:
        for name in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
            archive.add(os.path.join(os.path.dirname(path), name), arcname=f"deeplabv3_tiny_pascal/{name}")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def zoo_mirror(folder):
    """The files of `folder` over HTTP on 127.0.0.1 (any free port); yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/models/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setitem(presets.PRESETS, TINY_PRESET.name, TINY_PRESET)
    return home / "keras_deeplab"


def test_from_preset_through_a_mirror_then_offline_from_the_cache(tmp_path, keras_home, monkeypatch, capsys):
    source = build_model(**TINY)
    (tmp_path / "zoo" / "models").mkdir(parents=True)
    tarball = tmp_path / "zoo" / "models" / TINY_PRESET.file
    write_zoo_tarball(str(tarball), source)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 41, 53, 3)).astype(np.float32)

    with zoo_mirror(str(tmp_path / "zoo")) as url:
        monkeypatch.setenv(presets.ZOO_URL_VARIABLE, url)
        model = from_preset("tiny_voc")
    err = capsys.readouterr().err
    cached = keras_home / TINY_PRESET.file
    assert f"preset tiny_voc: downloading {url}{TINY_PRESET.file}\n" in err
    assert f"preset tiny_voc: {cached}: sha256 {digest}, recorded in {cached}.sha256" in err
    assert (keras_home / f"{TINY_PRESET.file}.sha256").read_text() == f"{digest}  {TINY_PRESET.file}\n"
    assert f"imported {cached} into {keras_home / 'tiny_voc.keras'}" in err
    assert cached.read_bytes() == tarball.read_bytes()
    assert (model.build_config["output_stride"], model.build_config["num_classes"]) == (8, 3)
    expected = source(pixels).numpy()
    np.testing.assert_allclose(model(pixels).numpy(), expected, atol=1e-4)

    # the mirror is gone: the cached .keras answers, nothing downloaded or imported
    again = from_preset("tiny_voc")
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(again(pixels).numpy(), model(pixels).numpy())
    assert cli.main(["presets"]) == 0
    assert re.search(r"^tiny_voc +voc +3 +8 +12\.34 +1MB +file \+ \.keras$", capsys.readouterr().out, re.M)


def test_a_different_file_is_refused_and_without_network_one_line_says_where_to_put_it(
    tmp_path, keras_home, monkeypatch, capsys
):
    zoo = tmp_path / "zoo" / "models"
    zoo.mkdir(parents=True)
    (zoo / TINY_PRESET.file).write_bytes(b"the first file")
    first = hashlib.sha256(b"the first file").hexdigest()
    cached = keras_home / TINY_PRESET.file
    with zoo_mirror(str(tmp_path / "zoo")) as url:
        monkeypatch.setenv(presets.ZOO_URL_VARIABLE, url)
        assert presets.fetch(TINY_PRESET) == str(cached)
        # a later download that differs (the mirror's file changed) is refused, the record kept
        cached.unlink()
        (zoo / TINY_PRESET.file).write_bytes(b"another file")
        with pytest.raises(presets.PresetError) as refused:
            presets.fetch(TINY_PRESET)
    second = hashlib.sha256(b"another file").hexdigest()
    assert str(refused.value) == (
        f"preset tiny_voc: {cached} has sha256 {second}, not the {first} recorded in {cached}.sha256 when it was "
        "first fetched; remove both files to accept the new one"
    )
    assert (keras_home / f"{TINY_PRESET.file}.sha256").read_text() == f"{first}  {TINY_PRESET.file}\n"

    # no network (the mirror stopped), nothing cached: one line naming the URL and where to put the file
    cached.unlink()
    photo = os.fspath(PUBLISHED_PHOTO)
    assert cli.main(["predict", photo, "--model", "preset:tiny_voc", "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (
        f"keras-deeplab predict: error: preset tiny_voc: cannot download {url}{TINY_PRESET.file} (Connection "
        f"refused); put that file at {cached} by hand, or set KERAS_DEEPLAB_ZOO_URL to a mirror that has it"
    )
    assert not cached.exists() and not (tmp_path / "out").exists()
    cached.write_bytes(b"the first file")  # put there by hand: checked against the record, taken
    assert presets.fetch(TINY_PRESET) == str(cached)
    # a first file that is no model (a mirror's error page) does not stay the reference
    for path in (cached, keras_home / f"{TINY_PRESET.file}.sha256"):
        path.unlink()
    cached.write_bytes(b"<html>Not Found</html>")
    with pytest.raises(presets.PresetError) as refused:
        from_preset("tiny_voc")
    assert str(refused.value).startswith(f"preset tiny_voc: {cached}: not a readable tarball")
    assert "\n" not in str(refused.value)
    assert str(refused.value).endswith("; removed it and its sha256 record, so the next use downloads it again")
    assert not cached.exists() and not (keras_home / f"{TINY_PRESET.file}.sha256").exists()
    capsys.readouterr()
    assert cli.main(["export", "--model", "preset:tiny_vco", "--out", str(tmp_path / "export")]) == 1
    assert capsys.readouterr().err.startswith(
        "keras-deeplab export: error: preset:tiny_vco: no such preset; `keras-deeplab presets` lists them ("
    )


def test_predict_with_the_shipped_preset_needs_no_network(tmp_path, keras_home, monkeypatch, capsys):
    monkeypatch.setenv(presets.ZOO_URL_VARIABLE, "http://127.0.0.1:9/")  # nothing answers there
    photo = os.fspath(PUBLISHED_PHOTO)  # Coral's bird, 513x513
    argv = ["predict", photo, "--model", "preset:deeplabv3_257_mv_gpu", "--out", str(tmp_path / "masks")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"predicting with Keras model {keras_home / 'deeplabv3_257_mv_gpu.keras'} (float32, tensorflow)" in out
    class_map = np.asarray(Image.open(tmp_path / "masks" / "bird_segmentation.png"))
    shares = np.bincount(class_map.ravel(), minlength=21) / class_map.size
    print(f"bird photo, shipped preset at OS 8: background {shares[0]:.3f}, bird {shares[3]:.3f}")
    assert shares[3] > 0.1 and shares[3] == shares[1:].max()  # VOC class 3 is bird
    assert cli.main(["presets"]) == 0
    assert re.search(r"^deeplabv3_257_mv_gpu .* shipped \+ \.keras$", capsys.readouterr().out, re.M)


def test_readme_shows_the_presets_table(keras_home, monkeypatch, capsys):
    monkeypatch.delitem(presets.PRESETS, TINY_PRESET.name)
    assert cli.main(["presets"]) == 0
    table = capsys.readouterr().out.splitlines()[:-1]  # the last line names this machine's cache folder
    with open(os.path.join(ROOT, "README.md"), encoding="utf8") as handle:
        assert "\n".join(table) in handle.read()
    with open(os.path.join(ROOT, "docs", "presets.md"), encoding="utf8") as handle:
        manual = handle.read()
    for preset in presets.PRESETS.values():  # the manual's table has every preset with its file
        assert f"| `{preset.name}` |" in manual and f"`{preset.file}`" in manual
        # and its dataset's classes, so evaluate and predict take the preset with that dataset (ADE20K's 151)
        assert preset.num_classes == descriptor_for(preset.dataset).num_classes, preset.name
