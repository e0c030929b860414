"""Files written whole or not at all: every writer of the project goes through `atomic_path`; and where the
files shipped inside the package are (`PUBLISHED_MODEL`, `PUBLISHED_PHOTO`, wherever pip put the package)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from importlib import resources
from typing import Any

# Google's published MobileNetV2 DeepLabv3 (VOC, TFLite 257x257) and a photo, with their licences (SOURCE.md):
# in the checkout, or in site-packages after a non-editable install (`keras-deeplab info --published` prints it).
PUBLISHED = resources.files("keras_deeplab").joinpath("assets", "published")
PUBLISHED_MODEL = PUBLISHED.joinpath("deeplabv3_257_mv_gpu.tflite")
PUBLISHED_PHOTO = PUBLISHED.joinpath("bird_segmentation.bmp")
TEMPORARY_PREFIX = ".tmp-"  # names that a killed writer may leave behind; readers skip them
# Errors of a write that says nothing of which file: the disk (or quota) is full, the file too large, read-only.
STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary name beside `path` (same folder, same extension); rename it to `path` when the block
    ends without error, remove it (file or folder) when it raises."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f"{TEMPORARY_PREFIX}{os.getpid()}-{name}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.lexists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno in STORAGE_ERRORS:
            raise named_os_error(error, f"{path}: cannot write it") from error
        raise


def named_os_error(error: OSError, what: str) -> OSError:
    """An OSError of `error`'s errno whose message is `what (the system's reason)`, without the `[Errno N]`."""
    named = OSError(f"{what} ({error.strerror or error})")
    named.errno = error.errno
    return named


def make_folder(path: str | os.PathLike) -> str:
    """`path` as a folder (made with its parents when missing); OSError naming it when it cannot be one."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise named_os_error(error, f"{path}: cannot make this folder") from error
    return path


def check_new_file(path: str | os.PathLike) -> None:
    """OSError naming `path` when a file cannot be written there: its folder is missing, is not a folder or is
    not writable, or `path` is a folder. For commands that work a long time before they write."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder; expected a file name")
    if not os.path.exists(folder):
        raise FileNotFoundError(f"{path}: cannot write it: {folder} does not exist")
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{path}: cannot write it: {folder} is not a folder")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{path}: cannot write it: {folder} is not writable")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """`data` to `path`, whole or not at all."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """`value` as indented JSON with a final newline."""
    write_bytes(path, (json.dumps(value, indent=2) + "\n").encode("utf8"))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in `path` (UTF-8)."""
    with open(path, encoding="utf8") as handle:
        return json.load(handle)
