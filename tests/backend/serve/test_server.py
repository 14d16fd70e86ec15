"""backend/serve/server.py (and lines.py) through a real `python -m backend serve` subprocess, as the add-on drives it."""

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend import protocol
from backend.protocol import ProtocolError
from backend.serve.lines import MAX_LINE_BYTES, parse_request

REPO = Path(__file__).resolve().parents[3]
TINY = dict(
    prompt="a red torus", guidance="analytic", device="cpu", steps=20, resolution=16, preview_resolution=16,
    samples_per_ray=16, encoding="dense", dense_resolution=24, mlp_hidden=0, lr=0.05, mesh_resolution=32, texture_size=256,
    preview_every=5, checkpoint_every=10,
    blob_density=5.0, lambda_tv=0.0, mesh_smooth=0.0,  # pinned over the CPU preset: a mesh exists from step 1
)


class Backend:
    """A serve subprocess with its stdout read on a thread, so every wait is bounded."""

    def __init__(self, log_path: Path, env: dict | None = None):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env
        )
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))  # every stdout line must be JSON
        self.events.put(None)

    def send_raw(self, line: bytes):
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def send(self, kind, **fields):
        self.send_raw(protocol.encode(protocol.message(kind, **fields)).encode())

    def next(self, timeout=30.0):
        event = self.events.get(timeout=timeout)
        assert event is not None, "backend closed stdout"
        protocol.decode(json.dumps(event), protocol.EVENTS)  # a well-formed event
        return event

    def until(self, kind, timeout=60.0):
        deadline, seen = time.monotonic() + timeout, []
        while not seen or seen[-1]["type"] != kind:
            seen.append(self.next(max(deadline - time.monotonic(), 0.01)))
        return seen

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    server = Backend(tmp_path_factory.mktemp("serve") / "stderr.txt")
    assert server.next()["type"] == "ready"
    yield server
    server.close()


@pytest.fixture
def fresh(tmp_path):
    server = Backend(tmp_path / "stderr.txt")
    yield server
    server.close()


def test_ready_first_then_ping_pong(fresh):
    ready = fresh.next()
    assert ready["type"] == "ready" and ready["version"] == protocol.PROTOCOL_VERSION
    assert ready["device"] in ("cpu", "cuda") and "analytic" in ready["features"]
    fresh.send("ping")
    assert fresh.next()["type"] == "pong"


@pytest.mark.parametrize("line, words", [
    (b"this is not json\n", "not JSON"),
    (b"[1, 2]\n", "not a message"),
    (b'{"type": "launch"}\n', "unknown message type 'launch'"),
    (b'{"type": "cancel"}\n', "missing field(s) id"),
    (b'{"type": "generate", "id": "x", "config": 5}\n', "config must be a JSON object"),
    (b'{"type": "cancel", "id": 7}\n', "id must be a non-empty string"),
    (b"\xff\xfe\n", "not UTF-8"),
])
def test_bad_lines_are_reported_never_fatal(backend, line, words):
    backend.send_raw(line)
    event = backend.next()
    assert event["type"] == "error" and event["code"] == "protocol" and words in event["message"]
    backend.send("ping")
    assert backend.next()["type"] == "pong"


def test_oversized_line_is_skipped_whole(backend):
    backend.send_raw(b'{"type": "ping", "pad": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n')
    assert str(MAX_LINE_BYTES) in backend.next()["message"]
    backend.send("ping")
    assert backend.next()["type"] == "pong"


def test_bad_config_names_the_field(backend, tmp_path):
    backend.send("generate", id="bad", config={**TINY, "m1": 300, "m2": 600, "out": str(tmp_path)})
    event = backend.next()
    assert (event["type"], event["code"], event["id"], event["field"]) == ("error", "config", "bad", "m2")
    assert "m2" in event["message"] and not list(tmp_path.iterdir())  # no run folder for a refused config
    assert event["hint"] == "Change Schedule › m2 and generate again."  # where the artist changes it
    backend.send("generate", id="cuda", config={**TINY, "device": "cuda", "out": str(tmp_path)})  # this machine has none
    event = backend.next()
    assert event["field"] == "device" and event["message"].endswith("use Preferences › Device: CPU")
    assert event["hint"] == "Change Preferences › Device and generate again."  # a field that lives in the preferences


def test_unknown_field_and_unreadable_prompt(backend, tmp_path):
    backend.send("generate", id="u", config={**TINY, "colour": "red", "out": str(tmp_path)})
    assert backend.next()["field"] == "colour"
    backend.send("generate", id="p", config={**TINY, "prompt": "a purple unicorn", "out": str(tmp_path)})
    event = backend.next()
    assert event["code"] == "prompt" and "unicorn" in event["message"] and "Guidance: Stable Diffusion" in event["hint"]
    assert "--" not in event["message"] + event["hint"]  # panel words, not flags


def test_tiny_generate_emits_progress_preview_mesh_done(backend, tmp_path):
    run_dir = tmp_path / "run"
    backend.send("generate", id="r1", config={**TINY, "run_dir": str(run_dir)})
    backend.send("generate", id="r2", config=TINY)  # while r1 runs
    events = backend.until("done", timeout=120)
    busy = [e for e in events if e["type"] == "error"]
    assert [(e["id"], e["code"]) for e in busy] == [("r2", "busy")]
    kinds = [e["type"] for e in events if e["type"] != "error"]
    assert kinds.count("progress") == 20 and kinds[-1] == "done"
    assert all(e["id"] == "r1" for e in events if e["type"] != "error")
    previews = [e for e in events if e["type"] == "preview"]
    assert [p["step"] for p in previews][:4] == [5, 10, 15, 20] and all(Path(p["path"]).is_file() for p in previews)
    (mesh,) = [e for e in events if e["type"] == "mesh"]
    assert Path(mesh["path"]).is_file() and mesh["n_faces"] > 50
    assert Path(events[-1]["outputs"]["run_dir"]) == run_dir and (run_dir / "checkpoint.pt").is_file()
    backend.send("extract", id="r1")  # the run is over: nothing to extract from
    assert backend.next()["code"] == "no_run"


def test_cancel_mid_run_still_writes_a_mesh(fresh, tmp_path):
    fresh.next()
    fresh.send("generate", id="c", config={**TINY, "steps": 2000, "run_dir": str(tmp_path / "run")})
    fresh.until("progress")
    fresh.send("cancel", id="c")
    events = fresh.until("done", timeout=60)
    done = events[-1]
    assert done["outputs"]["steps_done"] < 2000
    assert (done["outcome"], done["step"], done["stopped_by"]) == ("stopped", done["outputs"]["steps_done"], "client")
    assert any(e["type"] == "mesh" for e in events) and (tmp_path / "run" / "mesh.glb").is_file()


def test_stdin_eof_cancels_and_exits(fresh, tmp_path):
    fresh.next()
    fresh.send("generate", id="e", config={**TINY, "steps": 2000, "run_dir": str(tmp_path / "run")})
    fresh.until("progress")
    fresh.proc.stdin.close()
    done = fresh.until("done", timeout=20)[-1]  # the backend stopped the run itself: it says so, with the step
    assert fresh.proc.wait(timeout=20) == 0
    assert (done["outcome"], done["stopped_by"]) == ("stopped", "backend") and 0 < done["step"] < 2000
    assert (tmp_path / "run" / "mesh.glb").is_file()


def test_a_run_without_a_surface_is_done_without_a_mesh_and_its_hint_in_panel_words(backend, tmp_path):
    config = {**TINY, "steps": 4, "mesh_threshold": 1e6, "sdf_after": 1.0, "run_dir": str(tmp_path / "run")}
    backend.send("generate", id="nm", config=config)
    events = backend.until("done", timeout=120)
    (warning,) = [e for e in events if e["type"] == "log" and e.get("code") == "no_mesh"]
    assert warning["level"] == "warning" and warning["message"].startswith("No mesh: no surface above density threshold 1e+06")
    assert "Steps" in warning["hint"] and 'Extra Config {"mesh_threshold"' in warning["hint"] and "--" not in warning["hint"]
    done = events[-1]
    assert (done["outcome"], done["step"], done["outputs"]["mesh"]) == ("no_mesh", 4, None)
    assert not [e for e in events if e["type"] == "mesh"] and not (tmp_path / "run" / "mesh.glb").exists()


def test_shutdown_exits_zero(fresh):
    fresh.next()
    fresh.send("shutdown")
    assert fresh.proc.wait(timeout=10) == 0


def test_extract_uses_the_trainer_hook_when_there_is_one():
    """extract -> trainer.request_extract() between steps; without that hook, an 'unsupported' error."""
    import io

    from backend.serve.server import ServedRun, Server

    class Hooked:
        requests = 0

        def request_extract(self):
            self.requests += 1

    out = io.StringIO()
    server = Server(out, "cpu")
    alive = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    alive.start()
    server.run = ServedRun("r", Hooked(), threading.Event(), alive)
    server.handle({"type": "extract", "id": "r"})
    assert server.run.trainer.requests == 1 and out.getvalue() == ""
    server.run = ServedRun("r", object(), threading.Event(), alive)
    server.handle({"type": "extract", "id": "r"})
    server.handle({"type": "extract", "id": "other"})
    codes = [json.loads(line)["code"] for line in out.getvalue().splitlines()]
    assert codes == ["unsupported", "no_run"]


# ---------------------------------------------------------------------- the parser, fuzzed
def test_parse_request_accepts_every_request_kind():
    for kind, fields in protocol.REQUESTS.items():
        values = {"id": "x", "config": {}}
        msg = parse_request(protocol.encode(protocol.message(kind, **{f: values[f] for f in fields})))
        assert msg["type"] == kind
    with pytest.raises(ProtocolError, match="at most"):
        parse_request(b" " * (MAX_LINE_BYTES + 1))


try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the dev extras
    given = None

if given is not None:
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )
    requests = st.fixed_dictionaries(
        {"type": st.sampled_from([*protocol.REQUESTS, *protocol.EVENTS, "x"])},
        optional={"id": json_values, "config": json_values},
    )

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200) | requests.map(lambda m: json.dumps(m).encode()))
    def test_parse_request_fuzz_returns_a_request_or_protocol_error(line):
        try:
            msg = parse_request(line)
        except ProtocolError:
            return
        assert msg["type"] in protocol.REQUESTS
        assert all(name in msg for name in protocol.REQUESTS[msg["type"]])
        if "id" in protocol.REQUESTS[msg["type"]]:
            assert isinstance(msg["id"], str) and msg["id"]
