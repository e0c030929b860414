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
from pipelines.decode import ACCEPTED_IMAGE_FORMATS, apply_orientation, read_image_header
from pipelines.errors import DataError
from pipelines.formats import open_source
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
