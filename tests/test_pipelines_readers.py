"""Readers: every format gives PIL's pixels, exactly, eagerly and through tf.data."""

import os

import numpy as np
import pipelines_fixtures as fixtures
import pytest
import tensorflow as tf
from PIL import Image

from keras_deeplab.descriptors import CITYSCAPES, VOC
from pipelines import DataError, evaluation_dataset, open_source, write_tfrecords
from pipelines.decode import encode_png


def pil_mask(path):
    return np.array(Image.open(path))


def pil_image(path):
    return np.asarray(Image.open(path).convert("RGB"))


def eager_and_graph(source):
    """{name: (image, mask)} from examples() and from evaluation_dataset(), asserting that they agree."""
    eager = {name: (image, mask) for image, mask, name in source.examples()}
    graph = {name.decode(): (image[0], mask[0]) for image, mask, name in evaluation_dataset(source).as_numpy_iterator()}
    assert eager.keys() == graph.keys()
    for name, (image, mask) in eager.items():
        np.testing.assert_array_equal(graph[name][0], image.astype(np.float32))
        np.testing.assert_array_equal(graph[name][1], mask)
    return eager


def test_voc_masks_are_pil_palette_indices(tmp_path):
    masks = fixtures.write_voc(str(tmp_path))
    source = open_source("voc", str(tmp_path), "train")
    assert (len(source), source.num_classes, source.class_names) == (3, 21, VOC.class_names)
    assert source.descriptor is VOC
    examples = eager_and_graph(source)
    assert len(examples) == 3
    for name, (image, mask) in examples.items():
        assert Image.open(masks[name]).mode == "P"
        np.testing.assert_array_equal(mask, pil_mask(masks[name]))
        np.testing.assert_array_equal(image, pil_image(str(tmp_path / "JPEGImages" / f"{name}.jpg")))
        assert set(np.unique(mask)) <= {0, 1, 15, 20, 255} and 255 in mask and 15 in mask


def test_voc_aug_reads_names_and_path_pairs(tmp_path):
    masks = fixtures.write_voc(str(tmp_path), aug=True)
    source = open_source("voc_aug", str(tmp_path), "train_aug")
    examples = eager_and_graph(source)
    assert sorted(examples) == sorted(masks)
    for name, (_, mask) in examples.items():
        aug_path = tmp_path / "SegmentationClassAug" / f"{name}.png"
        assert Image.open(aug_path).mode == "L"
        np.testing.assert_array_equal(mask, pil_mask(aug_path))


def test_voc_accepts_the_vocdevkit_parent(tmp_path):
    fixtures.write_voc(str(tmp_path / "VOCdevkit" / "VOC2012"))
    assert len(open_source("voc", str(tmp_path), "val")) == 1


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    masks = fixtures.write_cityscapes(str(tmp_path))
    source = open_source("cityscapes", str(tmp_path), "train")
    assert source.num_classes == 19 and len(source) == 2
    assert source.descriptor is CITYSCAPES
    table = np.full(256, -1)
    table[:34] = 255  # labelIds 0..33 exist; those without a train id are ignored, any other value is refused
    for train_id, label_id in enumerate([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]):
        table[label_id] = train_id
    seen = set()
    for name, (image, mask) in eager_and_graph(source).items():
        label_ids = pil_mask(masks[name])
        np.testing.assert_array_equal(mask, table[label_ids])
        assert image.shape == (*label_ids.shape, 3)
        seen |= set(np.unique(mask).tolist())
    assert seen == {0, 1, 2, 11, 13, 18, 255}  # road, sidewalk, building, person, car, bicycle; unlabeled


def test_ade20k_keeps_annotation_values_as_class_ids_and_ignores_other(tmp_path):
    masks = fixtures.write_ade20k(str(tmp_path))
    for split in ("validation", "val"):
        source = open_source("ade20k", str(tmp_path), split)
        assert source.num_classes == 151 and source.class_names[:2] == ("other", "wall")
        seen = set()
        for name, (_, mask) in eager_and_graph(source).items():
            raw = pil_mask(masks[name]).astype(np.int64)
            np.testing.assert_array_equal(mask, np.where(raw == 0, 255, raw))
            seen |= set(np.unique(mask).tolist())
        assert seen == {1, 2, 150, 255}


def test_folder_with_class_list_and_split_list(tmp_path):
    masks = fixtures.write_folder(str(tmp_path))
    source = open_source("folder", str(tmp_path), "all")
    assert source.class_names == ("sky", "road", "car") and len(source) == 2
    for name, (_, mask) in eager_and_graph(source).items():
        np.testing.assert_array_equal(mask, pil_mask(masks[name]))
    assert [name for _, _, name in open_source("folder", str(tmp_path), "val").examples()] == ["b"]


def test_labelme_voc_export_is_read_with_its_own_classes(tmp_path):
    """labelme's VOC export: class_names.txt gives the classes, SegmentationClassPNG/ the masks, and without
    ImageSets/ every image is in every split; with split lists, a split is its list."""
    masks = fixtures.write_labelme_voc(str(tmp_path))
    for split in ("train", "val"):
        source = open_source("voc", str(tmp_path), split)
        assert source.name == f"{tmp_path.name}/{split}" and source.class_names == tuple(fixtures.LABELME_CLASSES)
        assert (source.num_classes, source.descriptor.background) == (7, 0)
        read = eager_and_graph(source)
        assert sorted(read) == sorted(masks)
        for name, (_, mask) in read.items():
            np.testing.assert_array_equal(mask, pil_mask(masks[name]))
    os.makedirs(tmp_path / "ImageSets" / "Segmentation")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("IMG_0002\n")
    assert [name for _, _, name in open_source("voc", str(tmp_path), "val").examples()] == ["IMG_0002"]
    with pytest.raises(DataError, match=r"train\.txt: split list is missing"):
        open_source("voc", str(tmp_path), "train")


def test_tfrecord_round_trip_is_lossless(tmp_path):
    fixtures.write_voc(str(tmp_path / "voc"))
    original = open_source("voc", str(tmp_path / "voc"), "train")
    metadata = write_tfrecords(original, str(tmp_path / "records"), shards=2)
    assert metadata["examples"] == 3 and metadata["examples_per_shard"] == [2, 1]
    assert sorted(os.listdir(tmp_path / "records")) == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "train.json",
    ]  # no temporary file left behind
    copy = open_source("tfrecord", str(tmp_path / "records"), "train")
    assert (len(copy), copy.num_classes, copy.class_names) == (3, 21, VOC.class_names)
    assert (copy.descriptor.name, copy.descriptor.palette, copy.descriptor.background) == ("voc", VOC.palette, 0)
    assert copy.descriptor.label_map is None  # the shards hold class ids
    before = {name: (image, mask) for image, mask, name in original.examples()}
    after = eager_and_graph(copy)
    assert before.keys() == after.keys()
    for name, (image, mask) in before.items():
        np.testing.assert_array_equal(after[name][0], image)
        np.testing.assert_array_equal(after[name][1], mask)
    record = next(iter(tf.data.TFRecordDataset(str(tmp_path / "records" / "train-00000-of-00002.tfrecord"))))
    features = tf.train.Example.FromString(record.numpy()).features.feature
    name = features["image/filename"].bytes_list.value[0].decode()
    with open(tmp_path / "voc" / "JPEGImages" / f"{name}.jpg", "rb") as file:
        assert features["image/encoded"].bytes_list.value[0] == file.read()  # the JPEG itself, not re-encoded


def test_tfrecord_converter_command(tmp_path):
    from keras_deeplab.cli import main

    fixtures.write_ade20k(str(tmp_path / "ade"))
    out = str(tmp_path / "records")
    assert (
        main(
            [
                "data",
                "convert",
                "--format",
                "ade20k",
                "--root",
                str(tmp_path / "ade"),
                "--split",
                "validation",
                "--out",
                out,
                "--shards",
                "3",
            ]
        )
        == 0
    )
    copy = open_source("tfrecord", out, "validation")
    assert len(copy) == 2 and copy.num_classes == 151
    assert {name for _, _, name in copy.examples()} == {"ADE_val_00000001", "ADE_val_00000002"}


def test_missing_list_and_folder_are_named(tmp_path):
    fixtures.write_voc(str(tmp_path))
    with pytest.raises(DataError, match=r"test\.txt.*split list is missing.*train, val"):
        open_source("voc", str(tmp_path), "test")
    with pytest.raises(DataError, match="not a PASCAL VOC 2012 folder"):
        open_source("voc", str(tmp_path / "nowhere"), "train")
    with pytest.raises(DataError, match=r"leftImg8bit/train.*folder is missing"):
        open_source("cityscapes", str(tmp_path), "train")
    with pytest.raises(ValueError, match="format must be one of"):
        open_source("coco", str(tmp_path), "train")


def test_shared_voc_sample_equals_pil(shared_data_dir):
    root = os.path.join(shared_data_dir, "voc2012_sample")
    source = open_source("voc", root, "trainval")
    examples = eager_and_graph(source)
    assert sorted(examples) == ["2007_000032", "2007_000033", "2007_000039"]
    for name, (image, mask) in examples.items():
        path = os.path.join(root, "SegmentationClass", f"{name}.png")
        assert Image.open(path).mode == "P"
        np.testing.assert_array_equal(mask, pil_mask(path))
        assert mask.shape == image.shape[:2] and mask.max() == 255 and 0 < (mask == 255).mean() < 0.2
    assert set(np.unique(examples["2007_000032"][1])) == {0, 1, 15, 255}  # aeroplanes and people, by index


def test_shared_ade20k_sample_equals_pil(shared_data_dir):
    root = os.path.join(shared_data_dir, "ade20k_sample")
    for name, (_, mask) in eager_and_graph(open_source("ade20k", root, "validation")).items():
        raw = pil_mask(os.path.join(root, "annotations", "validation", f"{name}.png")).astype(np.int64)
        np.testing.assert_array_equal(mask, np.where(raw == 0, 255, raw))


def mock_tfds_examples(features: dict):
    """A tfds.testing.mock_data `as_dataset_fn` yielding `features`, arrays PNG-encoded as with SkipDecoding.

    (TFDS's own fakes give images and masks of independent random sizes.)
    """

    def encode(value):
        return encode_png(value[..., 0] if value.ndim == 3 and value.shape[-1] == 1 else value)

    encoded = {
        key: [encode(item) for item in value] if isinstance(value, np.ndarray) else value
        for key, value in features.items()
    }

    def as_dataset(builder, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices(encoded)

    return as_dataset


@pytest.mark.parametrize(
    ("dataset", "image_key", "mask_key", "raw_values", "expected"),
    [
        ("oxford_iiit_pet", "image", "segmentation_mask", [1, 2, 3], {1: 1, 2: 0, 3: 255}),
        ("scene_parse150", "image", "annotation", [0, 1, 150], {0: 255, 1: 1, 150: 150}),
        ("cityscapes", "image_left", "segmentation_label", [0, 7, 26, 33], {0: 255, 7: 0, 26: 13, 33: 18}),
    ],
)
def test_tfds_sources_map_labels(dataset, image_key, mask_key, raw_values, expected):
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    channels = 3 if dataset == "scene_parse150" else 1  # TFDS keeps ADE's instance PNG: category in channel 0
    raw = rng.choice(raw_values, (2, 21, 17, channels)).astype(np.uint8)
    features = {image_key: rng.integers(0, 256, (2, 21, 17, 3), dtype=np.uint8), mask_key: raw}
    if dataset != "scene_parse150":
        features["file_name" if dataset == "oxford_iiit_pet" else "image_id"] = ["first", "second"]
    with tfds.testing.mock_data(as_dataset_fn=mock_tfds_examples(features)):
        source = open_source("tfds", "/nonexistent/tfds", "train", dataset=dataset)
        examples = eager_and_graph(source)
    assert len(source) == 2 and len(examples) == 2
    for index, (image, mask) in enumerate(examples.values()):
        np.testing.assert_array_equal(image, features[image_key][index])
        np.testing.assert_array_equal(mask, np.vectorize(expected.get)(raw[index, ..., 0]))


def test_tfds_mismatched_sizes_are_named_or_skipped():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2):  # TFDS's fakes: image and mask of independent random sizes
        with pytest.raises(DataError, match=r"scene_parse150/train\[0\]: mask is \d+x\d+ \(WxH\) but its image"):
            list(open_source("tfds", "/nonexistent/tfds", "train", dataset="scene_parse150").examples())
        source = open_source("tfds", "/nonexistent/tfds", "train", dataset="scene_parse150", skip_bad=True)
        assert list(source.examples()) == [] and len(source.skipped) == 2
