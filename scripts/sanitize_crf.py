#!/usr/bin/env python3
"""Build the CRF's C++ extension under AddressSanitizer and UndefinedBehaviorSanitizer and drive it with random
and extreme inputs for a bounded time (issue 24). Exits 0 when no sanitizer reported anything, 1 otherwise.

Two drivers, each built from keras_deeplab/crf_mean_field.cpp as it is, with
`-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all` (float-cast-overflow is not part of
`undefined`, and it is the conversion that overflowed in issue 24's SIGSEGV):

1. the extension as Python loads it, called through `mean_field` with random image sizes (1 pixel to thin
   strips and 300x300), class counts (1 to 1024), threads (1 to 64), iterations, instruction sets, and parameters
   drawn inside, at and past their bounds (NaN, infinities, 0, denormals, 1e-30 to 1e38); refused ones must be
   refused with a ValueError, accepted ones must give finite distributions (for valid probabilities);
2. a C++ program that includes the source and calls the lattice's `embed()` directly with any float features
   (huge, NaN, infinities), and the whole mean field with stds and weights that the entry checks refuse: the
   second guard, which must keep every index in its array whatever it is given.

Usage: python scripts/sanitize_crf.py [--seconds 120] [--seed 0] [--compiler g++] [--keep DIR]
Needs g++ (or clang++) with the sanitizer runtimes, Python's headers and libpython.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "keras_deeplab" / "crf_mean_field.cpp"
SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
FLAGS = ["-O1", "-g", "-std=c++20", "-pthread", "-Wno-psabi", *SANITIZE]
ENVIRONMENT = {
    # Python's own allocations are never freed at exit: leaks are not what this looks for.
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87",
}

# The Python-side driver: runs in a child whose LD_PRELOAD puts the sanitizer runtime first.
PYTHON_DRIVER = r"""
import math, sys, time
import numpy as np
np.seterr(all="ignore")  # float32 of 1e39 is meant
sys.path.insert(0, sys.argv[1])
import _crf_mean_field as m
MAX_FEATURE, MAX_WEIGHT, MAX_ITERATIONS = 65536.0, 1e4, 1000
seconds, rng = float(sys.argv[2]), np.random.default_rng(int(sys.argv[3]))
EXTREME = [0.0, -0.0, -1.0, 1e-45, 1e-38, 1e-30, 1e-10, 1e-7, 1e-3, 0.5, 1.0, 3.0, 49.0, 1e4, 1e6, 1e30, 3.4e38,
           1e39, float("inf"), -float("inf"), float("nan")]
def shape():
    kind = rng.integers(6)
    if kind == 0: return 1, 1
    if kind == 1: return 1, int(rng.integers(1, 4000))
    if kind == 2: return int(rng.integers(1, 4000)), 1
    if kind == 3: return int(rng.integers(1, 5)), int(rng.integers(1, 5))
    return int(rng.integers(1, 300)), int(rng.integers(1, 300))
def std(extent):
    kind = rng.integers(4)
    if kind == 0: return float(rng.choice(EXTREME))
    if kind == 1: return extent / MAX_FEATURE * float(rng.choice([0.999, 1.0, 1.000001, 1.001, 2.0]))  # the bound
    return float(10 ** rng.uniform(-6, 3))
def weight():
    return float(rng.choice(EXTREME)) if rng.integers(3) == 0 else float(rng.uniform(0, MAX_WEIGHT * 1.01))
def allowed(h, w, iterations, bi_w, bi_xy, bi_rgb, pos_w, pos_xy):
    f32 = lambda v: float(np.float32(v))
    bi_w, bi_xy, bi_rgb, pos_w, pos_xy = map(f32, (bi_w, bi_xy, bi_rgb, pos_w, pos_xy))
    side = max(h, w) - 1
    ok_std = lambda v, extent: math.isfinite(v) and v > 0 and extent / v <= MAX_FEATURE * (1 + 1e-6)
    ok_w = lambda v: 0 <= v <= MAX_WEIGHT
    return (iterations <= MAX_ITERATIONS and ok_std(bi_xy, side) and ok_std(pos_xy, side) and ok_std(bi_rgb, 255)
            and ok_w(bi_w) and ok_w(pos_w))
started, cases, ran, refused, unexpected = time.time(), 0, 0, 0, []
while time.time() - started < seconds:
    h, w = shape()
    classes = int(rng.choice([1, 2, 3, 8, 9, 21, 40, int(rng.integers(1, 1025)), 1024]))
    if h * w * classes > 3_000_000: classes = max(1, 3_000_000 // (h * w))
    threads = int(rng.choice([1, 2, 3, 7, 64, int(rng.integers(1, 65))]))
    iterations = int(rng.choice([0, 1, 2, 3, 1000, 1001, -1])) if rng.integers(8) == 0 else int(rng.integers(0, 4))
    if iterations == 1000 and h * w * classes > 2000: iterations = 3  # allowed, but slow under the sanitizers
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if rng.integers(4) == 0: image[:] = rng.choice([0, 255])
    logits = rng.normal(0, float(rng.choice([0.1, 3, 30])), (h, w, classes)).astype(np.float32)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    valid = True
    if rng.integers(10) == 0:  # the extension does not check the values themselves: they must not hurt it either
        bad = float(rng.choice([float("nan"), float("inf"), -1.0, 0.0]))
        probabilities.flat[rng.integers(probabilities.size)] = bad
        valid = False
    probabilities = np.ascontiguousarray(probabilities, np.float32)
    out = np.full_like(probabilities, np.nan)
    if rng.integers(2) == 0:  # half the calls within the bounds, so that the mean field runs often
        p = tuple(float(v) for v in (rng.uniform(0, 10), 10 ** rng.uniform(-0.5, 2.5), 10 ** rng.uniform(-0.5, 2),
                                      rng.uniform(0, 10), 10 ** rng.uniform(-0.5, 1.5)))
        p = p if allowed(h, w, 0, *p) else (4.0, 49.0, 5.0, 3.0, 3.0)
        floor = 1e-8
    else:
        p = (weight(), std(max(h, w) - 1), std(255), weight(), std(max(h, w) - 1))
        floor = float(rng.choice([1e-8, 1e-8, 1e-8, 0.0, 1.0, float("nan")]))
    portable = bool(rng.integers(2))
    cases += 1
    try:
        m.mean_field(image, probabilities, out, h, w, classes, iterations, threads, *p, floor, portable=portable)
    except ValueError as error:
        refused += 1
        if allowed(h, w, iterations, *p) and 0 < floor <= 1 and classes <= 1024 and iterations >= 0:
            unexpected.append(f"refused {(h, w, classes, iterations, threads, p, floor)}: {error}")
        continue
    except (OverflowError, MemoryError) as error:
        unexpected.append(f"{type(error).__name__} {(h, w, classes, iterations, threads, p, floor)}")
        continue
    ran += 1
    if not allowed(h, w, iterations, *p) or not 0 < floor <= 1:
        unexpected.append(f"ran past a bound: {(h, w, classes, iterations, threads, p, floor)}")
    elif valid and not (np.all(np.isfinite(out)) and np.allclose(out.sum(-1), 1, atol=1e-3)):
        unexpected.append(f"not a distribution: {(h, w, classes, iterations, threads, p, floor)}")
    if cases % 50 == 0: m.release_memory()
print(f"python driver: {cases} calls in {time.time() - started:.0f} s: {ran} ran, {refused} refused")
for line in unexpected[:20]: print("  unexpected:", line)
sys.exit(1 if unexpected else 0)
"""

# The C++ driver: the source included whole, so that its internals (embed, the unchecked mean_field) are called
# past the entry checks.
CPP_DRIVER = r"""
#include SOURCE
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>

int main(int argc, char** argv) {
  const double seconds = std::atof(argv[1]);
  std::mt19937_64 rng(std::strtoull(argv[2], nullptr, 10));
  const float extreme[] = {0.0f, -0.0f, 1e-45f, 1e-30f, 1e-7f, 0.5f, 1.0f, 3.0f, 1e4f, 65536.0f, 1e6f, 1e9f, 2.2e9f,
                           -2.2e9f, 1e20f, 3.4e38f, -3.4e38f, std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  auto pick = [&]() -> float {
    std::uniform_int_distribution<int> kind(0, 2);
    std::uniform_real_distribution<float> exponent(-10.0f, 38.0f);
    std::uniform_int_distribution<size_t> which(0, sizeof(extreme) / sizeof(float) - 1);
    if (kind(rng) == 0) return extreme[which(rng)];
    const float magnitude = std::pow(10.0f, exponent(rng));
    return kind(rng) == 0 ? -magnitude : magnitude;
  };
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  long embeds = 0, fields = 0;
  // embed(): any features, on lattices of 1 to 16 dimensions.
  while (elapsed() < seconds / 2) {
    const int d = 1 + static_cast<int>(rng() % kMaxDims);
    float scale[kMaxDims];
    const float inverse_std = std::sqrt(2.0f / 3.0f) * (d + 1);
    for (int i = 0; i < d; ++i) scale[i] = inverse_std / std::sqrt(static_cast<float>((i + 2) * (i + 1)));
    int canonical[(kMaxDims + 1) * (kMaxDims + 1)];
    for (int i = 0; i <= d; ++i) {
      for (int j = 0; j <= d - i; ++j) canonical[i * (d + 1) + j] = i;
      for (int j = d - i + 1; j <= d; ++j) canonical[i * (d + 1) + j] = i - (d + 1);
    }
    for (int n = 0; n < 1000; ++n, ++embeds) {
      float feature[kMaxDims];
      for (int i = 0; i < d; ++i) feature[i] = pick();
      int32_t keys[(kMaxDims + 1) * kMaxDims];
      float weights[kMaxDims + 1];
      embed(feature, d, scale, canonical, keys, weights);
    }
  }
  // The whole mean field with the entry checks bypassed: stds and weights anywhere.
  while (elapsed() < seconds) {
    Settings s{};
    s.height = 1 + static_cast<int64_t>(rng() % 40);
    s.width = 1 + static_cast<int64_t>(rng() % 40);
    s.classes = 1 + static_cast<int>(rng() % 24);
    s.iterations = static_cast<int>(rng() % 3);
    s.threads = 1 + static_cast<int>(rng() % 8);
    s.portable = static_cast<int>(rng() % 2);
    s.bi_w = pick();
    s.pos_w = pick();
    s.bi_xy_std = pick();
    s.bi_rgb_std = pick();
    s.pos_xy_std = pick();
    s.probability_floor = 1e-8f;
    const int64_t n = s.height * s.width;
    std::vector<uint8_t> image(n * 3);
    for (auto& v : image) v = static_cast<uint8_t>(rng());
    std::vector<float> probabilities(n * s.classes, 1.0f / s.classes), out(n * s.classes);
    mean_field(image.data(), probabilities.data(), out.data(), s);
    ++fields;
  }
  std::printf("c++ driver: %ld embed() calls, %ld unchecked mean fields in %.0f s\n", embeds, fields, elapsed());
  return 0;
}
"""


def compile_and_link(compiler: str, out: Path, *inputs: str, shared: bool) -> None:
    include = sysconfig.get_paths()["include"]
    command = [compiler, *FLAGS, f"-I{include}", f"-I{SOURCE.parent}", *inputs, "-o", str(out)]
    if not shared:
        command.insert(1, f'-DSOURCE="{Path(inputs[-1]).parent / "source.cpp"}"')
    if shared:
        command[1:1] = ["-shared", "-fPIC"]
    else:
        library = sysconfig.get_config_var("LDLIBRARY") or "libpython3.so"
        name = library.removeprefix("lib").split(".so")[0].removesuffix(".a")
        libdir = sysconfig.get_config_var("LIBDIR")
        command += [f"-L{libdir}", f"-Wl,-rpath,{libdir}", f"-l{name}"]
    subprocess.run(command, check=True)


def runtime(compiler: str) -> str:
    """The ASan runtime the compiler links against, for LD_PRELOAD (it must be loaded before Python's libc use)."""
    found = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(found):
        raise SystemExit(f"sanitize_crf: {compiler} has no libasan.so (install the sanitizer runtime)")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="time for each driver (default 120)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compiler", default="g++")
    parser.add_argument("--keep", type=Path, help="build into this folder and keep it")
    parser.add_argument(
        "--source", type=Path, default=SOURCE, help="another version of crf_mean_field.cpp (e.g. one before a fix)"
    )
    args = parser.parse_args()
    if shutil.which(args.compiler) is None:
        raise SystemExit(f"sanitize_crf: no {args.compiler} on PATH")
    build = args.keep or Path(tempfile.mkdtemp(prefix="sanitize-crf-"))
    build.mkdir(parents=True, exist_ok=True)
    started = time.time()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    shutil.copyfile(args.source, build / "source.cpp")  # its header is found through -I keras_deeplab/
    compile_and_link(args.compiler, build / f"_crf_mean_field{suffix}", str(build / "source.cpp"), shared=True)
    (build / "driver.cpp").write_text(CPP_DRIVER)
    compile_and_link(args.compiler, build / "driver", str(build / "driver.cpp"), shared=False)
    print(f"built with {' '.join(SANITIZE)} in {time.time() - started:.0f} s ({build})", flush=True)
    environment = {**os.environ, **ENVIRONMENT}
    failed = False
    python = subprocess.run(
        [sys.executable, "-c", PYTHON_DRIVER, str(build), str(args.seconds), str(args.seed)],
        env={**environment, "LD_PRELOAD": runtime(args.compiler)},
    )
    failed |= python.returncode != 0
    native = subprocess.run([str(build / "driver"), str(args.seconds), str(args.seed)], env=environment)
    failed |= native.returncode != 0
    verdict = "FAILED" if failed else "no findings"
    print(
        f"sanitize_crf: {verdict} (exit codes {python.returncode}, {native.returncode}; 86: AddressSanitizer, "
        f"87: UndefinedBehaviorSanitizer) in {time.time() - started:.0f} s"
    )
    if args.keep is None:
        shutil.rmtree(build, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
