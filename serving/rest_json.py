"""TF Serving's REST JSON: request bodies (row "instances" and columnar "inputs") to arrays, outputs to JSON,
and the `{"error": ...}` answers, as TF Serving's REST API documents them ({"b64": ...} for binary strings in and
out; outputs whose name ends in `_bytes` returned base64-encoded)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import tensorflow as tf

BYTES_SUFFIX = "_bytes"
BASE64_KEY = "b64"


class RestError(Exception):
    """An answer other than 200: HTTP `status` and the message of the `{"error": ...}` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_to_array(value: Any, dtype: tf.DType, where: str) -> np.ndarray:
    """A JSON value (nested lists; `{"b64": ...}` for bytes) -> a dense array of `dtype` (strings: bytes)."""
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    leaves: list[Any] = []

    def collect(item: Any, level: int) -> None:
        if level < len(shape):
            if not isinstance(item, list) or len(item) != shape[level]:
                raise RestError(400, f"{where}: list at level {level} has not the expected size {shape[level]}")
            for element in item:
                collect(element, level + 1)
        elif isinstance(item, list):
            raise RestError(400, f"{where}: encountered list at unexpected level {level}")
        else:
            leaves.append(json_leaf(item, dtype, where))

    collect(value, 0)
    if dtype == tf.string:
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    return np.asarray(leaves, dtype=dtype.as_numpy_dtype).reshape(shape)


def json_leaf(item: Any, dtype: tf.DType, where: str) -> Any:
    if isinstance(item, dict):
        if dtype != tf.string or set(item) != {BASE64_KEY} or not isinstance(item[BASE64_KEY], str):
            raise RestError(400, f"{where}: JSON object {str(item)[:80]} is not a {BASE64_KEY!r} value for a string")
        try:
            return base64.b64decode(item[BASE64_KEY], validate=True)
        except (binascii.Error, ValueError) as error:
            raise RestError(400, f"{where}: Unable to base64 decode ({error})") from error
    if dtype == tf.string:
        if not isinstance(item, str):
            raise RestError(400, f"{where}: JSON Value: {item!r} is not of expected type: DT_STRING")
        return item.encode("utf-8")
    if dtype == tf.bool:
        if not isinstance(item, bool):
            raise RestError(400, f"{where}: JSON Value: {item!r} is not of expected type: DT_BOOL")
        return item
    if isinstance(item, bool) or not isinstance(item, (int, float)):
        raise RestError(400, f"{where}: JSON Value: {item!r} is not of expected type: {dtype.name}")
    if dtype.is_integer and not isinstance(item, int):
        raise RestError(400, f"{where}: JSON Value: {item!r} is not of expected type: {dtype.name}")
    return item


def is_base64_object(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {BASE64_KEY}


def instances_to_arrays(instances: Any, specs: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """Row format: one element per batch item; objects keyed by input name, or plain values for one input."""
    if not isinstance(instances, list):
        raise RestError(400, "Expecting 'instances' to be an list/array")
    if not instances:
        raise RestError(400, "No values in 'instances' array")
    named = isinstance(instances[0], dict) and not is_base64_object(instances[0])
    if not named and len(specs) > 1:
        raise RestError(400, f"instances is a plain list, but expecting objects with keys {sorted(specs)}")
    rows: dict[str, list[np.ndarray]] = {name: [] for name in specs}
    for index, instance in enumerate(instances):
        if named != (isinstance(instance, dict) and not is_base64_object(instance)):
            raise RestError(400, f"item {index} of 'instances' is not like item 0 (all objects or all values)")
        if named:
            if set(instance) != set(specs):
                raise RestError(400, f"item {index} of 'instances': keys must be equal to: {','.join(sorted(specs))}")
            values = instance
        else:
            values = {next(iter(specs)): instance}
        for name, value in values.items():
            rows[name].append(json_to_array(value, specs[name].dtype, f"item {index} of 'instances', input {name}"))
    arrays = {}
    for name, items in rows.items():
        if any(item.shape != items[0].shape for item in items):
            shapes = sorted({item.shape for item in items})
            raise RestError(400, f"input {name}: instances have different shapes {shapes}; all must be alike")
        arrays[name] = np.stack(items)
    return arrays


def inputs_to_arrays(inputs: Any, specs: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """Columnar format: one value for a single input, or an object of input name -> value."""
    if not isinstance(inputs, dict) or is_base64_object(inputs):
        if len(specs) > 1:
            raise RestError(400, f"inputs is a plain value/list, but expecting an object with keys {sorted(specs)}")
        name = next(iter(specs))
        return {name: json_to_array(inputs, specs[name].dtype, f"'inputs', input {name}")}
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise RestError(400, f"Missing named input: {missing[0]} in 'inputs' object.")
    return {name: json_to_array(inputs[name], spec.dtype, f"'inputs', input {name}") for name, spec in specs.items()}


def value_to_json(array: np.ndarray, as_bytes: bool) -> Any:
    if array.dtype != object:
        return array.tolist()
    if as_bytes:
        encode = np.frompyfunc(lambda value: {BASE64_KEY: base64.b64encode(value).decode("ascii")}, 1, 1)
    else:
        encode = np.frompyfunc(lambda value: value.decode("utf-8", errors="replace"), 1, 1)
    encoded = encode(array)
    return encoded.tolist() if isinstance(encoded, np.ndarray) else encoded


def outputs_to_json(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """Row format: {"predictions": [per item]}; columnar: {"outputs": ...}; one output: its value, unnamed."""
    converted = {name: value_to_json(array, name.endswith(BYTES_SUFFIX)) for name, array in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(converted.values())) if len(converted) == 1 else converted}
    sizes = {len(value) for value in converted.values()}
    if len(sizes) != 1:
        raise RestError(400, f"outputs have different batch sizes {sorted(sizes)}; use the columnar 'inputs' format")
    if len(converted) == 1:
        return {"predictions": next(iter(converted.values()))}
    count = sizes.pop()
    return {"predictions": [{name: value[index] for name, value in converted.items()} for index in range(count)]}
