"""The error a run ends with (standard library only, so every module may raise it without a cycle).

`TrainingError.code` and `.hint` travel in the protocol's `error` event (docs/ARCHITECTURE.md §3)
and in the CLI's message. A bad config value is a `config.ConfigError` instead.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot go on; `code` and `hint` travel in the protocol's error event."""

    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.code, self.hint = code, hint
