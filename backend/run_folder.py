"""The run folder (docs/ARCHITECTURE.md §6) and atomic writes: nothing in it is ever half-written.

Every artifact is written to a temporary file beside its destination and renamed over it
(`os.replace` is atomic on POSIX and Windows), so a killed process leaves either the previous
complete file or the new complete one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import re
import secrets
import unicodedata
from pathlib import Path
from typing import Iterator

MAX_SLUG_CHARS = 48
TEMP_MARK = ".tmp"  # in the name of every temporary file: `.<stem>.<random>.tmp<suffix>`


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else delete it.

    The temporary name keeps the destination's suffix so writers that choose a format by
    extension (PIL, trimesh, torch.save) behave as for the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{TEMP_MARK}{path.suffix}")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies (mkstemp's would be 0600)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # make the bytes durable before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temps(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed process left in a run folder (before resuming it)."""
    stale = [p for p in Path(run_dir).rglob(f".*{TEMP_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink()
    return stale


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def slugify(text: str, max_chars: int = MAX_SLUG_CHARS) -> str:
    """A file-name-safe slug of a prompt: ASCII letters, digits and '-', never empty, never '..'."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:max_chars].strip("-")
    return slug or "prompt"


def new_run_dir(out_root: str | os.PathLike, prompt: str, seed: int) -> Path:
    """Create and return a fresh folder `<out_root>/<date>-<time>-<slug>-s<seed>[-n]`."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return fresh_dir(Path(out_root) / f"{stamp}-{slugify(prompt)}-s{seed}")


def fresh_dir(base: Path) -> Path:
    """Create and return `base`, or `base-2`, `base-3`, … when it exists (mkdir is the test, so two
    processes never get the same folder)."""
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


class RunLog(logging.FileHandler):
    """log.txt of a run. A failed write (a full disk) is dropped quietly: the run's error says what happened."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass
