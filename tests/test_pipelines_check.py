"""Bad input: `data check` finds every planted bad file; errors name the file, eagerly and inside tf.data."""

import json
import os

import numpy as np
import pipelines_fixtures as fixtures
import pytest
import tensorflow as tf
from PIL import Image

from keras_deeplab.cli import main
from pipelines import DataError, open_source, training_dataset

GOOD = ["2008_000001", "2008_000002"]
BAD = {  # name -> (file the error must name, words its problem must contain)
    "truncated_image": ("JPEGImages/truncated_image.jpg", "cannot decode the image"),
    "garbage_mask": ("SegmentationClass/garbage_mask.png", "cannot decode the mask"),
    "other_size": ("SegmentationClass/other_size.png", "expected the same size"),
    "label_42": ("SegmentationClass/label_42.png", "mask values [42] are neither a class nor the ignore label"),
    "rgb_mask": ("SegmentationClass/rgb_mask.png", "mask mode is 'RGB'"),
    "missing_image": ("JPEGImages/missing_image.jpg", "file is missing (named in"),
}


def plant_bad_pairs(root: str) -> None:
    """A VOC train split of 2 good pairs and one pair for each problem in BAD."""
    fixtures.write_voc(root, {"train": GOOD + list(BAD)})
    path = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    with open(path("JPEGImages", "truncated_image.jpg"), "rb") as file:
        data = file.read()
    with open(path("JPEGImages", "truncated_image.jpg"), "wb") as file:
        file.write(data[: len(data) // 2])
    with open(path("SegmentationClass", "garbage_mask.png"), "wb") as file:
        file.write(b"this is not a PNG")
    fixtures.save_palette_png(np.zeros((7, 9), np.uint8), path("SegmentationClass", "other_size.png"))
    label_42 = np.array(Image.open(path("SegmentationClass", "label_42.png")))
    label_42[2:4, 2:4] = 42
    fixtures.save_palette_png(label_42, path("SegmentationClass", "label_42.png"))
    Image.open(path("SegmentationClass", "rgb_mask.png")).convert("RGB").save(path("SegmentationClass", "rgb_mask.png"))
    os.remove(path("JPEGImages", "missing_image.jpg"))


def test_data_check_finds_every_planted_bad_file(tmp_path, capsys):
    plant_bad_pairs(str(tmp_path))
    status = main(["data", "check", "--format", "voc", "--root", str(tmp_path), "--split", "train", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1
    assert report["examples"] == len(GOOD)
    problems = {os.path.relpath(item["file"], tmp_path): item["problem"] for item in report["bad"]}
    assert problems.keys() == {file for file, _ in BAD.values()}
    for file, words in BAD.values():
        assert words in problems[file], (file, problems[file])
    good_pixels = sum(np.array(Image.open(tmp_path / "SegmentationClass" / f"{name}.png")).size for name in GOOD)
    assert sum(report["class_pixels"]) + report["ignored_pixels"] == good_pixels
    assert len(report["class_pixels"]) == 21 and report["class_pixels"][15] > 0 and report["ignored_pixels"] > 0
    assert (report["dataset"], report["ignore_label"], report["class_names"][15]) == ("voc", 255, "person")


def test_data_check_passes_a_clean_split(tmp_path, capsys):
    fixtures.write_voc(str(tmp_path))
    assert main(["data", "check", "--format", "voc", "--root", str(tmp_path), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "voc/train: 3 examples" in out and "person" in out and "BAD" not in out


def test_data_check_of_a_missing_split_exits_non_zero(tmp_path, capsys):
    fixtures.write_voc(str(tmp_path))
    assert main(["data", "check", "--format", "voc", "--root", str(tmp_path), "--split", "nope", "--json"]) == 1
    (bad,) = json.loads(capsys.readouterr().out)["bad"]
    assert bad["file"].endswith("nope.txt") and "split list is missing" in bad["problem"]


def test_without_skip_bad_the_first_bad_file_is_raised_by_name(tmp_path):
    plant_bad_pairs(str(tmp_path))
    with pytest.raises(DataError, match=r"missing_image\.jpg: file is missing .*"):
        open_source("voc", str(tmp_path), "train")
    os.remove(tmp_path / "SegmentationClass" / "missing_image.png")
    with open(tmp_path / "ImageSets" / "Segmentation" / "train.txt", "w") as file:
        file.write("2008_000001\ntruncated_image\n")
    source = open_source("voc", str(tmp_path), "train")
    with pytest.raises(DataError, match=r"truncated_image\.jpg: cannot decode the image"):
        list(source.examples())
    batches = training_dataset(source, crop_size=33, batch_size=2, shuffle_buffer=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"truncated_image\.jpg: cannot decode the image"):
        next(iter(batches))  # the error inside tf.data still names the file


def test_skip_bad_skips_counts_and_reports(tmp_path):
    plant_bad_pairs(str(tmp_path))
    source = open_source("voc", str(tmp_path), "train", skip_bad=True)
    assert len(source) == len(GOOD) + len(BAD) - 1  # the pair with a missing file is out from the start
    assert [item["file"] for item in source.skipped.as_list()] == [str(tmp_path / "JPEGImages" / "missing_image.jpg")]
    images, masks = next(iter(training_dataset(source, crop_size=33, batch_size=8, seed=1)))
    assert images.shape == (8, 33, 33, 3) and masks.shape == (8, 33, 33)
    assert len(source.skipped) == len(BAD)  # every bad pair met in the first epoch, each listed once
    report = source.skipped.report()
    assert report.startswith(f"{len(BAD)} bad example(s) skipped:") and "label_42.png: mask values [42]" in report
    assert [name for _, _, name in source.examples()] == GOOD


def test_convert_refuses_bad_input_and_leaves_no_shard(tmp_path, capsys):
    plant_bad_pairs(str(tmp_path / "voc"))
    os.remove(tmp_path / "voc" / "SegmentationClass" / "missing_image.png")
    with open(tmp_path / "voc" / "ImageSets" / "Segmentation" / "train.txt", "w") as file:
        file.write("2008_000001\nlabel_42\n")
    out = str(tmp_path / "records")
    arguments = ["data", "convert", "--format", "voc", "--root", str(tmp_path / "voc"), "--split", "train"]
    assert main([*arguments, "--out", out]) == 1
    assert "label_42.png: mask values [42]" in capsys.readouterr().err
    assert os.listdir(out) == []  # the partial shard was removed, never renamed into place
    assert main([*arguments, "--out", out, "--skip-bad"]) == 0
    assert "1 bad example(s) skipped" in capsys.readouterr().out
    assert len(open_source("tfrecord", out, "train")) == 1


def test_training_on_nothing_but_bad_pairs_fails_instead_of_spinning(tmp_path):
    plant_bad_pairs(str(tmp_path))
    with open(tmp_path / "ImageSets" / "Segmentation" / "train.txt", "w") as file:
        file.write("truncated_image\nlabel_42\nmissing_image\n")
    source = open_source("voc", str(tmp_path), "train", skip_bad=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="voc/train: every example is bad"):
        next(iter(training_dataset(source, crop_size=17, batch_size=1)))


def test_a_truncated_tfrecord_shard_is_named(tmp_path, capsys):
    from pipelines import write_tfrecords

    fixtures.write_voc(str(tmp_path / "voc"))
    out = tmp_path / "records"
    write_tfrecords(open_source("voc", str(tmp_path / "voc"), "train"), str(out), shards=2)
    shard = out / "train-00001-of-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"train-00001-of-00002\.tfrecord: cannot read the TFRecord shard"):
        list(open_source("tfrecord", str(out), "train").examples())
    assert main(["data", "check", "--format", "tfrecord", "--root", str(out), "--split", "train", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 2 and [item["file"] for item in report["bad"]] == [str(shard)]
