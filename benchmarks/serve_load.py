"""Load on `keras-deeplab serve` over loopback: N concurrent clients times M requests.

Exports a model (a fresh one of the chosen configuration, or --model FILE.keras), starts `keras-deeplab serve`
in its own process on a free port, sends every client's requests (JPEG images, TF Serving row format) and
prints throughput, p50 and p99 latency and the error count (0 expected).

    python benchmarks/serve_load.py                       # ResNet-50 DeepLabv3, 257x257 JPEGs, 4 x 8
    python benchmarks/serve_load.py --clients 8 --requests 16 --image-size 513 --backbone resnet101
"""

from __future__ import annotations

import argparse
import io
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

from keras_deeplab import build_model
from keras_deeplab.loading import load_model
from serving.client import ServingError, predict_class_maps
from serving.export import export_saved_model


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
    args = parser.parse_args()

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
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

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
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
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


if __name__ == "__main__":
    main()
