"""The REST API of `keras-deeplab serve`: a SavedModel over the subset of TF Serving's REST API that DeepLab
clients use, answered by `RestApi.handle(method, path, body)` (testable without a socket; serving/server.py puts it
behind HTTP).

- `POST /v1/models/{name}[/versions/{v}]:predict`: `{"signature_name": ..., "instances": [...]}` (row format)
  or `{"inputs": ...}` (columnar); `{"b64": ...}` strings in; outputs named `*_bytes` returned as `{"b64": ...}`;
  answers `{"predictions": [...]}` or `{"outputs": ...}`.
- `GET /v1/models/{name}[/versions/{v}]`: version status; `GET /v1/models/{name}[/versions/{v}]/metadata`:
  the signature definitions.
- Errors: `{"error": "..."}` with TF Serving's HTTP status for the error's kind (400 bad argument, 404 unknown
  model or version, 500 internal).

Each endpoint is one row of `RestApi.ROUTES` (method, path pattern, handler). With `--crf`, a predict request may
carry `"crf": false` for the network's own class maps (the page's CRF switch). What one request can cost is bounded
before anything is decoded: a number of instances, a pixel limit per image and a pixel budget per request (sizes
read from the image headers; only JPEG, PNG, GIF and BMP, whose headers give their size, are accepted), and the
CRF's memory per image. A photo's EXIF orientation is applied before the SavedModel sees it (the graph, like TF
Serving, ignores EXIF), so class maps match the photo as displayed.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from keras_deeplab.crf import default_threads, dense_crf, memory_bound, release_memory
from keras_deeplab.descriptors import DatasetDescriptor, model_descriptor
from pipelines.image_header import PixelLimitError, read_image_header
from serving.export import class_map_png, tf_error_message
from serving.predict import decode_photo
from serving.rest_json import RestError, inputs_to_arrays, instances_to_arrays, outputs_to_json
from serving.settings import (
    CLASS_MAP_OUTPUT,
    CLASS_MAP_PNG_OUTPUT,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_CRF_MB,
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_REQUEST_PIXELS,
    SCORES_OUTPUT,
    SERVING_SIGNATURE,
    model_versions,
)

# Versions are int64 in TF Serving: up to 18 ASCII digits here (a longer one is a malformed request).
PREDICT_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:/versions/([0-9]{1,18}))?:(classify|regress|predict)")
STATUS_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:/versions/([0-9]{1,18}))?(/metadata)?")
# TF Serving's mapping of TensorFlow error codes to HTTP statuses (model_servers/http_server.cc).
HTTP_STATUS = {
    tf.errors.CANCELLED: 499,
    tf.errors.INVALID_ARGUMENT: 400,
    tf.errors.DEADLINE_EXCEEDED: 504,
    tf.errors.NOT_FOUND: 404,
    tf.errors.ALREADY_EXISTS: 409,
    tf.errors.PERMISSION_DENIED: 403,
    tf.errors.RESOURCE_EXHAUSTED: 429,
    tf.errors.FAILED_PRECONDITION: 400,
    tf.errors.ABORTED: 409,
    tf.errors.OUT_OF_RANGE: 400,
    tf.errors.UNIMPLEMENTED: 501,
    tf.errors.UNAVAILABLE: 503,
    tf.errors.UNAUTHENTICATED: 401,
}


class ServedVersion:
    """One loaded version of a SavedModel: its signature functions and its SignatureDefs (for metadata)."""

    def __init__(self, path: str, version: int) -> None:
        self.path = path
        self.version = version
        self.loaded = tf.saved_model.load(path)
        saved_model = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as file:
            saved_model.ParseFromString(file.read())
        self.signature_defs = saved_model.meta_graphs[0].signature_def

    @property
    def num_classes(self) -> int | None:
        """The number of classes of a keras-deeplab export (its `logits` function's channels), else None."""
        logits = getattr(self.loaded, "logits", None)
        functions = getattr(logits, "concrete_functions", None)
        if not functions:
            return None
        channels = functions[0].structured_outputs.shape[-1]
        return None if channels is None else int(channels)

    def signature(self, name: str) -> Callable[..., dict[str, tf.Tensor]]:
        function = self.loaded.signatures.get(name or SERVING_SIGNATURE)
        if function is None:
            raise RestError(400, f'Serving signature name: "{name}" not found in signature def')
        return function

    def metadata(self) -> dict[str, Any]:
        signature_defs = {
            name: json_format.MessageToDict(
                signature_def, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for name, signature_def in self.signature_defs.items()
        }
        return {"signature_def": {"signature_def": signature_defs}}


class RestApi:
    """TF Serving's REST API subset over the versions of one SavedModel base path."""

    def __init__(
        self,
        base_path: str | os.PathLike,
        name: str | None = None,
        *,
        num_versions: int = 1,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        crf: Mapping[str, float] | None = None,
        dataset: DatasetDescriptor | None = None,
        max_crf_mb: float = DEFAULT_MAX_CRF_MB,
    ) -> None:
        """Load the `num_versions` highest versions under `base_path` (TF Serving's default policy: 1).

        Limits, checked before decoding: `max_pixels` per image (height x width), `max_request_pixels` for all
        the images of one request together, `max_instances` images per request; `max_concurrent` predictions
        run at once. `crf` (keywords of `crf.dense_crf`; {} for its defaults): every class map of the encoded-image
        signature is the fully connected CRF's, which TF Serving itself cannot give (it is not a TensorFlow op); a
        request's `"crf": false` asks for the network's own. The CRF runs on one image at a time, each refused
        before decoding when `crf.memory_bound` of its size is over `max_crf_mb` MiB, and its working memory is
        given back after each image. `dataset`: the classes' names and colours for the page (default: the
        likeliest for the model's number of classes, `descriptor_for_num_classes`)."""
        base_path = os.fspath(base_path)
        versions = model_versions(base_path)
        if not versions:
            raise FileNotFoundError(f"{base_path}: no version folders (1/, 2/, ...) with a SavedModel")
        self.name = name or os.path.basename(os.path.normpath(base_path))
        self.versions = {
            version: ServedVersion(os.path.join(base_path, str(version)), version)
            for version in versions[-num_versions:]
        }
        self.max_pixels = max_pixels
        self.max_request_pixels = max_request_pixels
        self.max_instances = max_instances
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.crf = None if crf is None else dict(crf)
        num_classes = self.versions[max(self.versions)].num_classes
        self.descriptor = dataset if num_classes is None else model_descriptor(base_path, num_classes, dataset)
        self.max_crf_bytes = int(max_crf_mb * 2**20)
        self._crf_threads = default_threads()
        self._crf_lock = threading.Lock()  # one CRF at a time: its memory is bounded per image, not per request

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one request: (HTTP status, JSON object). Never raises for a bad request."""
        try:
            return 200, self._route(method, path, body)
        except RestError as error:
            return error.status, {"error": error.message}
        except tf.errors.OpError as error:
            return HTTP_STATUS.get(error.error_code, 500), {"error": tf_error_message(error)}
        except RecursionError:  # JSON nested deeper than Python's stack: a bad request, not a server fault
            return 400, {"error": "JSON Parse error: nested too deeply"}
        except Exception as error:  # the server must keep answering whatever a request does
            return 500, {"error": f"{type(error).__name__}: {error}"}

    def _route(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        path = path.split("?", 1)[0]
        if not path.lower().startswith("/v1/"):
            raise RestError(404, f"Not found: {method} {path}")
        for route_method, pattern, handler in self.ROUTES:
            match = pattern.fullmatch(path)
            if match and method == route_method:
                return handler(self, *match.groups(), body=body)
        raise RestError(400, f"Malformed request: {method} {path}")

    def _predict_route(self, name: str, version: str | None, verb: str, body: bytes) -> dict[str, Any]:
        if verb.lower() != "predict":
            raise RestError(501, f"{verb} is not served by keras-deeplab serve; use :predict")
        return self._predict(self._version(name, version), body)

    def _status_route(self, name: str, version: str | None, metadata: str | None, body: bytes) -> dict[str, Any]:
        if metadata:
            served = self._version(name, version)
            spec = {"name": self.name, "signature_name": "", "version": str(served.version)}
            return {"model_spec": spec, "metadata": served.metadata()}
        return {"model_version_status": self._status(name, version)}

    # One row per endpoint: (HTTP method, path pattern, handler called with the pattern's groups and the body).
    ROUTES = (("POST", PREDICT_PATH, _predict_route), ("GET", STATUS_PATH, _status_route))

    def _version(self, name: str, version: str | None) -> ServedVersion:
        if name == self.name:
            served = self.versions.get(int(version)) if version else self.versions[max(self.versions)]
            if served is not None:
                return served
        spec = f"Specific({name}, {version})" if version else f"Latest({name})"
        raise RestError(404, f"Servable not found for request: {spec}")

    def _status(self, name: str, version: str | None) -> list[dict[str, Any]]:
        if name != self.name:
            raise RestError(404, f"Could not find any versions of model {name}")
        if version and int(version) not in self.versions:
            raise RestError(404, f"Could not find version {version} of model {name}")
        versions = [int(version)] if version else sorted(self.versions)
        ok = {"error_code": "OK", "error_message": ""}
        return [{"version": str(number), "state": "AVAILABLE", "status": ok} for number in versions]

    def _predict(self, served: ServedVersion, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RestError(400, f"JSON Parse error: {error}") from error
        if not isinstance(request, dict):
            raise RestError(400, "JSON Value: request body Is not object")
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise RestError(400, "'signature_name' key must be a string value.")
        use_crf = request.get("crf", self.crf is not None)
        if not isinstance(use_crf, bool):
            raise RestError(400, "'crf' key must be true or false")
        if use_crf and self.crf is None:
            raise RestError(400, "this server does not refine class maps with the CRF (start it with serve --crf)")
        function = served.signature(signature_name)
        specs = function.structured_input_signature[1]
        row_format = "instances" in request
        if row_format and "inputs" in request:
            raise RestError(400, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
        if not row_format and "inputs" not in request:
            raise RestError(400, "Missing 'inputs' or 'instances' key")
        if row_format:
            instances = request["instances"]
            if isinstance(instances, list) and len(instances) > self.max_instances:
                raise RestError(400, _too_many_instances(len(instances), self.max_instances))
            arrays = instances_to_arrays(instances, specs)
        else:
            arrays = inputs_to_arrays(request["inputs"], specs)
        self._check_costs(arrays, specs, served)
        tensors = {}
        for name, array in arrays.items():
            try:
                tensors[name] = tf.constant(array, dtype=specs[name].dtype)
            except (TypeError, ValueError) as error:
                raise RestError(400, f"input {name}: not a {specs[name].dtype.name} tensor ({error})") from error
            if not specs[name].shape.is_compatible_with(tensors[name].shape):
                raise RestError(400, f"input {name}: shape {tensors[name].shape} does not match {specs[name].shape}")
        with self._slots:
            outputs = {name: np.array(tensor) for name, tensor in function(**tensors).items()}
            if use_crf:
                self._refine_with_crf(served, arrays, specs, outputs)
        return outputs_to_json(outputs, row_format)

    def _refine_with_crf(
        self, served: ServedVersion, arrays: dict[str, np.ndarray], specs: dict[str, tf.TensorSpec], outputs: dict
    ) -> None:
        """Replace each image's class map (and PNG, and scores when asked) by the CRF's, on the image's own pixels
        and the model's probabilities at its size (`logits` of the export: one more forward pass per image)."""
        encoded = [name for name, spec in specs.items() if spec.dtype == tf.string]
        if not encoded or not hasattr(served.loaded, "logits"):
            raise RestError(400, "serve --crf refines the encoded-image signature of a keras-deeplab export only")
        for index, image_bytes in enumerate(arrays[encoded[0]].reshape(-1)):
            image = decode_photo(image_bytes, self.max_pixels)[0]
            logits = served.loaded.logits(tf.constant(image[np.newaxis], tf.float32))[0]
            probabilities = tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()
            del logits
            with self._crf_lock:
                try:
                    refined = dense_crf(image, probabilities, threads=self._crf_threads, **self.crf)
                except ValueError as error:  # a std too small for this image's size
                    raise RestError(400, f"image {index}: {error} (serve --crf-param)") from error
                finally:
                    release_memory()  # its working memory is the worst case's, held until the next request
            class_map = refined.argmax(-1)
            height, width = class_map.shape
            outputs[CLASS_MAP_OUTPUT][index, :height, :width] = class_map
            outputs[CLASS_MAP_PNG_OUTPUT][index] = class_map_png(class_map, refined.shape[-1]).numpy()
            if SCORES_OUTPUT in outputs:
                outputs[SCORES_OUTPUT][index, :height, :width] = refined

    def _check_costs(
        self, arrays: dict[str, np.ndarray], specs: dict[str, tf.TensorSpec], served: ServedVersion
    ) -> None:
        """Refuse a request over its limits before anything is decoded (see __init__); every string input is an
        encoded image (its header gives its size), every float (B, H, W, 3) input a batch of pixels. Then a photo
        with an EXIF orientation is replaced by PNG bytes of its pixels as displayed."""
        pixels, oriented = 0, []
        for name, array in arrays.items():
            images = array.shape[0] if array.ndim else 1
            if images > self.max_instances:
                raise RestError(400, _too_many_instances(images, self.max_instances))
            if specs[name].dtype == tf.string:
                for index, value in enumerate(array.reshape(-1)):
                    try:
                        header = read_image_header(value, self.max_pixels)
                    except ValueError as error:
                        hint = " (serve --max-pixels)" if isinstance(error, PixelLimitError) else ""
                        raise RestError(400, f"input {name}, image {index}: {error}{hint}") from error
                    pixels += header.pixels
                    if self.crf is not None:
                        self._check_crf_cost(served, header.width, header.height, f"input {name}, image {index}")
                    if header.orientation != 1:
                        oriented.append((name, index))
            elif array.ndim == 4 and array.shape[-1] == 3:
                pixels += int(np.prod(array.shape[:3]))
            if pixels > self.max_request_pixels:
                raise RestError(
                    400,
                    f"the request's images add up to {pixels} pixels or more, over its limit of "
                    f"{self.max_request_pixels} (serve --max-request-pixels); send fewer or smaller images",
                )
        for name, index in oriented:
            flat = arrays[name].reshape(-1)
            try:
                flat[index] = decode_photo(flat[index], self.max_pixels)[1]
            except ValueError as error:
                raise RestError(400, f"input {name}, image {index}: {error}") from error
            arrays[name] = flat.reshape(arrays[name].shape)

    def _check_crf_cost(self, served: ServedVersion, width: int, height: int, where: str) -> None:
        # The bound's one term that is not symmetric grows with the width: the longer side, whatever the EXIF says.
        needed = memory_bound(min(width, height), max(width, height), served.num_classes, self._crf_threads)
        if needed > self.max_crf_bytes:
            raise RestError(
                400,
                f"{where}: the CRF on {width}x{height} pixels and {served.num_classes} classes may need "
                f"{needed / 2**20:.0f} MiB, over its limit of {self.max_crf_bytes / 2**20:.0f} MiB (serve "
                "--max-crf-mb); send a smaller image",
            )


def _too_many_instances(count: int, limit: int) -> str:
    return f"{count} instances in one request; the limit is {limit} (serve --max-instances)"
