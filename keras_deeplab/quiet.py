"""Native log lines kept off a command's stderr: TensorFlow's and absl's at import, LiteRT's at its first
interpreter, the TFLite converter's at a quantised conversion.

TensorFlow 2.21 logs through absl before absl is initialised, so TF_CPP_MIN_LOG_LEVEL does not reach every line:
where TensorFlow turns oneDNN on by itself (AVX-512 machines, most Intel and recent AMD ones) each process prints
"oneDNN custom operations are on..." twice at `import tensorflow`, after absl's own "All log messages before
absl::InitializeLog()..." line, and TensorFlow's CPU feature guard names the instructions it was not built for.
LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." when it builds an interpreter, and the
TFLite converter "fully_quantize: 0, inference_type: 6, ..." when it quantises. These lines
come from C++ writing to file descriptor 2, below Python's `sys.stderr`, so `filtered_stderr()` points descriptor 2
at a temporary file for the duration of a block and then writes back every line that is not one of them: what
TensorFlow computes with (oneDNN or not) is left exactly as TensorFlow picks it.

The command line calls `enable()` unless `--verbose`; a library user who never calls it sees what TensorFlow and
LiteRT print, as they print it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence

from keras_deeplab.lazy import wrap_imports

# The lines, whole: absl's prefix ("I0000 00:00:1796411322.084625    4224 port.cc:153] ", severity Info or
# Warning), absl's notice about its own initialisation, the CPU feature guard's second line, LiteRT's delegate
# line, the converter's quantisation settings. Errors (E..., F...) and anything else go through unchanged.
NATIVE_LOG_LINE = re.compile(
    rb"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    rb"|fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+"
)
# The modules whose import prints the lines above.
NOISY_MODULES = ("tensorflow",)


def drop_native_log_lines(text: bytes) -> bytes:
    """`text` without the native log lines (NATIVE_LOG_LINE); every other line kept, in order."""
    return b"".join(line for line in text.splitlines(keepends=True) if not NATIVE_LOG_LINE.fullmatch(line.rstrip()))


_enabled = False


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Once `enable()` was called: within the block, file descriptor 2 (C++ and Python alike) goes to a temporary
    file, and on leaving it the block's output reaches the real stderr without the native log lines. Before
    that, the block runs as it is."""
    if not _enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = drop_native_log_lines(captured.read())
            if kept:
                os.write(2, kept)


def enable(names: Sequence[str] = NOISY_MODULES) -> None:
    """From now on, `filtered_stderr()` filters, and the first import of each module of `names` drops its native
    log lines wherever it happens. Calling it again adds nothing."""
    global _enabled
    if not _enabled:
        _enabled = True
        wrap_imports(lambda name: name in names, lambda _: filtered_stderr())
