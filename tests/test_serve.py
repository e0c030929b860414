"""`keras-deeplab serve` and `client`: TF Serving's REST formats, errors, robustness, concurrency, round trip."""

import base64
import io
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from serving_models import ODD_SIZES, b64, call, encode, export_tiny_model, keras_class_map, random_image, running_serve

from keras_deeplab.cli import main
from keras_deeplab.crf import dense_crf
from keras_deeplab.descriptors import VOC
from keras_deeplab.loading import load_model
from serving.client import ServingError, predict_class_maps
from serving.rest_api import RestApi
from serving.rest_json import outputs_to_json
from serving.server import make_http_server

MAX_PIXELS = 60 * 60
MAX_REQUEST_PIXELS = 3 * 50 * 50
MAX_INSTANCES = 40
MAX_BODY_BYTES = 200_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(server root URL, Keras model) of `keras-deeplab serve` of the tiny model (serving_models.running_serve)."""
    keras_path, base_path = export_tiny_model(tmp_path_factory)
    options = ["--max-pixels", str(MAX_PIXELS), "--max-body-mb", str(MAX_BODY_BYTES / 2**20), "--quiet"]
    options += ["--max-request-pixels", str(MAX_REQUEST_PIXELS), "--max-instances", str(MAX_INSTANCES)]
    with running_serve(base_path, *options) as url:
        yield url, load_model(keras_path)


def test_binds_loopback_by_default(served):
    url, _ = served
    assert url.startswith("http://127.0.0.1:")


def test_model_status_and_metadata(served):
    url, _ = served
    ok = {"error_code": "OK", "error_message": ""}
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]}
    assert call(f"{url}/v1/models/deeplab") == (200, expected)
    assert call(f"{url}/v1/models/deeplab/versions/1") == (200, expected)
    status, body = call(f"{url}/v1/models/deeplab/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "deeplab", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    inputs = signatures["serving_default"]["inputs"]
    assert inputs["image_bytes"]["dtype"] == "DT_STRING"
    assert set(signatures["serving_default"]["outputs"]) == {"class_map", "class_map_png_bytes", "height", "width"}
    assert signatures["serving_images"]["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_row_format_answer_is_one_object_per_image_with_b64_bytes(served):
    url, model = served
    images = [random_image(*size, seed=index) for index, size in enumerate(ODD_SIZES)]
    status, body = call(f"{url}/v1/models/deeplab:predict", {"instances": [b64(encode(image)) for image in images]})
    assert status == 200
    predictions = body["predictions"]
    assert len(predictions) == 2
    for prediction, image in zip(predictions, images, strict=True):
        height, width = image.shape[:2]
        assert (prediction["height"], prediction["width"]) == (height, width)
        assert np.shape(prediction["class_map"]) == (51, 47)  # padded to the batch's largest image
        expected = keras_class_map(model, image)
        np.testing.assert_array_equal(np.array(prediction["class_map"])[:height, :width], expected)
        assert set(prediction["class_map_png_bytes"]) == {"b64"}
        png = Image.open(io.BytesIO(base64.b64decode(prediction["class_map_png_bytes"]["b64"])))
        np.testing.assert_array_equal(np.array(png), expected)


def test_columnar_format_and_named_instances(served):
    url, model = served
    image = random_image(31, 43, seed=7)
    status, body = call(f"{url}/v1/models/deeplab:predict", {"inputs": {"image_bytes": [b64(encode(image))]}})
    assert status == 200
    outputs = body["outputs"]
    assert outputs["height"] == [31] and outputs["width"] == [43]
    np.testing.assert_array_equal(np.array(outputs["class_map"][0]), keras_class_map(model, image))
    assert set(outputs["class_map_png_bytes"][0]) == {"b64"}
    named = {"instances": [{"image_bytes": b64(encode(image))}], "signature_name": "serving_default"}
    assert call(f"{url}/v1/models/deeplab/versions/1:predict", named)[1]["predictions"][0]["height"] == 31
    floats = {"signature_name": "serving_images", "inputs": {"images": image[np.newaxis].astype(float).tolist()}}
    status, body = call(f"{url}/v1/models/deeplab:predict", floats)
    assert status == 200
    np.testing.assert_array_equal(np.array(body["outputs"]["class_map"][0]), keras_class_map(model, image))


def test_json_answers_follow_tf_serving_rules():
    """One output tensor: its values without its name; several: objects (row) or a map (columnar)."""
    single = {"y": np.array([[1, 2], [3, 4]], np.int32)}
    assert outputs_to_json(single, row_format=True) == {"predictions": [[1, 2], [3, 4]]}
    assert outputs_to_json(single, row_format=False) == {"outputs": [[1, 2], [3, 4]]}
    strings = {"name": np.array([b"a"], object), "mask_bytes": np.array([b"\x00\xff"], object)}
    assert outputs_to_json(strings, row_format=True) == {"predictions": [{"name": "a", "mask_bytes": {"b64": "AP8="}}]}


def _truncated_jpeg():
    jpeg = encode(random_image(40, 40), "JPEG")
    return jpeg[: len(jpeg) // 2]


BAD_REQUESTS = [
    ("deeplab:predict", b'{"instances": [', 400, "JSON Parse error"),
    ("deeplab:predict", b"[1, 2]", 400, "Is not object"),
    ("deeplab:predict", b"{}", 400, "Missing 'inputs' or 'instances' key"),
    ("deeplab:predict", {"instances": []}, 400, "No values"),
    ("deeplab:predict", {"instances": [1]}, 400, "DT_STRING"),
    ("deeplab:predict", {"instances": [{"b64": "not base64!"}]}, 400, "base64"),
    ("deeplab:predict", {"instances": [b64(b"not an image")]}, 400, "not a JPEG, PNG, GIF, BMP image"),
    ("deeplab:predict", {"instances": [b64(b"\xff\x0aJXL")]}, 400, "not a JPEG, PNG, GIF, BMP image"),
    ("deeplab:predict", {"instances": [b64(encode(random_image(50, 50)))] * 4}, 400, "--max-request-pixels"),
    ("deeplab:predict", {"instances": [b64(encode(random_image(1, 1)))] * 41}, 400, "41 instances"),
    ("deeplab:predict", {"inputs": [b64(encode(random_image(1, 1)))] * 41}, 400, "the limit is 40"),
    ("deeplab:predict", b"[" * 50_000 + b"]" * 50_000, 400, "nested too deeply"),
    ("deeplab/versions/" + "9" * 5000 + ":predict", {"instances": [1]}, 400, "Malformed request"),
    ("deeplab:predict", {"instances": [b64(_truncated_jpeg())]}, 400, "JPEG"),
    (
        "deeplab:predict",
        {"instances": [b64(encode(random_image(61, 61)))]},
        400,
        "over the limit of 3600 (serve --max-pixels)",
    ),
    ("deeplab:predict", {"instances": [], "inputs": []}, 400, "only one of"),
    ("deeplab:predict", {"signature_name": "nope", "instances": [1]}, 400, "nope"),
    ("deeplab:predict", {"signature_name": "serving_images", "inputs": {"images": [[1.0]]}}, 400, "images"),
    ("deeplab:predict", {"instances": [{"wrong": b64(b"x")}]}, 400, "keys must be equal"),
    ("other:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(other)"),
    ("deeplab/versions/9:predict", {"instances": [1]}, 404, "Specific(deeplab, 9)"),
    ("deeplab:classify", {"examples": []}, 501, "classify"),
    ("deeplab:predict", b"x" * (MAX_BODY_BYTES + 1), 413, "over the limit"),
]


@pytest.mark.parametrize(("path", "payload", "status", "message"), BAD_REQUESTS)
def test_bad_request_gets_its_error_and_the_server_keeps_answering(served, path, payload, status, message):
    url, _ = served
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answer = call(f"{url}/v1/models/{path}", data=data)
    assert answer[0] == status
    assert set(answer[1]) == {"error"} and message in answer[1]["error"]
    good = {"instances": [b64(encode(random_image(21, 23)))]}
    assert call(f"{url}/v1/models/deeplab:predict", good)[0] == 200


def test_unknown_paths_and_versions(served):
    url, _ = served
    assert call(f"{url}/v1/models/other")[0] == 404
    assert call(f"{url}/v1/models/deeplab/versions/2")[0] == 404
    assert call(f"{url}/v1/models/deeplab/versions/2/metadata")[0] == 404
    assert call(f"{url}/v2/anything")[0] == 404
    assert call(f"{url}/v1/models/deeplab:predict")[0] == 400  # GET on a POST path


def test_concurrent_requests_all_answered_alike(served):
    url, model = served
    image = random_image(29, 37, seed=9)
    expected = keras_class_map(model, image)
    results, errors = [], []

    def client():
        try:
            for _ in range(2):
                results.append(predict_class_maps(url, "deeplab", [encode(image)], timeout_s=120)[0])
        except Exception as error:  # collected and reported below
            errors.append(error)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors and len(results) == 8
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_client_round_trip_equals_direct_prediction(served, tmp_path, tmp_path_factory, capsys):
    url, _ = served
    keras_path, _ = export_tiny_model(tmp_path_factory)
    paths = []
    for index, size in enumerate(ODD_SIZES):
        path = tmp_path / f"photo{index}.{'png' if index else 'jpg'}"
        path.write_bytes(encode(random_image(*size, seed=index), "PNG" if index else "JPEG"))
        paths.append(str(path))
    for options in ([], ["--columnar", "--no-legend"]):
        served_dir, direct_dir = tmp_path / f"served{len(options)}", tmp_path / "direct"
        assert main(["client", *paths, "--url", url, "--name", "deeplab", "--out", str(served_dir), *options]) == 0
        assert main(["predict", *paths, "--model", keras_path, "--out", str(direct_dir)]) == 0
        for index in range(2):
            served_mask = Image.open(served_dir / f"photo{index}.png")
            assert served_mask.mode == "P" and served_mask.size == ODD_SIZES[index][::-1]
            np.testing.assert_array_equal(np.array(served_mask), np.array(Image.open(direct_dir / f"photo{index}.png")))
            width, height = Image.open(served_dir / f"photo{index}_overlay.jpg").size
            assert width == ODD_SIZES[index][1]
            if options:  # the bare overlay; else the legend strip below it
                assert height == ODD_SIZES[index][0]
            else:
                assert height > ODD_SIZES[index][0]
    capsys.readouterr()


def test_client_reports_server_errors_plainly(served, tmp_path, capsys):
    url, _ = served
    image = tmp_path / "a.png"
    image.write_bytes(encode(random_image(20, 20)))
    assert main(["client", str(image), "--url", url, "--name", "other", "--out", str(tmp_path / "out")]) == 1
    assert "answered HTTP 404: Servable not found for request: Latest(other)" in capsys.readouterr().err
    with pytest.raises(ServingError, match="cannot reach the server"):
        predict_class_maps("http://127.0.0.1:9", "deeplab", [b"x"], timeout_s=5)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(_truncated_jpeg())
    assert main(["client", str(broken), "--url", url, "--out", str(tmp_path / "out")]) == 1
    assert "broken.jpg: not a readable" in capsys.readouterr().err


def _raw_exchange(url, request: bytes) -> tuple[int, dict]:
    """Send raw bytes of an HTTP request; (status, JSON body) of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/"):  # an HTTP/0.9 request line: the answer is the body alone
        return 0, json.loads(answer)
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
def test_other_methods_and_bad_content_lengths_get_json_errors(served, method):
    url, _ = served
    status, body = _raw_exchange(url, f"{method} /v1/models/deeplab HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status in (405, 501) and set(body) == {"error"}
    request = "POST /v1/models/deeplab:predict HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\n{}"
    assert _raw_exchange(url, request.encode())[0] == 411
    assert _raw_exchange(url, b"GARBAGE\r\n\r\n") == (0, {"error": "Bad request syntax ('GARBAGE')"})
    assert call(f"{url}/v1/models/deeplab")[0] == 200


def test_a_burst_of_connections_waits_in_the_listen_queue():
    """60 clients connecting at once, before the server accepts any (its loop accepts one at a time): the kernel
    completes every connection and holds it for accept(). With a listen backlog of 5, the SYNs past the queue were
    dropped: those clients waited a 1 s retry, or here run into their timeout."""

    class Nothing:
        def handle(self, method, path, body):
            return 200, {}

    server = make_http_server(Nothing(), "127.0.0.1", 0, access_log=False)  # listening, not serving yet
    connections = []
    try:
        address = server.server_address[:2]
        connections += [socket.create_connection(address, timeout=5) for _ in range(60)]
        server.socket.settimeout(5)
        accepted = [server.socket.accept()[0] for _ in connections]
        connections += accepted
        assert {peer.getpeername() for peer in accepted} == {client.getsockname() for client in connections[:60]}
    finally:
        for connection in connections:
            connection.close()
        server.server_close()


def _oriented_jpeg(image, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_is_applied_by_the_server_and_the_client(served, tmp_path, tmp_path_factory, capsys):
    """A phone photo stored 47x29 with orientation 6 (displayed 29x47): REST, client and predict give 29x47
    masks equal to the model's answer on the displayed pixels."""
    url, model = served
    stored = random_image(29, 47, seed=11)
    jpeg = _oriented_jpeg(stored, 6)
    displayed = np.rot90(tf.io.decode_jpeg(jpeg).numpy(), -1)
    expected = keras_class_map(model, displayed)
    status, body = call(f"{url}/v1/models/deeplab:predict", {"instances": [b64(jpeg)]})
    assert status == 200
    assert (body["predictions"][0]["height"], body["predictions"][0]["width"]) == (47, 29)
    np.testing.assert_array_equal(np.array(body["predictions"][0]["class_map"]), expected)
    photo = tmp_path / "phone.jpg"
    photo.write_bytes(jpeg)
    keras_path, _ = export_tiny_model(tmp_path_factory)
    assert main(["client", str(photo), "--url", url, "--out", str(tmp_path / "c"), "--no-legend"]) == 0
    assert main(["predict", str(photo), "--model", keras_path, "--out", str(tmp_path / "p"), "--no-legend"]) == 0
    for folder in ("c", "p"):
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / folder / "phone.png")), expected)
        assert Image.open(tmp_path / folder / "phone_overlay.jpg").size == (29, 47)
    capsys.readouterr()


def test_client_refuses_an_image_over_its_pixel_limit_before_decoding(served, tmp_path, capsys):
    url, _ = served
    png = encode(random_image(8, 8))
    huge = tmp_path / "bomb.png"
    huge.write_bytes(png[:16] + struct.pack(">II", 12000, 12000) + png[24:])
    assert main(["client", str(huge), "--url", url, "--out", str(tmp_path / "out")]) == 1
    assert "bomb.png: image of 12000x12000 = 144000000 pixels is over the limit of 16777216" in capsys.readouterr().err


def test_a_client_trickling_its_body_is_cut_off_after_the_timeout():
    class Echo:
        def handle(self, method, path, body):
            return 200, {"bytes": len(body)}

    server = make_http_server(Echo(), "127.0.0.1", 0, access_log=False, timeout_s=1.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as connection:
            connection.sendall(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            started, answer = time.monotonic(), b""
            for _ in range(5):  # a byte every 0.1 s, then nothing: the server answers when its timeout is up
                connection.sendall(b" ")
                time.sleep(0.1)
            while chunk := connection.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer
        assert time.monotonic() - started < 3
        assert _raw_exchange(f"http://{host}:{port}", b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n123") == (
            200,
            {"bytes": 3},
        )
    finally:
        server.shutdown()
        server.server_close()


def test_serve_with_crf_answers_the_crf_class_maps(tmp_path_factory):
    """`serve --crf`: the class map (and its PNG) of each image is dense_crf's on the model's probabilities."""
    keras_path, base_path = export_tiny_model(tmp_path_factory)
    model = load_model(keras_path)
    api = RestApi(base_path, "deeplab", crf={"iterations": 2})
    with pytest.raises(ValueError, match="the model has 5 classes, dataset voc has 21"):  # serve --dataset voc
        RestApi(base_path, "deeplab", dataset=VOC)
    images = [random_image(*size, seed=index) for index, size in enumerate(ODD_SIZES)]
    payload = {"instances": [b64(encode(image)) for image in images]}
    status, answer = api.handle("POST", "/v1/models/deeplab:predict", json.dumps(payload).encode())
    assert status == 200, answer
    for image, prediction in zip(images, answer["predictions"], strict=True):
        probabilities = tf.nn.softmax(model(image[np.newaxis].astype("float32"))).numpy()[0]
        expected = dense_crf(image, probabilities, iterations=2).argmax(-1)
        height, width = image.shape[:2]
        np.testing.assert_array_equal(np.array(prediction["class_map"])[:height, :width], expected)
        png = np.array(Image.open(io.BytesIO(base64.b64decode(prediction["class_map_png_bytes"]["b64"]))))
        np.testing.assert_array_equal(png, expected)
    status, answer = api.handle("POST", "/v1/models/deeplab:predict", json.dumps({**payload, "crf": False}).encode())
    assert status == 200, answer
    for image, prediction in zip(images, answer["predictions"], strict=True):  # the page's CRF switch, off
        height, width = image.shape[:2]
        np.testing.assert_array_equal(np.array(prediction["class_map"])[:height, :width], keras_class_map(model, image))


def test_crf_key_needs_a_crf_server_and_a_boolean(served):
    url, model = served
    image = random_image(*ODD_SIZES[0])
    payload = {"instances": [b64(encode(image))]}
    assert call(f"{url}/v1/models/deeplab:predict", {**payload, "crf": True}) == (
        400,
        {"error": "this server does not refine class maps with the CRF (start it with serve --crf)"},
    )
    assert call(f"{url}/v1/models/deeplab:predict", {**payload, "crf": "no"}) == (
        400,
        {"error": "'crf' key must be true or false"},
    )
    status, body = call(f"{url}/v1/models/deeplab:predict", {**payload, "crf": False})
    assert status == 200
    np.testing.assert_array_equal(np.array(body["predictions"][0]["class_map"]), keras_class_map(model, image))


def test_page_at_root_is_self_contained_and_carries_the_servers_facts(served):
    """GET / is the page (its behaviour in a browser: tests/test_page.py): HTML that loads nothing from elsewhere
    (and a policy that forbids it), with the model's name, class names, limits and CRF state filled in."""
    url, _ = served
    with urllib.request.urlopen(f"{url}/", timeout=60) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        policy = response.headers["Content-Security-Policy"]
        html = response.read().decode("utf-8")
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert not re.search(r"https?:|//[a-z]|@import|\burl\(", html, re.IGNORECASE), "the page refers to another site"
    config = json.loads(re.search(r'<script id="config" type="application/json">(.*?)</script>', html).group(1))
    assert config["model"] == "deeplab" and config["crf"] is False
    assert config["maxPixels"] == MAX_PIXELS and config["maxBodyBytes"] == MAX_BODY_BYTES
    assert [entry["name"] for entry in config["classes"]] == [f"class_{index}" for index in range(5)]
    assert config["classes"][1]["color"] == [128, 0, 0] and config["background"] == 0
    assert call(f"{url}/v1/models/deeplab")[0] == 200  # the API beside it is unchanged


def test_serve_with_crf_refuses_an_image_over_the_crfs_memory_before_decoding(tmp_path_factory):
    """Issue 24 row 3: one 1024x1024 noise PNG took 4 GB in the CRF. Its worst case for the image's size and the
    model's classes is checked from the header: over `max_crf_mb`, a 400 naming the option, nothing decoded (the
    PNG below has no pixel data at all)."""
    from keras_deeplab.crf import memory_bound

    _, base_path = export_tiny_model(tmp_path_factory)
    api = RestApi(base_path, "deeplab", crf={}, max_crf_mb=64)
    num_classes = api.versions[max(api.versions)].num_classes
    assert num_classes == 5  # the tiny model's, read from the export's `logits` function
    png = encode(random_image(8, 8))
    header_only = png[:16] + struct.pack(">II", 1024, 1024) + png[24:33]  # IHDR of a 1024x1024 image, no IDAT
    status, answer = api.handle("POST", "/v1/models/deeplab:predict", json.dumps({"instances": [b64(header_only)]}))
    needed = memory_bound(1024, 1024, num_classes, api._crf_threads) / 2**20
    assert status == 400
    assert answer["error"] == (
        f"input image_bytes, image 0: the CRF on 1024x1024 pixels and 5 classes may need {needed:.0f} MiB, over "
        "its limit of 64 MiB (serve --max-crf-mb); send a smaller image"
    )
    # Under the limit it runs; a std too small for this image's size is the request's fault, named.
    small = {"instances": [b64(encode(random_image(30, 40)))]}
    assert api.handle("POST", "/v1/models/deeplab:predict", json.dumps(small).encode())[0] == 200
    api.crf = {"pos_xy_std": 1e-4}
    status, answer = api.handle("POST", "/v1/models/deeplab:predict", json.dumps(small).encode())
    assert status == 400
    assert answer["error"].startswith("image 0: pos_xy_std must be at least 0.000595 for a 30x40 image")
    assert answer["error"].endswith("(serve --crf-param)")


def test_crf_memory_bound_holds_for_the_worst_lattice():
    """crf.memory_bound is an upper bound, whatever the content: measured (peak RSS of a child process) for noise
    and for stds at their bound, where every corner of every pixel is a vertex of its own."""
    code = """
import numpy as np
from keras_deeplab.crf import dense_crf, memory_bound
def peak():  # VmHWM: this process's own peak (ru_maxrss also counts the parent's, from before the exec)
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) * 1024
rng = np.random.default_rng(0)
image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
p = rng.random((300, 200, 21)).astype(np.float32); p /= p.sum(-1, keepdims=True)
before = peak()
dense_crf(image, p, threads=3, iterations=1, bi_xy_std=299 / 65536, pos_xy_std=299 / 65536, bi_rgb_std=255 / 65536)
used = peak() - before
print(used, memory_bound(300, 200, 21, 3))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    used, bound = map(int, done.stdout.split())
    assert 0.4 * bound < used <= bound
