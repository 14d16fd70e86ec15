"""The backend the Blender add-on drives (docs/ARCHITECTURE.md §3, §9): `python -m backend serve`.

Requests arrive as JSON lines, read by a reader thread and dispatched on the main thread; one
worker thread runs the Trainer. Events go out through a transport, one line each, under a lock:
here stdout (the process's own fd 1 is pointed at stderr, so logs and any stray print, even from
C code, land on stderr); over TCP, the attached connection (tcp_server.py), which reuses this
Server whole. Nothing a client sends is fatal: a bad line becomes an `error` event with code
"protocol", and every failure while preparing or running a run (the config, the prompt, the model:
missing, not a pipeline, offline, a failed download, a failed load, out of memory) an `error` with
its code and hint; the server goes on serving. stdin EOF, `shutdown`, SIGTERM or SIGINT cancel the
run, wait until it has written its checkpoint and mesh, and exit 0. The server keeps the current
run's latest phase, progress, preview and mesh events and its end, for `attach`.

A request is checked on the request thread (config, preset, the analytic prior's words: quick);
everything slow happens on the run's own thread, so `ping` and `cancel` are answered meanwhile:
finding the SD model, downloading it (`phase` events with the bytes; cancel ends the download),
loading it (a `load` phase), training.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .. import protocol, wording
from ..config import HUB_PREFIX, ConfigError, GenerationConfig, preset_for
from ..errors import TrainingError
from ..protocol import ProtocolError
from .capabilities import check_sd_meanwhile, demo_prior_notice, features, presets, sd_import_error
from .lines import EOF, read_lines

log = logging.getLogger("dreamtime.server")

REPLAYED = ("run_folder", "phase", "progress", "preview", "mesh")  # a run's latest event of each kind is kept for `attach`


def config_hint(field_name: str) -> str:
    return f"Change [[{field_name}]] and generate again." if field_name in GenerationConfig.__dataclass_fields__ else \
        "Fix the config and generate again."


def build_config(values: dict[str, Any]) -> GenerationConfig:
    """A request's config over the preset of the device it resolves to; ConfigError names the field.
    Quick checks only: the SD model is found (maybe downloaded) on the run's thread."""
    from ..run_setup import preflight, resolve_device

    try:
        config = GenerationConfig.from_dict(values).validate()
        device = resolve_device(config.device)
        config = GenerationConfig.from_dict({**preset_for(device.type), **values}).validate()
    except TypeError as exc:  # e.g. export given as a number
        raise ConfigError("config", str(exc)) from None
    preflight(config, model=False)  # unknown analytic prompt words raise TargetError (a ValueError)
    return config


def _finite(value: Any) -> Any:
    """The same message with non-finite floats (a skipped step's NaN loss) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


@dataclass
class ServedRun:
    id: str
    trainer: Any  # None until the model is found and the run folder made (on the run's thread)
    stop: threading.Event
    thread: threading.Thread
    finished: bool = False  # set before its done/error event goes out, so a client that saw it may start anew
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # REPLAYED kind -> its last event
    end: dict[str, Any] | None = None  # the done or error event that ended it
    stopped_by: str = ""  # "client" (its cancel) or "backend" (a signal, shutdown, stdin closed): said in a stopped run's done


def event_line(event: dict[str, Any]) -> str:
    """One event as a protocol line; a non-finite float (a skipped step's NaN loss) becomes null."""
    try:
        return protocol.encode(event)
    except ValueError:
        return protocol.encode(_finite(event))


class TextTransport:
    """Events as lines on a text stream (stdout)."""

    def __init__(self, out: TextIO):
        self.out = out

    def write(self, event: dict[str, Any]) -> None:
        self.out.write(event_line(event))
        self.out.flush()


class Server:
    def __init__(self, out: TextIO | None, device: str, policy: Any = None):
        """`out`: the stream events go to (stdout); None until a transport is attached (TCP).
        `policy`: what remote clients may ask (remote_policy.RemotePolicy), applied to each request's
        config; None on stdio, where the config's own paths are kept."""
        self.policy = policy
        self._out_lock = threading.Lock()
        self.transport = None if out is None else TextTransport(out)  # anything with write(event)
        self.device = device
        self.run: ServedRun | None = None
        self.requests: queue.Queue = queue.Queue()  # stdio's; TCP feeds dispatch() a queue of its own
        self._features: list[str] | None = None
        self._presets: tuple[dict, dict] = ({}, {})

    # ------------------------------------------------------------------ output
    def send(self, event: dict[str, Any]) -> None:
        """Write one event; thread-safe. A vanished client is not an error here."""
        with self._out_lock:
            self._write(event)

    def _write(self, event: dict[str, Any]) -> None:
        """Caller holds _out_lock. With no client attached the event is dropped (the run keeps going)."""
        if self.transport is None:
            return
        try:
            self.transport.write(wording.panel_event(event))  # the add-on's reader: settings named as panel fields
        except (OSError, ValueError):
            pass  # the client is gone: stdin EOF ends the loop; a TCP reader detaches it

    def ready(self) -> dict[str, Any]:
        if self._features is None:
            self._features, self._presets = features(), presets()
        return protocol.ready(self.device, self._features, *self._presets)

    def attach(self, transport: Any) -> None:
        """Send events to `transport` from now on (a TCP client), greeting it with `ready`."""
        event = self.ready()
        with self._out_lock:
            self.transport = transport
            self._write(event)

    def detach(self, transport: Any) -> None:
        """Stop sending to `transport` if it is still the attached one; the run goes on."""
        with self._out_lock:
            if self.transport is transport:
                self.transport = None

    def error(self, run_id: str | None, code: str, text: str, hint: str = "", **extra: Any) -> None:
        self.send(protocol.message("error", id=run_id, code=code, message=text, hint=hint, **extra))

    # ------------------------------------------------------------------ the loop
    def serve(self, stdin_fd: int) -> int:
        """stdio: requests from `stdin_fd` until EOF or `shutdown`."""
        self.send(self.ready())
        threading.Thread(target=_read_stdin, args=(stdin_fd, self.requests), name="stdin-reader", daemon=True).start()
        return self.dispatch(self.requests)

    def stop(self) -> None:
        """From a signal handler: end the loop as stdin EOF does (the run writes its outputs first)."""
        self.requests.put(EOF)

    def dispatch(self, requests: queue.Queue) -> int:
        """Handle queued requests until EOF or `shutdown`; then cancel the run and wait for it."""
        while True:
            item = requests.get()
            if item is EOF:
                log.info("input closed; stopping")
                break
            if isinstance(item, ProtocolError):
                self.error(None, "protocol", str(item), "Send one JSON object per line; see backend/protocol.py.")
                continue
            if not self.handle(item):
                break
        self.stop_run()
        return 0

    def handle(self, msg: dict[str, Any]) -> bool:
        """Act on one request; False when the server should exit."""
        kind = msg["type"]
        if kind == "ping":
            self.send(protocol.message("pong"))
        elif kind == "generate":
            self.generate(msg["id"], msg["config"])
        elif kind == "cancel":
            if self._active(msg["id"]):
                self.run.stopped_by = self.run.stopped_by or "client"
                self.run.stop.set()
            else:
                self.send(protocol.log("warning", f"cancel: no active run {msg['id']!r}"))
        elif kind == "extract":
            self.extract(msg["id"])
        elif kind == "attach":
            self.replay(msg["id"])
        elif kind == "shutdown":
            return False
        return True

    # ------------------------------------------------------------------ requests
    def generate(self, run_id: str, values: dict[str, Any]) -> None:
        """Check the request and make its run folder here (quick); find the model (maybe download it),
        load it and train on the run's thread."""
        from ..run_folder import new_run_dir
        from ..run_setup import resolve_device, resolve_guidance

        if self.run is not None and not self.run.finished:
            self.error(run_id, "busy", f"run {self.run.id!r} is still running", "Cancel it or wait for its done event.")
            return
        try:
            config = build_config(values if self.policy is None else self.policy.apply(values))
            if config.refine_from:  # refine.py: the run's own config with more steps, in a new folder, resumed
                from ..refine import prepare_refine

                config = prepare_refine(config.refine_from, config.steps)
            guidance = resolve_guidance(config, resolve_device(config.device))
            name = f"{config.prompt} {config.variations} variations" if config.variations > 1 else config.prompt
            made = None if config.run_dir else new_run_dir(config.out, name, config.seed)
        except ConfigError as exc:
            self.error(run_id, "config", str(exc), config_hint(exc.field), field=exc.field)
            return
        except TrainingError as exc:  # a remote client's model the policy refuses
            self.error(run_id, exc.code, str(exc), exc.hint)
            return
        except ValueError as exc:  # the analytic prior cannot read the prompt
            self.error(run_id, "prompt", str(exc), "Name a known shape and colour, or set [[guidance=sd]] for free text.")
            return
        except OSError as exc:
            self.error(run_id, "output", f"cannot make the run folder: {exc}", "Choose a writable output folder.")
            return
        except Exception as exc:  # never take the server down with a request
            log.exception("generate %s: preparing the run failed", run_id)
            self.error(run_id, "internal", f"Preparing the run failed unexpectedly: {exc}.", "See the backend log (stderr) for details.")
            return
        if guidance == "analytic":
            self.send(protocol.message("log", id=run_id, level="warning", message=demo_prior_notice()))
        self.run = run = ServedRun(run_id, None, threading.Event(), threading.Thread())
        run.thread = threading.Thread(target=self._work, args=(run, config, guidance, made), name=f"run-{run_id}")
        run.thread.start()

    def _run_event(self, run_id: str, event: dict[str, Any]) -> None:
        """A run's event: remembered for `attach`, then sent (one lock, so a replay never reorders)."""
        with self._out_lock:
            run = self.run
            if run is not None and run.id == run_id:
                if event["type"] == "done":
                    if event.get("outcome") == "stopped" or "stopped_at" in event.get("outputs", {}):
                        event = {**event, "stopped_by": run.stopped_by or "backend"}
                    run.finished, run.end = True, event
                elif event["type"] in REPLAYED or event.get("run_dir"):
                    run.latest["run_folder" if event.get("run_dir") else event["type"]] = event
                    if event["type"] == "progress":
                        run.latest.pop("phase", None)  # training has begun: the phase is over
            self._write(event)

    def _work(self, run: ServedRun, config: GenerationConfig, guidance: str, made: Path | None) -> None:
        """The run's thread: the model (found, maybe downloaded), the Trainer, the run; every failure
        on the way is one error event. `made`: the run folder generate() made (removed again if the
        run ends before training, still empty)."""
        failure = None
        try:
            run.trainer = self._prepare(run, config, guidance, made)
            run.trainer.run(resume=bool(config.refine_from))
        except TrainingError as exc:
            failure = (exc.code, str(exc), exc.hint, {})
        except ConfigError as exc:
            failure = ("config", str(exc), config_hint(exc.field), {"field": exc.field})
        except MemoryError:
            step = getattr(run.trainer, "last_step", None)
            failure = ("out_of_memory", f"the backend ran out of memory {'while preparing the run' if step is None else f'at step {step}'}",
                       "Lower the resolution or the samples per ray, or close other programs.", {})
        except Exception as exc:  # never take the server down with a run
            log.exception("run %s failed", run.id)
            failure = ("internal", f"The run failed unexpectedly: {exc}.", "See the backend log (stderr) and the run folder's log.txt.", {})
        finally:
            run.finished = True
        if run.trainer is None and made is not None:
            try:
                made.rmdir()  # only if still empty
            except OSError:
                pass
        if failure is not None:
            code, text, hint, extra = failure
            event = protocol.message("error", id=run.id, code=code, message=text, hint=hint, **extra)
            with self._out_lock:
                run.end = event
                self._write(event)

    def _prepare(self, run: ServedRun, config: GenerationConfig, guidance: str, made: Path | None):
        """The Trainer of a checked request, once its model is here (phase events while it downloads)."""
        from ..guidance.hub import size_text
        from ..memory import check_memory
        from ..run_setup import find_model, resolve_device
        from ..trainer import Trainer

        def on_event(event: dict[str, Any]) -> None:
            self._run_event(run.id, event)

        if guidance == "sd":
            reason = sd_import_error()
            if reason is not None:
                raise TrainingError("sd_unavailable", f"Stable Diffusion cannot run in this backend: {reason}",
                                    "Install the backend's requirements (pip install diffusers transformers; the add-on's Install "
                                    "backend does), or choose the analytic guidance.")

            name = config.model.removeprefix(HUB_PREFIX)

            def downloading(done: int, total: int) -> None:
                on_event(protocol.phase(run.id, "download", f"Downloading {name} {size_text(done, total)}",
                                        bytes_done=done, bytes_total=total))

            folder = find_model(config, downloading, run.stop)
            if run.stop.is_set():
                raise TrainingError("cancelled", f"cancelled before loading {name}; nothing was trained",
                                    "The model is in the cache now: the next run starts from loading it.")
            check_memory(config, resolve_device(config.device), guidance, folder)  # the weights' size, now that they are here
        if config.variations > 1:
            from ..cluster.variations import Variations

            return Variations(config, made or config.run_dir, on_event=on_event, stop=run.stop, run_id=run.id)
        return Trainer(config, made or config.run_dir, on_event=on_event, stop=run.stop, run_id=run.id)

    def replay(self, run_id: str) -> None:
        """`attach`: the run's latest progress, preview and mesh, then its done/error if it ended."""
        run = self.run
        if run is None or run.id != run_id:
            self.error(run_id, "unknown_run", f"attach: this backend has no run {run_id!r}",
                       "It restarted, or another run replaced it; generate again.")
            return
        with self._out_lock:
            for event in [run.latest[kind] for kind in REPLAYED if kind in run.latest] + ([run.end] if run.end else []):
                self._write(event)

    def extract(self, run_id: str) -> None:
        if not self._active(run_id):
            self.error(run_id, "no_run", f"extract: no active run {run_id!r}", "Extract works while a run is going.")
        elif self.run.trainer is None:
            self.error(run_id, "extract", "extract: the run has not begun training yet (its model is still being prepared)",
                       "Extract once the first steps are done.")
        elif not hasattr(self.run.trainer, "request_extract"):
            self.error(run_id, "unsupported", "extract is not supported yet by this backend",
                       "The mesh is written when the run ends or is cancelled.")
        else:
            self.run.trainer.request_extract()

    def _active(self, run_id: str) -> bool:
        return self.run is not None and self.run.id == run_id and not self.run.finished

    def stop_run(self) -> None:
        """Cancel the active run and wait until it has written its outputs."""
        if self.run is not None:
            self.run.stopped_by = self.run.stopped_by or "backend"
            self.run.stop.set()
            self.run.thread.join()


def _read_stdin(fd: int, requests: queue.Queue) -> None:
    """Reader thread: stdin's requests, then EOF.

    Raw `os.read` rather than sys.stdin: a thread blocked in a buffered read holds the buffer's
    lock, and interpreter shutdown then aborts on it.
    """
    try:
        read_lines(functools.partial(os.read, fd), requests.put)
    finally:
        requests.put(EOF)


def _protocol_stdout() -> TextIO:
    """A private handle on the real stdout; fd 1 itself is pointed at stderr from now on."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", newline="\n")
    os.dup2(2, 1)
    return out


def main() -> int:
    from ..run_setup import resolve_device

    out = _protocol_stdout()
    check_sd_meanwhile()  # after fd 1 points at stderr: whatever an import prints stays off the protocol
    device = resolve_device("auto").type
    log.info("DreamTime backend serving protocol %d on %s", protocol.PROTOCOL_VERSION, device)
    server = Server(out, device)
    for sig in (signal.SIGINT, signal.SIGTERM):  # as stdin EOF: the run stops after its step and writes its outputs
        signal.signal(sig, lambda *_: server.stop())
    return server.serve(sys.stdin.fileno())
