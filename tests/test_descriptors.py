"""Dataset descriptors: the published colours and label maps, picking one, and their use in pictures and tables."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_deeplab.constants import IGNORE_LABEL
from keras_deeplab.descriptors import (
    ADE20K,
    CITYSCAPES,
    OXFORD_PET,
    VOC,
    DatasetDescriptor,
    descriptor_for,
    descriptor_for_num_classes,
    make_descriptor,
    model_descriptor,
    voc_colormap,
)
from keras_deeplab.visualize import colorize, overlay, save_palette_png
from pipelines.decode import INVALID, descriptor_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_voc_colours_are_the_devkit_colour_map():
    assert VOC.num_classes == 21 and VOC.class_names[15] == "person"
    assert VOC.palette[15] == (192, 128, 128) and VOC.palette[1] == (128, 0, 0) and VOC.palette[0] == (0, 0, 0)
    assert VOC.ignore_color == (224, 224, 192) and VOC.ignore_label == IGNORE_LABEL == 255
    assert VOC.colormap().tolist() == [list(color) for color in voc_colormap()]  # byte for byte the old palette PNGs
    assert VOC.label_map is None and VOC.background == 0


def test_cityscapes_train_ids_colours_and_label_ids():
    assert CITYSCAPES.num_classes == 19 and CITYSCAPES.class_names[:2] == ("road", "sidewalk")
    assert CITYSCAPES.palette[0] == (128, 64, 128)  # road
    assert CITYSCAPES.palette[11] == (220, 20, 60) and CITYSCAPES.class_names[11] == "person"
    assert CITYSCAPES.palette[18] == (119, 11, 32) and CITYSCAPES.class_names[18] == "bicycle"
    assert (CITYSCAPES.label_map[7], CITYSCAPES.label_map[26], CITYSCAPES.label_map[33]) == (0, 13, 18)
    assert CITYSCAPES.label_map[0] == CITYSCAPES.label_map[6] == IGNORE_LABEL  # unlabeled, ground
    table = descriptor_table(CITYSCAPES)
    assert table[7] == 0 and table[1] == 255 and table[34] == INVALID and table[255] == INVALID
    assert CITYSCAPES.background is None  # road is coloured in overlays


def test_ade20k_colours_are_the_official_deeplab_colour_map():
    # tensorflow/models research/deeplab: utils/get_dataset_colormap.py create_ade20k_label_colormap() (151
    # colours, entry 0 "other" black) and datasets/data_generator.py _ADE20K_INFORMATION (151 classes, annotation 0
    # ignored): the class ids are the annotation values, as the published 151-class models have them.
    official_head = [(0, 0, 0), (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3)]
    official_tail = [(25, 194, 194), (102, 255, 0), (92, 0, 255)]
    assert list(ADE20K.palette[:6]) == official_head and list(ADE20K.palette[-3:]) == official_tail
    assert ADE20K.num_classes == len(ADE20K.palette) == 151 and ADE20K.ignore_color == (0, 0, 0)
    assert ADE20K.class_names[:3] == ("other", "wall", "building") and ADE20K.class_names[150] == "flag"
    assert ADE20K.palette[13] == (150, 5, 61) and ADE20K.class_names[13] == "person"
    table = descriptor_table(ADE20K)
    assert (table[0], table[1], table[13], table[150], table[151]) == (255, 1, 13, 150, INVALID)
    assert ADE20K.background == 0  # "other" stays uncoloured in overlays, as the ignored annotation 0 does


def test_oxford_pet_trimaps():
    assert OXFORD_PET.class_names == ("background", "pet")
    assert dict(OXFORD_PET.label_map) == {1: 1, 2: 0, 3: IGNORE_LABEL}
    assert descriptor_table(OXFORD_PET)[[0, 1, 2, 3]].tolist() == [INVALID, 1, 0, 255]


def test_descriptor_for_names_and_aliases():
    assert descriptor_for("voc") is VOC and descriptor_for("voc_aug") is VOC
    assert descriptor_for("cityscapes/semantic_segmentation") is CITYSCAPES
    assert descriptor_for("scene_parse150") is ADE20K and descriptor_for("ADE20K") is ADE20K
    assert descriptor_for("oxford_iiit_pet") is OXFORD_PET
    with pytest.raises(ValueError, match="no descriptor for dataset 'coco'"):
        descriptor_for("coco")


def test_descriptor_for_num_classes_picks_by_class_count():
    assert descriptor_for_num_classes(21) is VOC
    assert descriptor_for_num_classes(19) is CITYSCAPES
    assert descriptor_for_num_classes(151) is ADE20K and descriptor_for_num_classes(150).name == "150_classes"
    assert model_descriptor("ade.keras", 151, descriptor_for("ade20k")) is ADE20K
    generic = descriptor_for_num_classes(7)
    assert generic.num_classes == 7 and generic.palette == tuple(voc_colormap(7)) and generic.background == 0
    with pytest.raises(ValueError, match="cannot be coloured"):
        descriptor_for_num_classes(300)


def test_make_descriptor_defaults_and_validation():
    folder = make_descriptor("mine", ["sky", "road", "car"])
    assert folder.palette == tuple(voc_colormap(3)) and folder.background is None and folder.label_map is None
    assert make_descriptor("pets", ["background", "cat"]).background == 0
    custom = make_descriptor("two", ["a", "b"], palette=[(1, 2, 3), (4, 5, 6)], label_map={10: 0, 20: 1, 0: 255})
    assert custom.colormap()[:2].tolist() == [[1, 2, 3], [4, 5, 6]] and custom.colormap()[255].tolist() == [
        224,
        224,
        192,
    ]
    assert descriptor_table(custom)[[0, 10, 20, 1]].tolist() == [255, 0, 1, INVALID]
    with pytest.raises(ValueError, match="2 palette colours for 3 classes"):
        DatasetDescriptor("bad", ("a", "b", "c"), ((0, 0, 0), (1, 1, 1)))
    with pytest.raises(ValueError, match="sends 5 to 7"):
        make_descriptor("bad", ["a"], label_map={5: 7})
    with pytest.raises(ValueError, match=r"expected \(r, g, b\)"):
        make_descriptor("bad", ["a"], palette=[(0, 0, 256)])
    with pytest.raises(AttributeError):
        VOC.name = "other"  # frozen
    with pytest.raises(TypeError):
        CITYSCAPES.label_map[7] = 3  # read-only


def test_cityscapes_overlay_and_palette_png_use_cityscapes_colours(tmp_path):
    mask = np.array([[0, 11, 255], [13, 0, 18]], np.uint8)  # road, person, ignored / car, road, bicycle
    image = np.full((2, 3, 3), 100, np.uint8)
    colours = colorize(mask, CITYSCAPES)
    assert colours[0].tolist() == [[128, 64, 128], [220, 20, 60], [0, 0, 0]]
    blended = overlay(image, mask, alpha=1.0, palette=CITYSCAPES)
    assert blended[0, 0].tolist() == [128, 64, 128]  # road is a class, not a background: coloured
    assert blended[0, 2].tolist() == [100, 100, 100]  # the ignore label stays uncoloured
    assert blended[1, 1].tolist() == [128, 64, 128] and blended[1, 2].tolist() == [119, 11, 32]
    voc_blend = overlay(image, mask, alpha=1.0)  # default VOC: class 0 is background, left as it was
    assert voc_blend[0, 0].tolist() == [100, 100, 100] and voc_blend[0, 1].tolist() == list(VOC.palette[11])
    save_palette_png(tmp_path / "city.png", mask, CITYSCAPES)
    picture = Image.open(tmp_path / "city.png")
    assert picture.mode == "P" and picture.getpalette()[:6] == [128, 64, 128, 244, 35, 232]
    np.testing.assert_array_equal(np.array(picture), mask)
    np.testing.assert_array_equal(np.array(picture.convert("RGB")), colours)
    array_palette = colorize(mask, np.array(CITYSCAPES.palette))  # an array: classes as given, the rest VOC's
    assert array_palette[0, 0].tolist() == [128, 64, 128] and array_palette[0, 2].tolist() == [224, 224, 192]


def test_importing_descriptors_and_confusion_loads_neither_tensorflow_nor_keras():
    # The package's __init__ imports the model (and so TensorFlow); the bottom-layer modules themselves must
    # not. Stand in a bare package so only their own imports run.
    code = (
        "import sys, types\n"
        f"package = types.ModuleType('keras_deeplab'); package.__path__ = [{os.path.join(ROOT, 'keras_deeplab')!r}]\n"
        "sys.modules['keras_deeplab'] = package\n"
        "import keras_deeplab.descriptors, keras_deeplab.confusion\n"
        "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
