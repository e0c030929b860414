"""Issue 15, hostile and careless inputs: sizes read from image headers before decoding, EXIF orientation, and
dataset files that are not what their names say. Serving's side is in test_serve.py, the command line's in
test_cli_errors.py."""

import io
import json
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps
from pipelines_fixtures import blocky_mask, photo, save_palette_png, write_folder, write_voc

from keras_deeplab.cli import main
from pipelines.errors import DataError
from pipelines.formats import open_source
from pipelines.image_header import ACCEPTED_IMAGE_FORMATS, apply_orientation, read_image_header
from pipelines.readers import open_folder, open_voc


def encoded(image: np.ndarray, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format, **options)
    return buffer.getvalue()


def with_orientation(image: np.ndarray, orientation: int, format: str = "JPEG") -> bytes:
    """A JPEG (or PNG) of `image` as stored, whose EXIF says to show it turned by `orientation`."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(image, format, exif=exif.tobytes())


@pytest.mark.parametrize("format", ["JPEG", "PNG", "GIF", "BMP"])
def test_header_gives_format_and_size_without_decoding(format):
    data = encoded(photo(37, 53, 0), format)
    header = read_image_header(data)
    assert (header.format, header.width, header.height, header.orientation) == (format, 53, 37, 1)


def test_a_huge_image_is_refused_from_its_header_before_decoding():
    # A 20000x20000 PNG whose header alone is given: the check never needs the pixel data.
    png = encoded(np.zeros((8, 8, 3), np.uint8), "PNG")
    huge = png[:16] + struct.pack(">II", 20000, 20000) + png[24:]
    with pytest.raises(ValueError, match="20000x20000 = 400000000 pixels is over the limit of 1000"):
        read_image_header(huge, max_pixels=1000)
    jpeg = bytearray(encoded(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 12000, 12000)
    with pytest.raises(ValueError, match="12000x12000"):
        read_image_header(bytes(jpeg), max_pixels=4096 * 4096)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\x0aJXL codestream",  # JPEG XL, which PIL cannot size but TensorFlow decodes
        b"\x00\x00\x00\x0cJXL \r\n\x87\n",  # JPEG XL in its container
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"II*\x00 tiff",
        b"not an image",
    ],
)
def test_formats_whose_size_is_not_read_first_are_refused_naming_the_accepted_ones(data):
    with pytest.raises(ValueError, match=", ".join(ACCEPTED_IMAGE_FORMATS)):
        read_image_header(data)


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_orientation_matches_pil_exif_transpose(format):
    image = photo(20, 30, 1)
    for orientation in range(1, 9):
        data = with_orientation(image, orientation, format)
        header = read_image_header(data)
        assert header.orientation == orientation
        stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        np.testing.assert_array_equal(apply_orientation(stored, orientation), expected)
        assert header.displayed_size == expected.shape[1::-1]


def test_png_orientation_is_read_without_decoding_the_pixels():
    """PIL's PNG getexif() decodes the whole image to look for the eXIf chunk: a 4096x4096 bomb per call. The
    chunk walk reads it even when the pixel data after it is garbage."""
    data = with_orientation(photo(20, 30, 1), 6, "PNG")
    idat = data.index(b"IDAT")
    damaged = data[: idat + 4] + b"\x00" * 64 + data[idat + 68 :]
    assert read_image_header(damaged).orientation == 6
    with pytest.raises(OSError):
        Image.open(io.BytesIO(damaged)).load()


def _folder_with(tmp_path, image_name: bytes, data: bytes, mask: np.ndarray):
    root = tmp_path / "data"
    write_folder(str(root))
    images, masks = os.fsencode(root / "images"), os.fsencode(root / "masks")
    with open(os.path.join(images, image_name + b".jpg"), "wb") as file:
        file.write(data)
    save_palette_png(mask, os.fsdecode(os.path.join(masks, image_name + b".png")))
    return str(root)


def test_dataset_image_turned_by_exif_to_its_mask_size_is_read_as_displayed(tmp_path):
    stored = photo(28, 50, 3)  # a phone photo stored 50x28, displayed 28x50; its mask drawn as displayed
    mask = blocky_mask(50, 28, [0, 1, 2], seed=3)
    root = _folder_with(tmp_path, b"phone", with_orientation(stored, 6), mask)
    examples = {name: (image, mask) for image, mask, name in open_folder(root).examples()}
    image, read_mask = examples["phone"]
    assert image.shape == (50, 28, 3)
    np.testing.assert_array_equal(read_mask, mask)
    # data convert keeps it as displayed (PNG of the turned pixels), so the shards read back the same size
    assert (
        main(["data", "convert", "--format", "folder", "--root", root, "--split", "all", "--out", str(tmp_path / "s")])
        == 0
    )
    shards = {name: image.shape for image, _, name in open_source("tfrecord", str(tmp_path / "s"), "all").examples()}
    assert shards["phone"] == (50, 28, 3)


def test_dataset_image_of_another_size_even_turned_is_named(tmp_path):
    root = _folder_with(tmp_path, b"phone", with_orientation(photo(28, 50, 3), 6), blocky_mask(40, 40, [0], seed=0))
    with pytest.raises(
        DataError, match=r"phone.png: mask is 40x40 .* is 50x28 \(displayed 28x50: EXIF orientation 6\)"
    ):
        list(open_folder(root).examples())


def test_non_utf8_file_name_is_read_by_train_pipeline_and_convert(tmp_path, capsys):
    name = b"caf\xe9"  # latin-1, not UTF-8
    root = _folder_with(tmp_path, name, encoded(photo(20, 24, 5), "JPEG"), blocky_mask(20, 24, [0, 1], seed=5))
    source = open_folder(root)
    dataset = source.records().map(source.decode_record)  # what train's input pipeline runs
    names = sorted(os.fsdecode(name.numpy()) for _, _, name in dataset)
    assert os.fsdecode(name) in names
    assert main(["data", "check", "--format", "folder", "--root", root, "--split", "all"]) == 0
    out = tmp_path / "shards"
    assert main(["data", "convert", "--format", "folder", "--root", root, "--split", "all", "--out", str(out)]) == 0
    read_back = [name for _, _, name in open_source("tfrecord", str(out), "all").examples()]
    assert os.fsdecode(name) in read_back
    capsys.readouterr()


def test_list_file_with_a_bom_or_a_latin1_byte(tmp_path, capsys):
    root = tmp_path / "voc"
    write_voc(str(root))
    listing = root / "ImageSets" / "Segmentation" / "train.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + listing.read_bytes())  # a Windows editor's byte-order mark
    assert [name for _, _, name in open_voc(str(root), "train").pairs] == ["2007_000001", "2007_000002", "2007_000003"]
    listing.write_bytes(b"2007_000001\n2007_00000\xe9\n")
    with pytest.raises(DataError, match=r"train.txt: line 2 is not UTF-8 text \(byte 0xe9\)"):
        open_voc(str(root), "train")
    assert main(["data", "check", "--format", "voc", "--root", str(root), "--split", "train"]) == 1
    assert "train.txt: line 2 is not UTF-8" in capsys.readouterr().out


def test_symlink_loop_folder_and_empty_file_are_named_for_what_they_are(tmp_path, capsys):
    root = tmp_path / "data"
    write_folder(str(root))
    (root / "images" / "loop.jpg").symlink_to(root / "images" / "loop.jpg")
    (root / "masks" / "loop.png").write_bytes(encoded(blocky_mask(8, 8, [0], 0), "PNG"))
    (root / "images" / "dir.png").mkdir()
    (root / "masks" / "dir.png").write_bytes(encoded(blocky_mask(8, 8, [0], 0), "PNG"))
    (root / "images" / "empty.png").write_bytes(b"")
    (root / "masks" / "empty.png").write_bytes(encoded(blocky_mask(8, 8, [0], 0), "PNG"))
    assert main(["data", "check", "--format", "folder", "--root", str(root), "--split", "all", "--json"]) == 1
    bad = {os.path.basename(item["file"]): item["problem"] for item in json.loads(capsys.readouterr().out)["bad"]}
    assert bad["loop.jpg"].startswith("is a symbolic link that leads nowhere")
    assert bad["dir.png"] == "is a folder, not a file"
    assert bad["empty.png"] == "the image file is empty (0 bytes)"
    assert not any("BytesIO" in problem for problem in bad.values())


def test_unidentified_image_does_not_show_a_bytesio(tmp_path):
    root = tmp_path / "data"
    write_folder(str(root))
    (root / "images" / "a.png").write_bytes(b"garbage, not a PNG")
    with pytest.raises(DataError, match=r"a.png: cannot decode the image: not an image format PIL reads$"):
        list(open_folder(str(root)).examples())


def test_export_runs_one_model_call_per_image_size():
    """Five hundred 1x1 and 2x1 images in one request: two model calls, each image's map at its place."""
    from types import SimpleNamespace

    from serving.export import DeepLabServing

    class CountingModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.calls = tf.Variable(0)
            self.output = SimpleNamespace(shape=(None, None, None, 3))

        def __call__(self, images, training=False):
            self.calls.assign_add(1)
            return tf.one_hot(tf.cast(images[..., 0] > 100, tf.int32), 3)

    model = CountingModel()
    module = DeepLabServing(model)
    dark, bright = np.zeros((1, 1, 3), np.uint8), np.full((1, 2, 3), 200, np.uint8)
    images = [encoded(dark, "PNG"), encoded(bright, "PNG")] * 250
    outputs = module.predict_encoded(tf.constant(images))
    assert int(model.calls.numpy()) == 2
    class_maps = outputs["class_map"].numpy()
    assert class_maps.shape == (500, 1, 2)
    np.testing.assert_array_equal(class_maps[0::2], [[[0, 255]]] * 250)  # 1x1, padded with the ignore label
    np.testing.assert_array_equal(class_maps[1::2], [[[1, 1]]] * 250)


# Issue 24: hostile inputs, round 2.


def tiny_tflite(size: int) -> bytes:
    """A 1 KB .tflite whose one input is a (1, size, size, 3) image: it asks for GBs of tensors at 8192."""
    function = tf.function(
        lambda x: tf.nn.relu(x * 2.0 + 1.0), input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)]
    )
    return tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], tf.Module()).convert()


def test_a_tflite_with_a_huge_input_is_refused_from_its_shapes_before_allocating(tmp_path, monkeypatch):
    from keras_deeplab import litert
    from serving.tflite import TFLiteModel

    path = tmp_path / "huge.tflite"
    path.write_bytes(tiny_tflite(8192))
    assert path.stat().st_size < 4096
    allocated = []
    monkeypatch.setattr("ai_edge_litert.interpreter.Interpreter.allocate_tensors", lambda self: allocated.append(self))
    with pytest.raises(ValueError, match=f"{path}: its input takes 8192x8192 images, over the pixel limit of 16777216"):
        TFLiteModel(path)
    # Any model, whatever its inputs: the tensors' sum (3 x 768 MiB here) against litert.MAX_TENSOR_BYTES.
    monkeypatch.setattr(litert, "MAX_TENSOR_BYTES", 2**30)
    with pytest.raises(ValueError, match=f"{path}: its tensors need 2.3 GiB, over the limit of 1 GiB"):
        litert.open_interpreter(path)
    assert not allocated


def crafted_keras_file(tmp_path, name: str, **build_config) -> str:
    """A small .keras file whose config.json's build_config is changed by `build_config`: what a hostile file
    says, with the real model's weights beside it."""
    import zipfile

    from keras_deeplab import build_model

    source = tmp_path / "source.keras"
    if not source.exists():
        build_model(16, num_classes=3, backbone="resnet50", width_multiplier=0.125, aspp_filters=8).save(source)
    path = tmp_path / name
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as crafted:
        for item in original.infolist():
            data = original.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["build_config"].update(build_config)
                data = json.dumps(config).encode()
            crafted.writestr(item, data)
    return str(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_classes": 10_000_000}, "num_classes must be an integer from 1 to 4096, got 10000000"),
        ({"aspp_filters": 2**31}, "aspp_filters must be an integer from 1 to 8192"),
        ({"width_multiplier": 1e6}, "width_multiplier must be above 0 and at most 4"),
        ({"input_shape": [100000, 100000, 3]}, r"input_shape must be \(H, W, 3\), each side None or 1 to 16384"),
        ({"extra_blocks": 1000}, r"extra_blocks must be an integer in 0\.\.3"),
    ],
)
def test_a_keras_file_whose_build_config_is_out_of_range_is_refused_before_building(tmp_path, change, message):
    # Issue 24 row 6: num_classes=10,000,000 in a 3 MB file took predict past 8 GB.
    from keras_deeplab.loading import load_model

    path = crafted_keras_file(tmp_path, "hostile.keras", **change)
    with pytest.raises(ValueError, match=f"{path}: not a readable .keras model file .*{message}"):
        load_model(path)


def test_a_keras_file_naming_backbone_weights_is_refused_without_opening_them(tmp_path):
    # Issue 24 row 7: the file named in build_config was opened ("not an HDF5 file" told whether a path exists).
    from keras_deeplab.loading import load_model

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened, it would block this test
    for named in ("/etc/passwd", str(tmp_path / "absent.h5"), str(fifo)):
        path = crafted_keras_file(tmp_path, "hostile.keras", backbone_weights=named)
        with pytest.raises(ValueError) as raised:
            load_model(path)
        assert "build_config names backbone_weights: a saved model holds its weights" in str(raised.value)
        assert named not in str(raised.value)  # nothing said about the path: whether it exists stays unknown


def sparse_tarball(tmp_path, name: str, files: dict[str, str]) -> str:
    """A tar.gz of sparse files (`truncate -s SIZE`, `tar --sparse`): a few hundred bytes that unpack to GBs."""
    import subprocess

    folder = tmp_path / f"{name}-content"
    folder.mkdir()
    for file_name, size in files.items():
        subprocess.run(["truncate", "-s", size, str(folder / file_name)], check=True)
    path = tmp_path / name
    subprocess.run(["tar", "--sparse", "-czf", str(path), "-C", str(folder), *files], check=True)
    for file_name in files:
        (folder / file_name).unlink()
    return str(path)


def test_a_sparse_tarball_bomb_is_refused_from_its_headers_before_extracting(tmp_path, monkeypatch):
    # Issue 24 row 4: a 148-byte tar.gz of a sparse 12 GB frozen graph took import-weights past 8 GB of memory.
    from keras_deeplab.importing import read_source

    bomb = sparse_tarball(tmp_path, "bomb.tar.gz", {"frozen_inference_graph.pb": "12G"})
    assert os.path.getsize(bomb) < 1000
    extracted = []
    monkeypatch.setattr("tarfile.TarFile._extract_one", lambda *args, **kwargs: extracted.append(args))
    with pytest.raises(ValueError, match=f"{bomb}: frozen_inference_graph.pb is 12884901888 bytes, over a GraphDef's"):
        read_source(bomb)
    # Checkpoint files too: their sizes add up against the cap; files the import does not read are skipped.
    checkpoint = sparse_tarball(
        tmp_path,
        "checkpoint.tar.gz",
        {"README.txt": "50G", "model.ckpt.index": "1K", "model.ckpt.data-00000-of-00001": "5G"},
    )
    with pytest.raises(
        ValueError, match=f"{checkpoint}: its checkpoint and graph files add up to more than 4294967296"
    ):
        read_source(checkpoint)
    assert not extracted


def test_a_big_frozen_graph_file_is_refused_from_its_size(tmp_path):
    from keras_deeplab.importing import read_source

    graph = tmp_path / "frozen_inference_graph.pb"
    os.truncate(os.open(graph, os.O_CREAT | os.O_WRONLY), 3 * 2**30)
    with pytest.raises(ValueError, match=f"{graph}: 3221225472 bytes, over a GraphDef's limit of 2147483647"):
        read_source(graph)


def test_import_weights_of_a_missing_path_says_no_such_file(tmp_path, capsys):
    # Issue 24 row 13a: "not a DeepLab weight source" of a path that is not there.
    missing = tmp_path / "deeplabv3_pascal_train_aug" / "model.ckpt-30000"
    assert main(["import-weights", str(missing), "--out", str(tmp_path / "out.keras")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"keras-deeplab import-weights: error: {missing}: no such file (nor a TF1 checkpoint {missing}.index)"


def test_data_convert_with_more_shards_than_examples_writes_no_empty_shard(tmp_path, capsys):
    # Issue 24 row 13a: --shards 8 of 5 examples wrote 3 empty shard files.
    root, out = tmp_path / "voc", tmp_path / "shards"
    write_voc(str(root), {"train": [f"2007_00000{index}" for index in range(5)]})
    convert = ["data", "convert", "--format", "voc", "--root", str(root), "--split", "train", "--out", str(out)]
    assert main([*convert, "--shards", "8"]) == 0
    assert capsys.readouterr().out.startswith("wrote 5 examples of voc/train to 5 shard(s) (not 8: no shard is left")
    assert sorted(os.listdir(out)) == [*(f"train-0000{shard}-of-00005.tfrecord" for shard in range(5)), "train.json"]
    metadata = json.loads((out / "train.json").read_text())
    assert metadata["examples_per_shard"] == [1] * 5
    assert sorted(name for _, _, name in open_source("tfrecord", str(out), "train").examples()) == [
        f"2007_00000{index}" for index in range(5)
    ]


def test_import_weights_checks_out_and_num_classes_before_importing(tmp_path, capsys, monkeypatch):
    # Issue 24 row 13: the error named the internal .tmp-PID-m.keras, after the whole import; "Received filters=0".
    imported = []
    monkeypatch.setattr("keras_deeplab.importing.import_weights", lambda *args, **kwargs: imported.append(args))
    afile = tmp_path / "afile"
    afile.write_text("")
    source = str(tmp_path / "model.tflite")
    for out, line in [
        (tmp_path / "missing" / "m.keras", f"{tmp_path / 'missing' / 'm.keras'}: cannot write it: "
         f"{tmp_path / 'missing'} does not exist"),
        (afile / "m.keras", f"{afile / 'm.keras'}: cannot write it: {afile} is not a folder"),
    ]:  # fmt: skip
        assert main(["import-weights", source, "--out", str(out)]) == 1
        assert capsys.readouterr().err.strip() == f"keras-deeplab import-weights: error: {line}"
    with pytest.raises(SystemExit) as exited:
        main(["import-weights", source, "--out", str(tmp_path / "m.keras"), "--num-classes", "0"])
    assert exited.value.code == 2
    assert "argument --num-classes: expected a number above 0, got 0" in capsys.readouterr().err
    assert not imported


def header_only_jpeg(width: int, height: int) -> bytes:
    """A few hundred bytes of JPEG header saying `width` x `height`, with no pixel data: a decompression bomb."""
    jpeg = bytearray(encoded(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(jpeg[: jpeg.index(b"\xff\xda")])  # up to the start of scan


def voc_with_bombs(tmp_path) -> str:
    """VOC train: 2007_000002 a header-only 20000x20000 JPEG (past PIL's own limit), 2007_000003 an empty mask;
    val: 2007_000004 a header-only 12000x12000 JPEG (under PIL's limit, over ours)."""
    root = tmp_path / "voc"
    write_voc(str(root))
    (root / "JPEGImages" / "2007_000002.jpg").write_bytes(header_only_jpeg(20000, 20000))
    (root / "SegmentationClass" / "2007_000003.png").write_bytes(b"")
    (root / "JPEGImages" / "2007_000004.jpg").write_bytes(header_only_jpeg(12000, 12000))
    return str(root)


def test_a_dataset_image_over_the_pixel_limit_is_reported_as_that_files_problem(tmp_path, capsys):
    # Issue 24 row 9: a 777-byte header-only 20000x20000 JPEG ended data check with PIL's DecompressionBombError,
    # and the report of the other files was lost.
    root = voc_with_bombs(tmp_path)
    assert main(["data", "check", "--format", "voc", "--root", root, "--split", "train", "--json"]) == 1
    bad = {os.path.basename(item["file"]): item["problem"] for item in json.loads(capsys.readouterr().out)["bad"]}
    assert bad == {
        "2007_000002.jpg": "the image is 20000x20000 = 400000000 pixels, over the limit of 16777216; not decoded",
        "2007_000003.png": "the mask file is empty (0 bytes)",
    }
    # Row 10: under PIL's own limit, a real 12000x12000 photo was decoded (and evaluate killed at 8 GB).
    with pytest.raises(DataError, match=r"2007_000004.jpg: the image is 12000x12000 = 144000000 pixels, over the"):
        list(open_voc(root, "val").examples())


def test_evaluate_and_train_name_the_bad_file_in_one_line(tmp_path, capsys):
    # Issue 24 rows 10 and 11: a bad pair met inside tf.data came out as a traceback.
    from keras_deeplab import build_model

    root = voc_with_bombs(tmp_path)
    model = tmp_path / "m.keras"
    build_model(16, num_classes=21, backbone="resnet50", width_multiplier=0.125, aspp_filters=8).save(model)
    assert main(["evaluate", "--model", str(model), "--format", "voc", "--root", root, "--split", "val"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"keras-deeplab evaluate: error: {root}/JPEGImages/2007_000004.jpg: the image is 12000x12000 = 144000000 "
        "pixels, over the limit of 16777216; not decoded"
    )
    settings = [
        f"model={json.dumps({'backbone': 'resnet50', 'width_multiplier': 0.125, 'aspp_filters': 8})}",
        "data.format=voc",
        f"data.root={root}",
        "data.options={}",
        "data.crop_size=65",
        "train.global_batch_size=2",
        "train.steps=3",
        f"run_dir={tmp_path / 'run'}",
    ]
    assert main(["train", "--recipe", "demo", "--no-progress", *(p for s in settings for p in ("--set", s))]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"keras-deeplab train: error: {root}/") and "\n" not in err
    assert err.endswith(("2007_000002.jpg: the image is 20000x20000 = 400000000 pixels, over the limit of 16777216; "
                         "not decoded", "2007_000003.png: the mask file is empty (0 bytes)"))  # fmt: skip


def test_predict_runs_a_keras_model_as_one_graph_for_every_image_size(tmp_path_factory):
    # Issue 24 row 8: run eagerly, predict kept every layer's result: 2.9 GB for a 1024x1024 photo (0.8 GB as a
    # graph), past 8 GB at 2048x2048.
    from serving_models import save_keras_model, shared_path

    from serving.predict import load_predictor

    keras_path = shared_path(tmp_path_factory, "tiny.keras", save_keras_model)
    predictor = load_predictor(keras_path)
    assert isinstance(predictor.predict_logits, tf.types.experimental.PolymorphicFunction)
    for height, width in ((33, 47), (64, 20)):
        assert predictor.predict_logits(tf.zeros((1, height, width, 3))).shape[1:3] == (height, width)
    assert predictor.predict_logits.experimental_get_tracing_count() == 1


def tf1_checkpoint(folder) -> str:
    """A TF1 checkpoint of one weight variable, as the model zoo's are written (Saver)."""
    prefix = str(folder / "model.ckpt-5")
    with tf.Graph().as_default():
        variable = tf.compat.v1.get_variable("conv/weights", initializer=tf.ones((4, 4)))
        with tf.compat.v1.Session() as session:
            session.run(variable.initializer)
            tf.compat.v1.train.Saver().save(session, prefix, write_meta_graph=False)
    return prefix


def test_a_checkpoint_whose_data_file_is_missing_or_cut_short_is_one_line(tmp_path, capsys):
    # Issue 24 row 11: an .index without its data file, or a data file cut to 100 bytes: tracebacks.
    prefix = tf1_checkpoint(tmp_path)
    data = f"{prefix}.data-00000-of-00001"
    os.truncate(data, 20)
    expected = f"keras-deeplab import-weights: error: {prefix}: its data files ({prefix}.data-*) are missing or damaged"
    assert main(["import-weights", prefix, "--out", str(tmp_path / "m.keras")]) == 1
    assert capsys.readouterr().err.startswith(expected)
    os.unlink(data)
    assert main(["import-weights", prefix, "--out", str(tmp_path / "m.keras")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(expected) and "No such file or directory" in err and len(err.splitlines()) == 1


def test_serve_refuses_a_port_past_65535(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "export", "--port", "70000"])
    assert exited.value.code == 2
    assert "argument --port: expected a port from 0 to 65535, got 70000" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("not json", "TF_CONFIG is not JSON (Expecting value: line 1 column 1 (char 0)); expected {"),
        ("[]", "TF_CONFIG is '[]'; expected {"),
        ('{"cluster": ["h:1"], "task": {"type": "worker", "index": 0}}', "TF_CONFIG's cluster is [\"h:1\"]: each job"),
        ('{"cluster": {"worker": "h:1"}, "task": {"type": "worker", "index": 0}}', "TF_CONFIG's cluster is {\"worker"),
        ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}',
         "TF_CONFIG's task is {\"type\": \"chief\", \"index\": 0}: its type must name a job of the cluster"),
        ('{"cluster": {"worker": ["h:1"]}, "task": {"type": ["worker"], "index": 0}}',
         "TF_CONFIG's task is {\"type\": [\"worker\"]"),
        *(
            (f'{{"cluster": {{"worker": ["h:1", "h:2"]}}, "task": {{"type": "worker", "index": {index}}}}}',
             f"TF_CONFIG's task index is {index}: expected a whole number from 0 to 1 (the worker job lists 2)")
            for index in ("-1", '"0"', "1.5", "2", "true")
        ),
    ],
)  # fmt: skip
def test_a_bad_tf_config_is_one_line_naming_it(tmp_path, capsys, monkeypatch, config, message):
    # Issue 24 rows 11 and 12: tracebacks, or "Expecting value: line 1 column 1" without the variable's name.
    monkeypatch.setenv("TF_CONFIG", config)
    assert main(["train", "--recipe", "demo", "--set", f"run_dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"keras-deeplab train: error: {message}") and len(err.splitlines()) == 1


def test_a_worker_says_which_peers_it_waits_for(monkeypatch, capsys):
    # Issue 24 row 12: a valid TF_CONFIG whose peer never comes was silence for 45 s and more.
    from keras_deeplab.recipe import DistributionSettings
    from keras_deeplab.training import strategy

    config = {"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", lambda: "joined")
    assert strategy.make_strategy(DistributionSettings()) == "joined"
    assert capsys.readouterr().out == (
        "worker 0: waiting for the other tasks of TF_CONFIG to start: chief 0 (h:1), worker 1 (h:3)\n"
    )
