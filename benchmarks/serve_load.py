"""Load on `keras-deeplab serve` over loopback: N concurrent clients times M requests.

Exports a model (a fresh one of the chosen configuration, or --model FILE.keras), starts `keras-deeplab serve`
in its own process on a free port, sends every client's requests (JPEG images, TF Serving row format) and
prints throughput, p50 and p99 latency and the error count (0 expected).

With `--hostile`, hostile clients run beside the good ones for as long as those do (each loop bounded): pixel
bombs (blank 4096x4096 PNGs, four per request; a 20000x20000 header; JPEG XL), floods of tiny images (5,000
per request, and the instance limit's worth of 1x1 and 2x1 PNGs), slow clients that trickle a body one byte at
a time, and JSON nested 50,000 deep. It then also prints what the hostile requests got and the server's peak
memory (the RSS high-water mark of its process, VmHWM), with the CPU's flags. Loopback only.

    python benchmarks/serve_load.py                       # ResNet-50 DeepLabv3, 257x257 JPEGs, 4 x 8
    python benchmarks/serve_load.py --clients 8 --requests 16 --image-size 513 --backbone resnet101
    python benchmarks/serve_load.py --backbone mobilenetv2 --hostile
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

from keras_deeplab import build_model, machine
from keras_deeplab.loading import load_model
from serving.client import ServingError, predict_class_maps
from serving.export import export_saved_model
from serving.settings import DEFAULT_MAX_INSTANCES

HOSTILE_ROUNDS = 200  # most requests any one hostile client sends
TRICKLE_SECONDS = 20.0  # longest a slow client keeps one connection trickling


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def post(url: str, body: bytes, timeout_s: float = 120.0) -> int:
    """POST raw `body` to `url`; the HTTP status (0 when the connection failed)."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
            connection.sendall(head.encode() + body)
            answer = connection.makefile("rb").readline()
        return int(answer.split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def trickle(url: str, stop: threading.Event) -> int:
    """A slow client: announces a 1 MB body and sends it a byte every 0.2 s until `stop` or TRICKLE_SECONDS."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    try:
        with socket.create_connection((host, int(port)), timeout=TRICKLE_SECONDS + 70) as connection:
            connection.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n\r\n{{".encode())
            deadline = time.monotonic() + TRICKLE_SECONDS
            while not stop.is_set() and time.monotonic() < deadline:
                connection.sendall(b" ")
                time.sleep(0.2)
        return -1  # hung up by us
    except OSError:
        return 0


def hostile_bodies() -> dict[str, bytes]:
    """The hostile requests' bodies, by kind."""

    def instances(images: list[bytes]) -> bytes:
        return json.dumps({"instances": [{"b64": base64.b64encode(data).decode()} for data in images]}).encode()

    blank = png(np.zeros((4096, 4096, 3), np.uint8))
    tiny = png(np.zeros((8, 8, 3), np.uint8))
    forged = tiny[:16] + struct.pack(">II", 20000, 20000) + tiny[24:]
    one, two = png(np.zeros((1, 1, 3), np.uint8)), png(np.zeros((1, 2, 3), np.uint8))
    return {
        "bomb: 4 blank 4096x4096 PNGs": instances([blank] * 4),
        "bomb: a 20000x20000 PNG header": instances([forged]),
        "bomb: JPEG XL": instances([b"\xff\x0a" + bytes(64)]),
        "flood: 5,000 tiny PNGs": instances([one, two] * 2500),
        f"flood: {DEFAULT_MAX_INSTANCES} tiny PNGs": instances([one, two] * (DEFAULT_MAX_INSTANCES // 2)),
        "JSON nested 50,000 deep": b"[" * 50_000 + b"]" * 50_000,
    }


def peak_rss_mb(pid: int) -> float:
    """The RSS high-water mark of process `pid` (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_flags() -> str:
    with open("/proc/cpuinfo") as info:
        return next((line.split(":", 1)[1].strip() for line in info if line.startswith("flags")), "unknown")


def start_server(base_path: str, timeout_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    """`keras-deeplab serve` on a free loopback port: (process, root URL)."""
    command = [sys.executable, "-m", "keras_deeplab.cli", "serve", base_path, "--name", "deeplab", "--port", "0"]
    process = subprocess.Popen([*command, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline and process.poll() is None:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        match = re.search(r"at (http://[\d.]+:\d+)/v1/models/deeplab", seen[-1])
        if match:
            return process, match.group(1)
    process.terminate()
    raise RuntimeError(f"serve did not start: {''.join(seen)[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained .keras file (default: a fresh model of --backbone)")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=257, help="side of the square test JPEGs")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (N)")
    parser.add_argument("--requests", type=int, default=8, help="requests per client (M)")
    parser.add_argument("--hostile", action="store_true", help="hostile clients beside the good ones")
    args = parser.parse_args()
    print(machine.describe())

    model = load_model(args.model) if args.model else build_model(args.output_stride, backbone=args.backbone)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    images = [buffer.getvalue()] * args.images_per_request

    with tempfile.TemporaryDirectory() as folder:
        base_path = os.path.join(folder, "deeplab")
        started = time.perf_counter()
        export_saved_model(model, base_path)
        print(f"exported {model.count_params():,} parameters in {time.perf_counter() - started:.1f} s")
        process, url = start_server(base_path)
        try:
            predict_class_maps(url, "deeplab", images)  # warm-up
            rss_before = peak_rss_mb(process.pid)
            lock = threading.Lock()
            stop = threading.Event()
            hostile_answers: collections.defaultdict[str, collections.Counter] = collections.defaultdict(
                collections.Counter
            )
            hostile_threads = []
            if args.hostile:
                target = f"{url}/v1/models/deeplab:predict"

                def hostile(kind: str, body: bytes) -> None:
                    for _ in range(HOSTILE_ROUNDS):
                        if stop.is_set():
                            return
                        status = post(target, body)
                        with lock:
                            hostile_answers[kind][status] += 1

                def slow() -> None:
                    for _ in range(HOSTILE_ROUNDS):
                        if stop.is_set():
                            return
                        status = trickle(target, stop)
                        with lock:
                            hostile_answers["slow client trickling a body"][status] += 1

                hostile_threads = [threading.Thread(target=hostile, args=item) for item in hostile_bodies().items()]
                hostile_threads += [threading.Thread(target=slow) for _ in range(4)]
            latencies: list[float] = []
            errors: list[str] = []

            def client() -> None:
                for _ in range(args.requests):
                    begin = time.perf_counter()
                    try:
                        predict_class_maps(url, "deeplab", images)
                        with lock:
                            latencies.append(time.perf_counter() - begin)
                    except ServingError as error:
                        with lock:
                            errors.append(str(error))

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for thread in hostile_threads:
                thread.start()
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            stop.set()
            for thread in hostile_threads:
                thread.join()
            rss_peak = peak_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)

    total = args.clients * args.requests
    p50, p99 = (np.percentile(latencies, q) * 1000 if latencies else float("nan") for q in (50, 99))
    name = args.model or f"{args.backbone} (fresh weights)"
    print(
        f"serve: {name}, output stride {args.output_stride}, {args.image_size}x{args.image_size} JPEG, "
        f"{args.images_per_request} image(s) per request, {args.clients} clients x {args.requests} requests"
    )
    print(f"  throughput   {total / elapsed:.2f} requests/s ({total * args.images_per_request / elapsed:.2f} images/s)")
    print(f"  latency      p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    print(f"  errors       {len(errors)} of {total}")
    for error in errors[:5]:
        print(f"    {error}")
    print(f"  server RSS   {rss_before:.0f} MB after warm-up, peak {rss_peak:.0f} MB (VmHWM)")
    for kind, statuses in hostile_answers.items():
        answers = ", ".join(f"{count} x {status or 'no answer'}" for status, count in sorted(statuses.items()))
        print(f"  hostile      {kind}: {answers.replace('-1', 'hung up by the client')}")
    print(f"  cpu flags    {cpu_flags()}")


if __name__ == "__main__":
    main()
