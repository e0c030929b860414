"""Readers of the dataset layouts found on disk; each returns a FilePairSource of one split.

- PASCAL VOC 2012: `JPEGImages/*.jpg`, `SegmentationClass/*.png` (palette PNGs whose indices are the ids),
  `ImageSets/Segmentation/{split}.txt`. A dataset in its layout (labelme's VOC export) has its own classes in
  `class_names.txt`, its masks in `SegmentationClassPNG/` when `SegmentationClass/` holds no PNG; without
  `ImageSets/Segmentation/`, every image of `JPEGImages/` is in every split.
- SBD-augmented VOC ("voc_aug", the paper's 10,582 training images): `SegmentationClassAug/*.png` grayscale,
  listed in `ImageSets/Segmentation/train_aug.txt` (one name per line, or "image-path mask-path" pairs).
- Cityscapes: `leftImg8bit/{split}/{city}/*_leftImg8bit.png` with `gtFine/{split}/{city}/*_gtFine_labelIds.png`,
  labelIds mapped to the 19 train ids, everything else IGNORE_LABEL.
- ADE20K SceneParsing: `images/{training,validation}/*.jpg`, `annotations/.../*.png`: DeepLab's 151 classes,
  0 ("other") ignored, 1..150 the class ids.
- A folder: `images/*.{jpg,jpeg,png,bmp}`, `masks/<same name>.png`, `classes.txt` (one class name per line,
  line i = class id i); split "all" is every image, another split reads the names in `{split}.txt`.

Each source carries its dataset's descriptor (keras_deeplab.descriptors), whose label map turns the stored mask
values into class ids.
"""

from __future__ import annotations

import glob
import os

from keras_deeplab.descriptors import ADE20K, CITYSCAPES, VOC
from pipelines.errors import DataError
from pipelines.lists import class_list_descriptor, find_class_list, read_list
from pipelines.source import FilePairSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def _require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise DataError(path, f"{what} folder is missing")
    return path


def _voc_root(root: str) -> str:
    """`root` itself, or `root/VOCdevkit/VOC2012` / `root/VOC2012` when the user points above it."""
    for candidate in (root, os.path.join(root, "VOCdevkit", "VOC2012"), os.path.join(root, "VOC2012")):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise DataError(root, "not a PASCAL VOC 2012 folder: no JPEGImages/ (nor VOCdevkit/VOC2012/JPEGImages/)")


VOC_MASK_FOLDERS = ("SegmentationClass", "SegmentationClassPNG")  # labelme's export: .npy in the first


def open_voc(root: str, split: str = "train", skip_bad: bool = False) -> FilePairSource:
    """PASCAL VOC 2012 segmentation, split train / val / trainval; or a dataset in VOC's layout, with its own
    classes when it has a `class_names.txt` (labelme's export: its masks in `SegmentationClassPNG/`). Without
    `ImageSets/Segmentation/`, every image of `JPEGImages/` is in every split."""
    root = _voc_root(root)
    class_list = find_class_list(root)
    descriptor = VOC if class_list is None else class_list_descriptor(class_list)
    masks = next(
        (os.path.join(root, folder) for folder in VOC_MASK_FOLDERS if glob.glob(os.path.join(root, folder, "*.png"))),
        os.path.join(root, VOC_MASK_FOLDERS[0]),
    )
    lists = os.path.join(root, "ImageSets", "Segmentation")
    list_path = None
    if os.path.isdir(lists):
        list_path = os.path.join(lists, f"{split}.txt")
        images = {name: os.path.join(root, "JPEGImages", f"{name}.jpg") for name in read_list(list_path, "split list")}
    else:
        images = _images_by_name(os.path.join(root, "JPEGImages"))
        if not images:
            raise DataError(os.path.join(root, "JPEGImages"), f"no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    pairs = [(image, os.path.join(masks, f"{name}.png"), name) for name, image in images.items()]
    return FilePairSource(
        f"voc/{split}" if class_list is None else f"{descriptor.name}/{split}",
        pairs,
        descriptor=descriptor,
        skip_bad=skip_bad,
        listed_in=list_path,
    )


def open_voc_aug(root: str, split: str = "train_aug", skip_bad: bool = False) -> FilePairSource:
    """VOC 2012 with SBD's extra masks (`SegmentationClassAug/`), split train_aug (or any list beside it)."""
    root = _voc_root(root)
    list_path = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    pairs = []
    for line in read_list(list_path, "split list"):
        fields = line.split()
        if len(fields) == 2:  # "/JPEGImages/x.jpg /SegmentationClassAug/x.png", relative to root
            image_path, mask_path = (os.path.join(root, field.lstrip("/")) for field in fields)
            name = os.path.splitext(os.path.basename(image_path))[0]
        elif len(fields) == 1:
            name = fields[0]
            image_path = os.path.join(root, "JPEGImages", f"{name}.jpg")
            mask_path = os.path.join(root, "SegmentationClassAug", f"{name}.png")
        else:
            raise DataError(list_path, f"line {line!r}: expected a name or 'image-path mask-path'")
        pairs.append((image_path, mask_path, name))
    return FilePairSource(
        f"voc_aug/{split}",
        pairs,
        descriptor=VOC,
        skip_bad=skip_bad,
        listed_in=list_path,
    )


def open_cityscapes(root: str, split: str = "train", skip_bad: bool = False) -> FilePairSource:
    """Cityscapes fine annotations, split train / val / test, masks in the 19 train ids."""
    image_root = _require_dir(os.path.join(root, "leftImg8bit", split), "Cityscapes image")
    suffix = "_leftImg8bit.png"
    pairs = []
    for image_path in sorted(glob.glob(os.path.join(image_root, "*", f"*{suffix}"))):
        city = os.path.basename(os.path.dirname(image_path))
        name = os.path.basename(image_path)[: -len(suffix)]
        mask_path = os.path.join(root, "gtFine", split, city, f"{name}_gtFine_labelIds.png")
        pairs.append((image_path, mask_path, name))
    if not pairs:
        raise DataError(image_root, f"no */*{suffix} images found")
    return FilePairSource(
        f"cityscapes/{split}",
        pairs,
        descriptor=CITYSCAPES,
        skip_bad=skip_bad,
    )


ADE20K_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def open_ade20k(root: str, split: str = "training", skip_bad: bool = False) -> FilePairSource:
    """ADE20K SceneParsing (ADEChallengeData2016), split training / validation (or train / val)."""
    if split not in ADE20K_SPLITS:
        raise ValueError(f"ADE20K split must be one of {sorted(ADE20K_SPLITS)}, got {split!r}")
    if not os.path.isdir(os.path.join(root, "images")) and os.path.isdir(os.path.join(root, "ADEChallengeData2016")):
        root = os.path.join(root, "ADEChallengeData2016")
    folder = ADE20K_SPLITS[split]
    image_root = _require_dir(os.path.join(root, "images", folder), "ADE20K image")
    pairs = [
        (path, os.path.join(root, "annotations", folder, f"{name}.png"), name)
        for path in sorted(glob.glob(os.path.join(image_root, "*.jpg")))
        for name in [os.path.splitext(os.path.basename(path))[0]]
    ]
    if not pairs:
        raise DataError(image_root, "no *.jpg images found")
    return FilePairSource(
        f"ade20k/{folder}",
        pairs,
        descriptor=ADE20K,
        skip_bad=skip_bad,
    )


def _images_by_name(folder: str) -> dict[str, str]:
    """Name (the file's stem) -> path of every image (IMAGE_EXTENSIONS) in `folder`, sorted; DataError on two
    images of one name."""
    images: dict[str, str] = {}
    for file_name in sorted(os.listdir(folder)):
        name, extension = os.path.splitext(file_name)
        if extension.lower() in IMAGE_EXTENSIONS:
            if name in images:
                raise DataError(os.path.join(folder, file_name), f"a second image named {name!r}")
            images[name] = os.path.join(folder, file_name)
    return images


def open_folder(root: str, split: str = "all", skip_bad: bool = False) -> FilePairSource:
    """A plain folder: images/, masks/ (PNG, same name), classes.txt; split "all" or the names in {split}.txt."""
    descriptor = class_list_descriptor(
        os.path.join(root, "classes.txt"), os.path.basename(os.path.normpath(root)) or "folder"
    )
    image_root = _require_dir(os.path.join(root, "images"), "image")
    images = _images_by_name(image_root)
    list_path = None
    if split == "all":
        names = list(images)
    else:
        list_path = os.path.join(root, f"{split}.txt")
        names = read_list(list_path, "split list")
    pairs = [
        (images.get(name, os.path.join(image_root, f"{name}.jpg")), os.path.join(root, "masks", f"{name}.png"), name)
        for name in names
    ]
    if not pairs:
        raise DataError(image_root, f"no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return FilePairSource(
        f"folder/{split}",
        pairs,
        descriptor=descriptor,
        skip_bad=skip_bad,
        listed_in=list_path,
    )
