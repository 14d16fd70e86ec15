"""A Stable Diffusion model from the Hugging Face Hub: found in the local cache, or downloaded with
its bytes reported and a download that can be stopped (docs/ARCHITECTURE.md §4.5, §9).

Only the files the guidance loads are fetched (`sd_files`): model_index.json, the non-variant
weights and config of unet/, vae/ and text_encoder/ (safetensors, else .bin), and tokenizer/ and
scheduler/ whole; a repository's root checkpoints (5 GB each for SD 2.1) and fp16 variants are not.

The download runs in a child process (this file run as a script: huggingface_hub only, no torch),
so stopping it is ending that process: huggingface_hub keeps what arrived as `.incomplete` files
in the cache and the next download resumes them. The child writes JSON lines on stdout —
`{"total": bytes}`, then `{"done": bytes, "total": bytes}` as bytes arrive (huggingface_hub's own
byte count, through `tqdm_class`), then `{"folder": path}` or `{"error": code, "message": text}` —
and the parent (`download`) turns them into `on_progress(done, total)` calls on its own thread.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

NETWORKS = ("unet", "vae", "text_encoder")  # the subfolders with weights
WHOLE = ("tokenizer", "scheduler")  # small subfolders taken whole
WEIGHT_NAME = re.compile(r"^(diffusion_pytorch_model|model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?$")
PROGRESS_SECONDS = 0.25  # the child reports at most this often
HEARTBEAT_SECONDS = 2.0  # the parent calls on_progress at least this often, bytes or not
STOP_SECONDS = 5.0  # a stopped child that has not exited by then is killed
LOG_SECONDS = 10.0  # without an on_progress (the CLI), the bytes are logged this often

log = logging.getLogger("dreamtime")

Progress = Callable[[int, int], None]


def sd_files(listing: dict[str, int]) -> list[str]:
    """The files of a repository listing {path: size} that a Stable Diffusion guidance loads."""
    chosen = [name for name in ("model_index.json",) if name in listing]
    for folder in NETWORKS:
        names = [name[len(folder) + 1:] for name in listing if name.startswith(folder + "/") and name.count("/") == 1]
        weights = [name for name in names if WEIGHT_NAME.match(name)]
        safetensors = [name for name in weights if ".safetensors" in name]
        chosen += [f"{folder}/{name}" for name in ["config.json"] * ("config.json" in names) + (safetensors or weights)]
    chosen += [name for name in listing if name.split("/")[0] in WHOLE and name.count("/") == 1]
    return chosen


def complete_folder(folder: Path) -> bool:
    """Whether `folder` holds everything `sd_files` picks: the index, each network's config and weights,
    and the tokenizer and scheduler (a download that was stopped leaves some out)."""
    if not (folder / "model_index.json").is_file():
        return False
    for name in NETWORKS:
        files = [path.name for path in (folder / name).glob("*")] if (folder / name).is_dir() else []
        if "config.json" not in files or not any(WEIGHT_NAME.match(file) for file in files):
            return False
    return all((folder / name).is_dir() and any((folder / name).iterdir()) for name in WHOLE)


def cached_snapshot(model_id: str) -> Path | None:
    """The model's complete snapshot in the local Hugging Face cache, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(model_id, "model_index.json")
    if not isinstance(index, str):
        return None
    folder = Path(index).parent
    return folder if complete_folder(folder) else None


def size_text(done: int, total: int) -> str:
    """'1.2 / 5.2 GB' (or MB below a gigabyte)."""
    unit, scale = ("GB", 1e9) if total >= 1e9 else ("MB", 1e6)
    return f"{done / scale:.1f} / {total / scale:.1f} {unit}"


# ---------------------------------------------------------------------- the parent
def download(model_id: str, on_progress: Progress | None = None, stop: threading.Event | None = None) -> Path:
    """Download `model_id`'s SD files into the Hugging Face cache; its snapshot folder.

    Blocks the calling thread (the run's, never the server's request thread), calling
    `on_progress(done, total)` as bytes arrive and every HEARTBEAT_SECONDS. When `stop` is set the
    child is ended and TrainingError("cancelled") raised; a failure is a TrainingError too.
    """
    from huggingface_hub import constants

    from ..errors import TrainingError

    stop = stop or threading.Event()
    on_progress = on_progress or _logged(model_id)
    boot = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    argv = [sys.executable, "-c", boot, __file__, model_id, str(constants.HF_HUB_CACHE)]
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))  # Windows: no console window
    lines: queue.Queue = queue.Queue()
    stderr: list[str] = []
    threading.Thread(target=_read_lines, args=(child.stdout, lines), daemon=True).start()
    threading.Thread(target=lambda: stderr.extend(line.decode("utf-8", "replace") for line in child.stderr), daemon=True).start()
    done = total = 0
    result: dict = {}
    try:
        heartbeat = time.monotonic()
        while True:
            if stop.is_set():
                raise TrainingError(
                    "cancelled", f"cancelled while downloading {model_id} ({size_text(done, total)}); nothing was trained",
                    "What arrived stays in the Hugging Face cache: the next run of this model continues the download.")
            try:
                message = lines.get(timeout=0.1)
            except queue.Empty:
                message = None
            if message is not None and "eof" in message:  # its stdout is closed: it has said all it will
                try:
                    child.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
                message = {"error": "model_offline", "message": f"the download process ended (exit code {child.returncode}): "
                                                                + "".join(stderr[-3:]).strip()[-300:]}
            if message is not None:
                if "error" in message or "folder" in message:
                    result = message
                    break
                done, total = int(message.get("done", done)), int(message.get("total", total))
            if message is not None or time.monotonic() - heartbeat > HEARTBEAT_SECONDS:
                on_progress(done, total)
                heartbeat = time.monotonic()
    finally:
        _end(child)
    if "error" in result:
        raise TrainingError(result["error"], f"cannot download {model_id}: {result['message']}", _hint(result["error"], model_id))
    return Path(result["folder"])


def _logged(model_id: str) -> Progress:
    """The progress of a download nobody watches (the CLI): a log line every LOG_SECONDS."""
    last = [0.0]

    def log_progress(done: int, total: int) -> None:
        if total and time.monotonic() - last[0] > LOG_SECONDS:
            last[0] = time.monotonic()
            log.info("downloading %s: %s", model_id, size_text(done, total))

    return log_progress


def _read_lines(stream, lines: queue.Queue) -> None:
    for raw in stream:
        try:
            message = json.loads(raw)
        except ValueError:
            continue  # not ours (a library's stray print)
        if isinstance(message, dict) and "eof" not in message:
            lines.put(message)
    lines.put({"eof": True})


def _end(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    for stream in (child.stdout, child.stderr):
        stream.close()


def _hint(code: str, model_id: str) -> str:
    if code == "model_not_found":
        return ("Check the id; for a gated model accept its licence on huggingface.co and log in with `hf auth login`, "
                "or point [[model]] at a local diffusers folder.")
    if code == "model_layout":
        return "Use a diffusers Stable Diffusion 1.x/2.x repository (one with model_index.json, unet/, vae/, text_encoder/ ...)."
    return (f"Check the network and try again (the download resumes), or download it where there is network "
            f"(`hf download {model_id} --local-dir DIR`) and use [[model=DIR]].")


# ---------------------------------------------------------------------- the child
def _child(model_id: str, cache_dir: str) -> int:
    """Runs in the download process: list the repository, fetch the SD files into `cache_dir` (the
    parent's Hugging Face cache), report on stdout."""
    import tqdm
    from huggingface_hub import HfApi, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    def say(**message) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    try:
        info = HfApi().model_info(model_id, files_metadata=True)
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        say(error="model_not_found", message=f"the Hub has no such model, or it is gated ({first_line(exc)})")
        return 1
    except Exception as exc:  # no network, the Hub down, a proxy ...
        say(error="model_offline", message=f"the Hub cannot be reached ({first_line(exc)})")
        return 1
    listing = {sibling.rfilename: int(sibling.size or 0) for sibling in info.siblings or []}
    files = sd_files(listing)
    if "model_index.json" not in files:
        say(error="model_layout", message="it is not a diffusers pipeline (the repository has no model_index.json)")
        return 1
    missing = [name for name in files if not isinstance(try_to_load_from_cache(model_id, name, cache_dir, info.sha), str)]
    total = sum(listing[name] for name in missing)
    say(total=total)
    bars: list = []
    last = [0.0]

    class Reporter(tqdm.tqdm):
        """huggingface_hub's byte bars, silent, summed into one `done` line at most every PROGRESS_SECONDS."""

        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "file": open(os.devnull, "w"), "disable": False})
            if kwargs.get("unit") == "B":
                bars.append(self)

        def update(self, n=1):
            super().update(n)
            if self in bars and time.monotonic() - last[0] > PROGRESS_SECONDS:
                last[0] = time.monotonic()
                say(done=min(max(int(bar.n) for bar in bars), total), total=total)

    try:
        folder = snapshot_download(model_id, cache_dir=cache_dir, allow_patterns=files, tqdm_class=Reporter)
    except Exception as exc:
        say(error="model_offline", message=f"the download failed ({first_line(exc)})")
        return 1
    say(done=total, total=total)
    say(folder=folder)
    return 0


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}"
    return line if len(line) <= limit else line[: limit - 1] + "…"


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
