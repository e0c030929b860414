"""The text lists of a dataset folder, read without TensorFlow: split lists (one name per line) and class lists
(`class_names.txt` as labelme's VOC export writes it, a folder's `classes.txt`: line i names class id i), the
latter as a dataset descriptor."""

from __future__ import annotations

import os

from keras_deeplab import constants
from keras_deeplab.descriptors import DatasetDescriptor, make_descriptor
from pipelines.errors import DataError

CLASS_LISTS = ("class_names.txt", "classes.txt")  # labelme's VOC export, a plain folder


def read_list(path: str, what: str) -> list[str]:
    """Non-empty stripped lines of a list file; DataError naming it when it is missing."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        listed = os.listdir(folder) if os.path.isdir(folder) else []
        available = sorted(name[:-4] for name in listed if name.endswith(".txt"))
        raise DataError(path, f"{what} is missing (lists found there: {', '.join(available) or 'none'})")
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not part of the first name
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            path, f"line {line} is not UTF-8 text (byte 0x{data[error.start]:02x}); save the list as UTF-8"
        ) from error
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_class_list(folder: str) -> str | None:
    """The class list of a dataset folder (CLASS_LISTS, first found), or None."""
    for name in CLASS_LISTS:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def class_list_descriptor(path: str, name: str | None = None) -> DatasetDescriptor:
    """The descriptor of a dataset whose classes a class list names: `path` is the list, or a dataset folder
    holding one (CLASS_LISTS). `name` defaults to the dataset folder's name. Class 0 named "background" (or
    labelme's "_background_") is left uncoloured in overlays."""
    if os.path.isdir(path):
        found = find_class_list(path)
        if found is None:
            raise DataError(path, f"no class list in this folder (expected one of: {', '.join(CLASS_LISTS)})")
        path = found
    class_names = read_list(path, "class list (one class name per line)")
    if not 1 <= len(class_names) < constants.IGNORE_LABEL:
        raise DataError(path, f"expected 1..254 class names, found {len(class_names)}")
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return make_descriptor(name or folder or "dataset", class_names)
