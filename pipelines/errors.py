"""Bad input: the error that names the file, and the record of pairs skipped under `skip_bad`."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset file that cannot be used: `file` names it, `problem` says what is wrong and what was expected."""

    def __init__(self, file: str, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem


class SkippedExamples:
    """The bad pairs a source skipped (with `skip_bad`), each recorded once, thread-safe.

    Decoding runs inside tf.data worker threads, and a repeated dataset meets the same bad file every epoch:
    each file is logged as a warning the first time and listed once in `as_list()`.
    """

    def __init__(self):
        self._problems: dict[str, str] = {}
        self._lock = threading.Lock()

    def record(self, error: DataError) -> None:
        with self._lock:
            if error.file in self._problems:
                return
            self._problems[error.file] = error.problem
        logger.warning("skipping bad example: %s", error)

    def as_list(self) -> list[dict[str, str]]:
        """[{"file": ..., "problem": ...}, ...] in the order they were met."""
        with self._lock:
            return [{"file": file, "problem": problem} for file, problem in self._problems.items()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._problems)

    def report(self) -> str:
        """A closing summary for logs: how many pairs were skipped and why."""
        skipped = self.as_list()
        if not skipped:
            return "no bad examples skipped"
        lines = [f"{len(skipped)} bad example(s) skipped:"]
        lines += [f"  {item['file']}: {item['problem']}" for item in skipped]
        return "\n".join(lines)
