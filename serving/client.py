"""`keras-deeplab client`: class maps from a TF Serving (or `keras-deeplab serve`) REST endpoint.

Sends encoded image files as `{"b64": ...}` strings to the export's `serving_default` signature, in the row
(`{"instances": [...]}`) or columnar (`{"inputs": {...}}`) format, cuts each class map from the padded batch
with the returned `height` and `width`, and writes a palette PNG and an overlay JPEG per image.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.settings import (
    CLASS_MAP_OUTPUT,
    DEFAULT_TIMEOUT_S,
    HEIGHT_OUTPUT,
    IMAGE_BYTES_INPUT,
    WIDTH_OUTPUT,
)


class ServingError(OSError):
    """The server answered with an error, or could not be reached; the message says which and why."""


def request_json(url: str, payload: dict[str, Any] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """GET `url` (or POST `payload` as JSON) and return the decoded JSON answer; ServingError otherwise."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            message = body.decode("utf-8", errors="replace")[:500] or error.reason
        raise ServingError(f"{url} answered HTTP {error.code}: {message}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ServingError(f"{url}: cannot reach the server ({reason})") from error
    except ValueError as error:
        raise ServingError(f"{url}: the answer is not JSON ({error})") from error


def predict_url(url: str, name: str, version: int | None = None) -> str:
    """`{url}/v1/models/{name}[/versions/{version}]:predict`."""
    version_part = f"/versions/{version}" if version is not None else ""
    return f"{url.rstrip('/')}/v1/models/{name}{version_part}:predict"


def predict_class_maps(
    url: str,
    name: str,
    encoded_images: Sequence[bytes],
    *,
    version: int | None = None,
    signature_name: str | None = None,
    columnar: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[np.ndarray]:
    """Class ids (H, W) int32 of each encoded image (JPEG/PNG bytes), at the image's own size, in one request."""
    values = [{"b64": base64.b64encode(encoded).decode("ascii")} for encoded in encoded_images]
    payload: dict[str, Any] = {"inputs": {IMAGE_BYTES_INPUT: values}} if columnar else {"instances": values}
    if signature_name:
        payload["signature_name"] = signature_name
    target = predict_url(url, name, version)
    answer = request_json(target, payload, timeout_s)
    try:
        if columnar:
            outputs = answer["outputs"]
            rows = [{key: outputs[key][index] for key in outputs} for index in range(len(outputs[CLASS_MAP_OUTPUT]))]
        else:
            rows = answer["predictions"]
        class_maps = [
            np.asarray(row[CLASS_MAP_OUTPUT], dtype=np.int32)[: row[HEIGHT_OUTPUT], : row[WIDTH_OUTPUT]] for row in rows
        ]
    except (KeyError, TypeError, IndexError, ValueError) as error:
        raise ServingError(
            f"{target}: the answer lacks the {CLASS_MAP_OUTPUT}/{HEIGHT_OUTPUT}/{WIDTH_OUTPUT} outputs "
            f"of a keras-deeplab export ({type(error).__name__}: {error})"
        ) from error
    if len(class_maps) != len(encoded_images):
        raise ServingError(f"{target}: sent {len(encoded_images)} images, got {len(class_maps)} class maps")
    return class_maps
