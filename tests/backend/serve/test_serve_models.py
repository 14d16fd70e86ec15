"""The SD model's path through a real `python -m backend serve`, over stdio and over TCP (issue 16):
every way finding, downloading or loading a model fails is an error event and the server goes on;
a download reports its bytes, and ping and cancel are answered while it runs; SIGTERM mid-run
writes the checkpoint and mesh; `ready` carries the presets and announces `sd` only when
diffusers imports. The Hub is tests/fake_hub.py."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_hub import FakeHub

from backend.config import CPU_PRESET
from backend.guidance.make_model import make_model

from test_server import REPO, TINY, Backend
from test_tcp_server import TOKEN, connect

TINY_SD = {**TINY, "guidance": "sd", "steps": 3, "resolution": 32, "preview_every": 0, "checkpoint_every": 0}


class TcpBackend:
    """`serve --listen` on a free port (run folders under FOLDER/runs, models under FOLDER/models, as
    remote_policy.py wants) and one authenticated client past its ready event."""

    def __init__(self, folder: Path, env: dict):
        (folder / "token").write_text(TOKEN + "\n")
        (folder / "token").chmod(0o600)
        (folder / "models").mkdir(exist_ok=True)
        self.log = open(folder / "stderr.txt", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--listen", "127.0.0.1:0", "--token-file",
                                      str(folder / "token"), "--out", str(folder / "runs"), "--models", str(folder / "models")],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = self.proc.stdout.readline().decode()
        assert line.startswith("listening on 127.0.0.1:"), (line, (folder / "stderr.txt").read_text())
        self.client = connect(int(line.rsplit(":", 1)[1]))

    def send(self, kind, **fields):
        self.client.send(kind, **fields)

    def next(self, timeout=30.0):
        event = self.client.next(timeout)
        assert event is not None, "the server closed the connection"
        return event

    def until(self, kind, timeout=120.0):
        return self.client.until(kind, timeout)

    def close(self):
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def hub_env(tmp_path: Path, **changes) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    return {**env, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", **changes}


def open_backend(transport: str, tmp_path: Path, env: dict):
    """A stdio or TCP backend, its ready event already read (returned beside it)."""
    if transport == "stdio":
        backend = Backend(tmp_path / "stderr.txt", env)
        ready = backend.next()
    else:
        backend = TcpBackend(tmp_path, env)
        ready = None  # connect() read it
    return backend, ready


def remote(transport: str, config: dict) -> dict:
    """A config as a client of `transport` may send it: over TCP the server chooses the run folder."""
    return {k: v for k, v in config.items() if k not in ("out", "run_dir")} if transport == "tcp" else config


def answered(backend, kind: str, timeout: float = 30.0) -> list[dict]:
    """Events up to the first of `kind`; a run's phase, log and progress events may come first."""
    events = backend.until(kind, timeout)
    assert all(e["type"] in ("phase", "log", "progress", kind) for e in events), events
    return events


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_model("tiny", tmp_path_factory.mktemp("sd") / "tiny")


@pytest.mark.parametrize("transport", ["stdio", "tcp"])
def test_every_model_failure_is_an_error_event_and_ping_is_answered_after_it(transport, tmp_path, tiny_model):
    models = tmp_path / "models"  # over TCP a local model is named relative to the server's --models root
    corrupt = shutil.copytree(tiny_model, models / "corrupt")
    weights = corrupt / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (models / "empty").mkdir()
    backend, _ = open_backend(transport, tmp_path, hub_env(tmp_path, HF_HUB_OFFLINE="1"))
    named = (lambda name: name) if transport == "tcp" else (lambda name: str(models / name))
    cases = [
        (named("nowhere"), *(("model_offline", "HF_HUB_OFFLINE") if transport == "tcp" else ("model_not_found", "no model folder at"))),
        (named("empty"), "model_layout", "no model_index.json"),
        ("acme/never-cached", "model_offline", "HF_HUB_OFFLINE"),
        (named("corrupt"), "model_corrupt", "cannot load the unet"),
        ("../../dreamtime-none", *(("config", "must be a hub id") if transport == "tcp" else ("model_not_found", "no model folder at"))),
        # A run that cannot fit in memory (1024² renders of 1024 samples: hundreds of GB) is refused before it starts.
        ({"model": named("corrupt"), "resolution": 1024, "samples_per_ray": 1024}, "out_of_memory", "it was not started"),
    ]
    try:
        for index, (model, code, words) in enumerate(cases):
            changes = model if isinstance(model, dict) else {"model": model}
            backend.send("generate", id=f"m{index}", config=remote(transport, {**TINY_SD, **changes, "out": str(tmp_path / "runs")}))
            event = answered(backend, "error")[-1]
            assert (event["id"], event["code"]) == (f"m{index}", code) and words in event["message"] and event["hint"], event
            backend.send("ping")
            assert answered(backend, "pong")
    finally:
        backend.close()
    assert backend.proc.returncode in (0, -signal.SIGKILL)  # it never exited on its own
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else []
    assert len(runs) <= 1  # only the corrupt model's run, which got as far as loading, has a folder


def test_a_hub_model_is_downloaded_with_its_bytes_reported_then_loaded_and_trained(tmp_path, tiny_model):
    hub = FakeHub()
    hub.add("acme/tiny-sd", tiny_model)
    backend, ready = open_backend("stdio", tmp_path, hub_env(tmp_path, HF_ENDPOINT=hub.url))
    try:
        backend.send("generate", id="d", config={**TINY_SD, "model": "acme/tiny-sd", "run_dir": str(tmp_path / "run")})
        events = backend.until("done", timeout=240)
        backend.send("generate", id="again", config={**TINY_SD, "model": "acme/tiny-sd", "run_dir": str(tmp_path / "run2")})
        hub.close()  # the second run needs no network: the model is cached
        again = backend.until("done", timeout=240)
    finally:
        backend.close()
        hub.close()
    phases = [e for e in events if e["type"] == "phase"]
    downloads = [e for e in phases if e["phase"] == "download"]
    total = sum(path.stat().st_size for path in tiny_model.rglob("*") if path.is_file())
    assert downloads and downloads[-1]["bytes_done"] == downloads[-1]["bytes_total"] == total
    assert downloads[-1]["message"].startswith("Downloading acme/tiny-sd ") and downloads[-1]["message"].endswith(" MB")
    assert [e["phase"] for e in phases][-1] == "load" and phases[-1]["message"] == "Loading model acme/tiny-sd"
    kinds = [e["type"] for e in events]
    assert kinds.index("phase") < kinds.index("progress") and kinds.count("progress") == 3 and kinds[-1] == "done"
    assert [e["phase"] for e in again if e["type"] == "phase"] == ["load"]


@pytest.mark.parametrize("transport", ["stdio", "tcp"])
def test_ping_and_cancel_are_answered_during_a_download_and_cancel_stops_it(transport, tmp_path, tiny_model):
    hub = FakeHub(delay=0.25)  # 1 MiB every 0.25 s: the 60 MiB weights would take 15 s
    files = {str(p.relative_to(tiny_model)): p.read_bytes() for p in tiny_model.rglob("*") if p.is_file()}
    hub.add("acme/slow", {**files, "unet/diffusion_pytorch_model.safetensors": b"\0" * (60 << 20)})
    backend, _ = open_backend(transport, tmp_path, hub_env(tmp_path, HF_ENDPOINT=hub.url))
    out = tmp_path / "runs"
    try:
        backend.send("generate", id="slow", config=remote(transport, {**TINY_SD, "model": "acme/slow", "out": str(out)}))
        weights = "GET /acme/slow/resolve/" + hub.sha("acme/slow") + "/unet/diffusion_pytorch_model.safetensors"
        while (event := backend.next())["type"] != "phase" or not event["bytes_done"] or weights not in hub.requests:
            assert event["type"] in ("phase", "log"), event  # until the big file is on its way
        assert event["phase"] == "download" and event["bytes_total"] > 60 << 20
        started = time.monotonic()
        backend.send("ping")
        answered(backend, "pong", timeout=5)
        ping_s = time.monotonic() - started
        backend.send("cancel", id="slow")
        end = answered(backend, "error", timeout=10)[-1]
        cancel_s = time.monotonic() - started - ping_s
        backend.send("ping")
        answered(backend, "pong", timeout=5)
        deadline = time.monotonic() + 10
        while ("aborted", "unet/diffusion_pytorch_model.safetensors") not in hub.log:  # the transfer was cut, not finished
            assert time.monotonic() < deadline, hub.log
            time.sleep(0.1)
        failed = []
        for index, model in enumerate(("acme/missing", "acme/no-pipeline")):  # downloads that fail: the Hub says no
            hub.add("acme/no-pipeline", {"README.md": b"not a pipeline"})
            backend.send("generate", id=f"f{index}", config=remote(transport, {**TINY_SD, "model": model, "out": str(out)}))
            failed.append(answered(backend, "error")[-1])
            backend.send("ping")
            answered(backend, "pong", timeout=5)
    finally:
        backend.close()
        hub.close()
    print(f"{transport}: pong {ping_s:.2f} s into the download, cancel answered in {cancel_s:.2f} s")
    assert (end["id"], end["code"]) == ("slow", "cancelled") and "cancelled while downloading acme/slow" in end["message"]
    assert [(e["id"], e["code"]) for e in failed] == [("f0", "model_not_found"), ("f1", "model_layout")]
    assert all(e["hint"] for e in failed) and "not a diffusers pipeline" in failed[1]["message"]
    assert not out.exists() or not list(out.iterdir())  # no run folder for a run that never trained


@pytest.mark.parametrize("transport", ["stdio", "tcp"])
def test_sigterm_mid_run_writes_the_checkpoint_and_mesh_before_exit(transport, tmp_path):
    backend, _ = open_backend(transport, tmp_path, None)
    run_dir = tmp_path / "run"
    try:
        backend.send("generate", id="term", config=remote(transport, {**TINY, "steps": 2000, "checkpoint_every": 0,
                                                                      "run_dir": str(run_dir)}))
        events = backend.until("progress")
        backend.proc.send_signal(signal.SIGTERM)
        events += backend.until("done", timeout=60)
        assert backend.proc.wait(30) == 0
    finally:
        backend.close()
    notice = [e for e in events if e["type"] == "log"]
    assert notice and notice[0]["level"] == "warning" and "offline demo prior" in notice[0]["message"]  # auto on a CPU: analytic
    outputs = events[-1]["outputs"]
    assert 0 < outputs["steps_done"] < 2000 and outputs["stopped_at"] == outputs["steps_done"]
    if transport == "tcp":  # the server named the folder, relative to its output root
        run_dir = tmp_path / "runs" / outputs["run_dir"]
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "mesh.glb").is_file()


def test_ready_carries_the_presets_and_sd_only_when_diffusers_imports(tmp_path):
    backend, ready = open_backend("stdio", tmp_path, None)
    backend.close()
    assert "sd" in ready["features"] and ready["presets"]["cpu"] == CPU_PRESET and ready["auto_guidance"]["cpu"] == "analytic"
    broken = tmp_path / "broken"
    (broken / "diffusers").mkdir(parents=True)
    (broken / "diffusers" / "__init__.py").write_text("raise ImportError('huggingface_hub is too new for this diffusers')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken), str(REPO), os.environ.get("PYTHONPATH", "")])}
    backend, ready = open_backend("stdio", tmp_path, env)
    try:
        assert "sd" not in ready["features"] and "analytic" in ready["features"]
        backend.send("generate", id="sd", config={**TINY_SD, "model": "acme/any", "out": str(tmp_path / "runs")})
        event = answered(backend, "error")[-1]
        backend.send("ping")
        answered(backend, "pong")
    finally:
        backend.close()
    assert event["code"] == "sd_unavailable" and "huggingface_hub is too new" in event["message"] and "Install" in event["hint"]


def test_out_of_memory_and_any_other_failure_while_preparing_are_error_events(monkeypatch, tmp_path):
    """In process (a run that raises as an allocation or a bug would): each is an error event; the server serves on."""
    import io
    import json

    from backend.serve import server as serve
    from backend.trainer import Trainer

    out = io.StringIO()
    served = serve.Server(out, "cpu")

    def events():
        return [json.loads(line) for line in out.getvalue().splitlines()]

    for index, failure in enumerate((MemoryError(), RuntimeError("a bug"))):
        def fail(self, resume=False, failure=failure):
            raise failure

        monkeypatch.setattr(Trainer, "run", fail)
        served.generate(f"r{index}", {**TINY, "run_dir": str(tmp_path / f"run{index}")})
        served.run.thread.join(60)
    monkeypatch.setattr(serve, "build_config", lambda values: (_ for _ in ()).throw(KeyError("unexpected")))
    served.generate("r2", dict(TINY))
    served.handle({"type": "ping"})
    errors = [(e["id"], e["code"]) for e in events() if e["type"] == "error"]
    assert errors == [("r0", "out_of_memory"), ("r1", "internal"), ("r2", "internal")] and events()[-1]["type"] == "pong"
    assert "a bug" in [e for e in events() if e.get("id") == "r1" and e["type"] == "error"][0]["message"]
    assert not any("Error" in e["message"] for e in events() if e["type"] == "error")  # no class names in what the artist reads
