"""Commands print nothing but their own output on every CPU kind; Keras' own loader finds the project's classes.

On an AVX-512 machine TensorFlow turns oneDNN on by itself and logs it through absl at import, whatever
TF_CPP_MIN_LOG_LEVEL says; on an AVX2-only machine it stays off and silent. TF_ENABLE_ONEDNN_OPTS=1 makes any
x86 machine print that line (the condition of the other kind, reproduced), and the `--verbose` runs below show
that the line really was printed, so the quiet runs' empty stderr means something on both kinds.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from keras_deeplab.quiet import drop_native_log_lines

ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "keras_deeplab" / "assets" / "published"
ONEDNN_LINE = (
    "I0000 00:00:1796411322.084625    4224 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`."
)
NATIVE_LOG_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    ONEDNN_LINE,
    "I0000 00:00:1796419307.974268    2491 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, output_inference_type: INT8",
]
KEPT_LINES = [
    "E0000 00:00:1796411322.084625    4224 coordination_service.cc:500] a real error stays",
    "keras-deeplab predict: error: photo.jpg: no such file",
    "UserWarning: something the user should see",
]


def quiet_environment() -> dict[str, str]:
    """The environment of a user's shell on the kind of machine where oneDNN is on: TF_CPP_MIN_LOG_LEVEL unset."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("TF_", "KERAS_DEEPLAB"))}
    environment["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return environment


def command(*arguments: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keras_deeplab.cli", *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=quiet_environment(),
        timeout=300,
    )


def test_the_native_log_lines_are_dropped_and_every_other_line_kept():
    text = "\n".join(NATIVE_LOG_LINES[:2] + KEPT_LINES[:1] + NATIVE_LOG_LINES[2:] + KEPT_LINES[1:]) + "\n"
    assert drop_native_log_lines(text.encode()).decode() == "\n".join(KEPT_LINES) + "\n"
    assert drop_native_log_lines(b"partial line without newline") == b"partial line without newline"


def test_native_writes_to_descriptor_2_are_filtered_once_enabled_and_only_then():
    script = textwrap.dedent(
        f"""
        import os, sys
        from keras_deeplab import quiet
        noise = {chr(10).join(NATIVE_LOG_LINES + KEPT_LINES)!r}.encode() + b"\\n"
        with quiet.filtered_stderr():
            os.write(2, b"before enable\\n" + noise)
        quiet.enable()
        with quiet.filtered_stderr():
            os.write(2, noise)  # as C++ writes: below sys.stderr
            print("from python", file=sys.stderr)
        os.write(2, b"after the block\\n")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    before, after = result.stderr.split("before enable\n")
    assert before == ""
    expected = NATIVE_LOG_LINES + KEPT_LINES + KEPT_LINES + ["from python", "after the block"]
    assert after.splitlines() == expected


@pytest.mark.slow
def test_info_json_prints_nothing_but_its_json_and_verbose_shows_the_onednn_line():
    result = command("info", "--backbone", "mobilenetv2", "--input-size", "65", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("{") and len(result.stdout.strip().splitlines()) == 1
    assert result.stderr == ""
    # The condition was there: asked for, the same command shows TensorFlow's oneDNN line.
    verbose = command("info", "--backbone", "mobilenetv2", "--input-size", "65", "--json", "--verbose")
    assert verbose.returncode == 0 and "oneDNN custom operations are on" in verbose.stderr, verbose.stderr


@pytest.mark.slow(40)
def test_import_weights_and_predict_with_tflite_and_keras_print_only_their_own_lines(tmp_path):
    tflite, photo = PUBLISHED / "deeplabv3_257_mv_gpu.tflite", PUBLISHED / "bird_segmentation.bmp"
    imported = command("import-weights", str(tflite), "--out", str(tmp_path / "mnv2.keras"))
    assert imported.returncode == 0 and imported.stderr == "", imported.stderr
    for model in (tflite, tmp_path / "mnv2.keras"):
        out = tmp_path / model.suffix.strip(".")
        result = command("predict", str(photo), "--model", str(model), "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert (out / "bird_segmentation.png").is_file()
    # LiteRT's own line is printed on every kind and shown when asked for.
    verbose = command("predict", str(photo), "--model", str(tflite), "--out", str(tmp_path / "v"), "--verbose")
    assert "XNNPACK delegate" in verbose.stderr and "oneDNN" in verbose.stderr, verbose.stderr


@pytest.fixture(scope="module")
def saved_deeplab(tmp_path_factory):
    """A DeepLab .keras file, saved here: the point is the fresh process that loads it, not the one that saves."""
    from keras_deeplab import build_model

    saved = tmp_path_factory.mktemp("saved") / "m.keras"
    build_model(16, num_classes=3, backbone="mobilenetv2", width_multiplier=0.35).save(saved)
    return saved


@pytest.mark.slow(9)
@pytest.mark.parametrize("order", ["import keras_deeplab, keras", "import keras, keras_deeplab"])
def test_keras_own_load_model_reads_a_saved_deeplab_after_import_keras_deeplab(saved_deeplab, tmp_path, order):
    load = f"{order}\nmodel = keras.models.load_model({str(saved_deeplab)!r})\n"
    load += "print(type(model).__name__, model.count_params())"
    result = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0] == "DeepLab" and int(result.stdout.split()[1]) > 0
