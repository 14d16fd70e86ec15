"""The error a run ends with (standard library only, so every module may raise it without a cycle).

`TrainingError.code` and `.hint` travel in the protocol's `error` event (docs/ARCHITECTURE.md §3)
and in the CLI's message. A bad config value is a `config.ConfigError` instead.
"""

from __future__ import annotations

import errno
from pathlib import Path


class TrainingError(RuntimeError):
    """A run that cannot go on; `code` and `hint` travel in the protocol's error event."""

    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.code, self.hint = code, hint


def write_failure(exc: OSError, run_dir: Path, step: int) -> TrainingError:
    """The error of a run that could not write into its folder (a full disk, a folder turned read-only) at `step`."""
    full = exc.errno == errno.ENOSPC
    problem = "the disk is full" if full else f"cannot write ({exc.strerror or exc})"
    return TrainingError(
        "disk_full" if full else "write_failed",
        f"{problem}: {run_dir}; the run stopped at step {step}.",
        "Files already in the run folder are complete (every write is a temporary file renamed into place). "
        f"Free some space or choose a writable output folder; --resume {run_dir} continues from the last checkpoint.",
    )
