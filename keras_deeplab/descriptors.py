"""One descriptor per dataset: class names, ignore label, colours, stored-value map and splits, in one place.

Like deeplab2's `DatasetDescriptor`. Pure Python and NumPy (no TensorFlow, no Keras), so every layer can read
it: the readers take their label maps from it, sources carry it, overlays and TensorBoard images take its
colours. `descriptor_for(name)` gives a known dataset's descriptor, `descriptor_for_num_classes(n)` the colours
for a model whose dataset is unknown (`model_descriptor` checks a chosen one against the model), and
`make_descriptor` one for a dataset whose classes are known only when it is opened (a folder's classes.txt,
TFRecord metadata, the synthetic set).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keras_deeplab.constants import IGNORE_LABEL

if TYPE_CHECKING:
    import numpy as np

Color = tuple[int, int, int]


def voc_colormap(num_colors: int = 256) -> list[Color]:
    """The VOC development kit's colour map (`labelcolormap.m`): class id -> (r, g, b), 256 entries.

    Entry 255 (the ignore label) is (224, 224, 192), the cream of VOC's object boundaries.
    """
    colors = []
    for index in range(num_colors):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append((r, g, b))
    return colors


VOC_COLORMAP = tuple(voc_colormap())


class LabelMap(Mapping):
    """A read-only {stored value: class id} (hashable and picklable, unlike a dict or a mappingproxy)."""

    def __init__(self, items: Mapping[int, int]):
        self._items = dict(items)

    def __getitem__(self, key: int) -> int:
        return self._items[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __repr__(self) -> str:
        return f"LabelMap({self._items!r})"


@dataclass(frozen=True)
class DatasetDescriptor:
    """The facts of one dataset that the pipelines, the metrics and the pictures need.

    - `class_names`: one per class id 0..num_classes-1.
    - `palette`: one RGB colour per class id; `ignore_color` is what the ignore label shows.
    - `label_map`: stored annotation value -> class id or `ignore_label`; a stored value not listed is not valid
      (a reader refuses the mask). None when the stored values are the class ids (and the ignore label).
    - `splits`: the split names the dataset's reader knows (informative; () when any list file may be a split).
    - `background`: the class id that overlays leave uncoloured (VOC's 0), or None to colour every class.
    """

    name: str
    class_names: tuple[str, ...]
    palette: tuple[Color, ...]
    ignore_color: Color = VOC_COLORMAP[IGNORE_LABEL]
    label_map: Mapping[int, int] | None = None
    splits: tuple[str, ...] = ()
    background: int | None = None
    ignore_label: int = IGNORE_LABEL

    def __post_init__(self) -> None:
        names = tuple(str(name) for name in self.class_names)
        palette = tuple(
            _color(color, f"{self.name}: palette entry {index}") for index, color in enumerate(self.palette)
        )
        if not 1 <= len(names) <= 255:
            raise ValueError(f"{self.name}: expected 1..255 class names, got {len(names)}")
        if not 0 <= self.ignore_label <= 255 or self.ignore_label < len(names):
            raise ValueError(f"{self.name}: ignore label {self.ignore_label} must be in {len(names)}..255")
        if len(palette) != len(names):
            raise ValueError(f"{self.name}: {len(palette)} palette colours for {len(names)} classes")
        if self.background is not None and not 0 <= self.background < len(names):
            raise ValueError(f"{self.name}: background class {self.background} is not a class id")
        label_map = None
        if self.label_map is not None:
            label_map = {int(stored): int(label) for stored, label in self.label_map.items()}
            for stored, label in label_map.items():
                if not 0 <= stored <= 255:
                    raise ValueError(f"{self.name}: label map has stored value {stored}, not in 0..255")
                if not (0 <= label < len(names) or label == self.ignore_label):
                    raise ValueError(f"{self.name}: label map sends {stored} to {label}, not a class id or ignored")
            label_map = LabelMap(label_map)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "palette", palette)
        object.__setattr__(self, "ignore_color", _color(self.ignore_color, f"{self.name}: ignore colour"))
        object.__setattr__(self, "label_map", label_map)
        object.__setattr__(self, "splits", tuple(self.splits))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def colormap(self) -> np.ndarray:
        """uint8 (256, 3): what each mask value shows. The class colours, the ignore colour at the ignore label,
        and the VOC colour map for the values that are neither (so a stray id still gets a colour)."""
        import numpy as np  # here, not at the top: the command line reads descriptors without loading NumPy

        colors = np.asarray(VOC_COLORMAP, np.uint8)
        colors[: self.num_classes] = self.palette
        colors[self.ignore_label] = self.ignore_color
        return colors


def _color(color: Sequence[int], what: str) -> Color:
    values = tuple(int(value) for value in color)
    if len(values) != 3 or not all(0 <= value <= 255 for value in values):
        raise ValueError(f"{what}: expected (r, g, b) in 0..255, got {color!r}")
    return values  # type: ignore[return-value]


def make_descriptor(
    name: str,
    class_names: Sequence[str],
    *,
    palette: Sequence[Sequence[int]] | None = None,
    label_map: Mapping[int, int] | None = None,
    splits: Sequence[str] = (),
    background: int | None = None,
) -> DatasetDescriptor:
    """A descriptor for a dataset whose classes are known only when it is opened (a folder's classes.txt,
    TFRecord metadata, the synthetic set). Colours default to the VOC colour map, ignore colour included;
    `background` defaults to 0 when class 0 is named "background" (or labelme's "_background_"), else None."""
    class_names = tuple(class_names)
    if palette is None:
        palette = VOC_COLORMAP[: len(class_names)]
    if background is None and class_names and class_names[0].strip("_").lower() == "background":
        background = 0
    return DatasetDescriptor(
        name, class_names, tuple(palette), label_map=label_map, splits=tuple(splits), background=background
    )


# PASCAL VOC 2012 (development kit): the class ids are the palette indices of its masks.
VOC_CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC = DatasetDescriptor(
    "voc",
    VOC_CLASS_NAMES,
    VOC_COLORMAP[: len(VOC_CLASS_NAMES)],
    splits=("train", "val", "trainval", "train_aug"),
    background=0,
)

# Cityscapes (cityscapesScripts `helpers/labels.py`): gtFine labelIds 0..33 -> the 19 train ids, the other
# labelIds (unlabeled, ego vehicle, rectification border, ...) ignored; each train id in its label's colour.
CITYSCAPES_TRAIN_IDS = (  # (labelId, name, colour) of the 19 train ids, in train-id order
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
)
CITYSCAPES_MAX_LABEL_ID = 33
CITYSCAPES = DatasetDescriptor(
    "cityscapes",
    tuple(name for _, name, _ in CITYSCAPES_TRAIN_IDS),
    tuple(color for _, _, color in CITYSCAPES_TRAIN_IDS),
    ignore_color=(0, 0, 0),  # labels.py's colour of "unlabeled"
    label_map={
        **{label_id: IGNORE_LABEL for label_id in range(CITYSCAPES_MAX_LABEL_ID + 1)},
        **{label_id: train_id for train_id, (label_id, _, _) in enumerate(CITYSCAPES_TRAIN_IDS)},
    },
    splits=("train", "val", "test"),
)

# ADE20K SceneParsing as the official DeepLab code has it (tensorflow/models research/deeplab
# datasets/data_generator.py `_ADE20K_INFORMATION`: 151 classes, ignore label 0): class 0 is annotation 0, "other",
# ignored in training and evaluation, then the 150 classes of the MIT Scene Parsing Benchmark's
# `objectInfo150.txt` (the first name of each row), whose annotation values 1..150 are their class ids. So the
# published ADE20K models (151 logits) and the ones trained here share class ids.
ADE20K_CLASS_NAMES = (
    "other", "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board",
    "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
# The official DeepLab code's ADE20K colours, tensorflow/models research/deeplab/utils/get_dataset_colormap.py
# `create_ade20k_label_colormap()`, one per class id: entry 0 ("other") black, as is the ignore colour, since the
# ignore label is that class's annotation (a mask value 0 and a predicted 0 draw the same).
ADE20K_COLORS = (
    (0, 0, 0),
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245),
    (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0),
    (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82),
    (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0),
    (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112),
    (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0),
    (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0),
    (25, 194, 194), (102, 255, 0), (92, 0, 255),
)  # fmt: skip
ADE20K = DatasetDescriptor(
    "ade20k",
    ADE20K_CLASS_NAMES,
    ADE20K_COLORS,
    ignore_color=(0, 0, 0),
    label_map={0: IGNORE_LABEL, **{value: value for value in range(1, len(ADE20K_CLASS_NAMES))}},
    splits=("training", "validation"),
    background=0,  # "other" stays uncoloured in overlays, as its ignored annotation does
)

# Oxford-IIIT Pet trimaps (TFDS `oxford_iiit_pet`): 1 = pet, 2 = background, 3 = border (ignored, like VOC's).
OXFORD_PET = DatasetDescriptor(
    "oxford_iiit_pet",
    ("background", "pet"),
    VOC_COLORMAP[:2],
    label_map={1: 1, 2: 0, 3: IGNORE_LABEL},
    splits=("train", "test"),
    background=0,
)

DESCRIPTORS = {descriptor.name: descriptor for descriptor in (VOC, CITYSCAPES, ADE20K, OXFORD_PET)}
ALIASES = {"pascal_voc": "voc", "voc_aug": "voc", "scene_parse150": "ade20k", "oxford_pet": "oxford_iiit_pet"}


def descriptor_for(name: str) -> DatasetDescriptor:
    """The descriptor of a known dataset: voc (voc_aug, pascal_voc), cityscapes, ade20k (scene_parse150),
    oxford_iiit_pet (oxford_pet). A TFDS config ("cityscapes/semantic_segmentation") names its dataset."""
    base = name.split("/", 1)[0].lower()
    base = ALIASES.get(base, base)
    if base not in DESCRIPTORS:
        known = sorted({*DESCRIPTORS, *ALIASES})
        raise ValueError(f"no descriptor for dataset {name!r}; known: {', '.join(known)}")
    return DESCRIPTORS[base]


BY_NUM_CLASSES = {VOC.num_classes: VOC, CITYSCAPES.num_classes: CITYSCAPES, ADE20K.num_classes: ADE20K}


def descriptor_for_num_classes(num_classes: int) -> DatasetDescriptor:
    """The likeliest descriptor for a model whose dataset is unknown, from its number of classes: 21 -> VOC,
    19 -> Cityscapes, 151 -> ADE20K; any other number a generic one in the VOC colour map (class 0 left
    uncoloured in overlays, as DeepLab's class 0 is usually the background)."""
    if num_classes in BY_NUM_CLASSES:
        return BY_NUM_CLASSES[num_classes]
    if not 1 <= num_classes <= 255:
        raise ValueError(f"class maps of {num_classes} classes cannot be coloured (1..255 classes)")
    names = tuple(f"class_{index}" for index in range(num_classes))
    return make_descriptor(f"{num_classes}_classes", names, background=0)


def model_descriptor(model: str, num_classes: int, dataset: DatasetDescriptor | None = None) -> DatasetDescriptor:
    """The class names and colours for `model` (named in the error) of `num_classes` classes: `dataset` when given
    (a command's --dataset; ValueError unless it has as many classes), else `descriptor_for_num_classes`."""
    if dataset is None:
        return descriptor_for_num_classes(num_classes)
    if dataset.num_classes != num_classes:
        raise ValueError(
            f"{model}: the model has {num_classes} classes, dataset {dataset.name} has {dataset.num_classes}"
        )
    return dataset
