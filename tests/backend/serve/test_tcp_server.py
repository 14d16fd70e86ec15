"""backend/serve/tcp_server.py through a real `python -m backend serve --listen` subprocess (issue 7).
What a remote client may do (remote_policy.py) is tested in test_remote_policy.py, with these helpers."""

import base64
import hashlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend import protocol
from backend.protocol import ProtocolError
from backend.serve.tcp_server import is_loopback, parse_listen, read_token

from test_server import REPO, TINY

TOKEN = "correct-horse-battery-staple-42"


class Client:
    """One TCP connection; its lines read on a thread, so every wait is bounded."""

    def __init__(self, port: int, token: str | None = TOKEN, first_bytes: bytes = b""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(None)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        payload = (protocol.encode(protocol.auth(token)).encode() if token is not None else b"") + first_bytes
        if payload:
            self.sock.sendall(payload)

    def _read(self):
        with self.sock.makefile("rb") as stream:
            for line in stream:
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, kind, **fields):
        self.sock.sendall(protocol.encode(protocol.message(kind, **fields)).encode())

    def next(self, timeout=30.0):
        return self.lines.get(timeout=timeout)

    def until(self, kind, timeout=120.0):
        deadline, seen = time.monotonic() + timeout, []
        while not seen or seen[-1]["type"] != kind:
            event = self.next(max(deadline - time.monotonic(), 0.01))
            assert event is not None, f"connection closed before {kind}: {seen[-3:]}"
            seen.append(event)
        return seen

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def start_server(folder: Path, *options: str) -> subprocess.Popen:
    """`serve --listen 127.0.0.1:0` with a token, run in `folder/cwd` (so its default output root is
    `folder/cwd/runs`); `.port`, `.log_path` and `.cwd` on the process."""
    (folder / "token").write_text(TOKEN + "\n")
    (folder / "token").chmod(0o600)
    cwd = folder / "cwd"
    cwd.mkdir()
    log = open(folder / "stderr.txt", "wb")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--listen", "127.0.0.1:0", "--token-file", str(folder / "token"),
                             *options], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log)
    log.close()
    line = proc.stdout.readline().decode()
    assert line.startswith("listening on 127.0.0.1:"), (line, (folder / "stderr.txt").read_text())
    proc.port, proc.log_path, proc.cwd = int(line.rsplit(":", 1)[1]), folder / "stderr.txt", cwd
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    code = proc.wait(30)
    assert code == 0, (code, proc.log_path.read_text()[-3000:])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = start_server(tmp_path_factory.mktemp("tcp"))
    yield proc
    stop_server(proc)


def connect(port: int, timeout: float = 30.0) -> Client:
    """An authenticated client past its ready event (retrying while an old one is still attached)."""
    deadline = time.monotonic() + timeout
    while True:
        client = Client(port)
        event = client.next()
        if event["type"] == "ready":
            return client
        client.close()
        assert event["code"] == "busy" and time.monotonic() < deadline, event
        time.sleep(0.2)


def test_wrong_or_missing_token_is_refused_before_any_request(server, tmp_path):
    run_dir = tmp_path / "never"
    generate = protocol.encode(protocol.message("generate", id="sneaky", config={**TINY, "run_dir": str(run_dir)})).encode()
    for token, first_bytes in (("wrong-token-wrong-token", generate), (None, generate), ("", generate)):
        intruder = Client(server.port, token=token, first_bytes=first_bytes)  # auth and generate in one packet
        event = intruder.next()
        assert (event["type"], event["code"]) == ("error", "auth") and "token" in event["message"], event
        assert intruder.next() is None  # closed by the server
        intruder.close()
    pasted = Client(server.port, token=f" {TOKEN}\n")  # the token with its file's newline: accepted
    assert pasted.next()["type"] == "ready"
    pasted.close()
    client = connect(server.port)
    client.send("attach", id="sneaky")  # the server never heard of that run
    assert client.next()["code"] == "unknown_run"
    client.close()
    time.sleep(0.5)
    mentions = [line for line in server.log_path.read_text().splitlines() if "sneaky" in line]
    assert not run_dir.exists() and mentions and all("error unknown_run" in line for line in mentions), mentions  # only the attach


def test_generation_over_tcp_delivers_previews_and_mesh_bytes(server):
    client = connect(server.port)
    client.send("generate", id="t1", config=TINY)
    events = client.until("done")
    client.close()
    root = server.cwd / "runs"  # no --out: runs/ in the server's working directory, said at start-up
    assert f"run folders go under {root}" in server.log_path.read_text()
    run_dir = root / events[-1]["outputs"]["run_dir"]  # paths in events are relative to the output root
    assert run_dir.parent == root and (run_dir / "config.json").is_file()
    previews = [e for e in events if e["type"] == "preview"]
    assert len(previews) >= 4
    for event in previews:  # each preview's bytes as written then (the file may since be the same)
        data = protocol.file_data(event)
        assert data.startswith(b"\x89PNG") and data == (root / event["path"]).read_bytes()
    (mesh,) = [e for e in events if e["type"] == "mesh"]
    on_disk = (run_dir / "mesh.glb").read_bytes()
    assert mesh["sha256"] == hashlib.sha256(on_disk).hexdigest() and protocol.file_data(mesh) == on_disk
    assert events[-1]["outputs"]["steps_done"] == TINY["steps"]


def test_busy_second_client_and_reattach_after_a_drop(server):
    first = connect(server.port)
    steps = 120
    first.send("generate", id="long", config={**TINY, "steps": steps, "preview_every": 10})
    assert first.until("preview")[-1]["step"] == 10
    second = Client(server.port)
    event = second.next()
    assert (event["code"], event["id"]) == ("busy", None) and "Another client" in event["message"]
    assert second.next() is None
    second.close()
    first.close()  # dropped without a word: the run must go on
    again = connect(server.port)
    again.send("attach", id="long")
    events = again.until("done")
    assert events[-1]["outputs"]["steps_done"] == steps  # not cancelled by the drop
    (mesh,) = [e for e in events if e["type"] == "mesh"]
    again.send("shutdown")  # over TCP: ends this connection only
    assert again.next(10) is None
    again.close()
    late = connect(server.port)  # the server still serves; the finished run replays its end
    late.send("attach", id="long")
    replay = [late.next() for _ in range(5)]
    assert [e["type"] for e in replay] == ["log", "progress", "preview", "mesh", "done"]
    run_dir = server.cwd / "runs" / replay[4]["outputs"]["run_dir"]
    assert replay[0]["run_dir"] == replay[4]["outputs"]["run_dir"]  # the run's folder from its first event, relative to the root
    assert protocol.file_data(replay[3]) == protocol.file_data(mesh) == (run_dir / "mesh.glb").read_bytes()
    late.close()


def test_file_data_refuses_corrupted_bytes(tmp_path):
    path = tmp_path / "p.png"
    path.write_bytes(b"\x89PNG fake")
    event = protocol.with_file_data(protocol.preview("r", 1, str(path), 1, 1))
    assert protocol.file_data(event) == b"\x89PNG fake"
    with pytest.raises(ProtocolError, match="sha256"):
        protocol.file_data({**event, "data": base64.b64encode(b"\x89PNG fakf").decode()})
    missing = protocol.with_file_data(protocol.mesh("r", str(tmp_path / "gone.glb"), 0, 0))
    with pytest.raises(ProtocolError, match="unreadable"):
        protocol.file_data(missing)


def test_listen_and_token_checks(tmp_path):
    assert parse_listen("127.0.0.1:7841") == ("127.0.0.1", 7841) and parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("7841", "host:", "host:99999", ":7841"):
        with pytest.raises(ValueError, match="--listen"):
            parse_listen(bad)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    made = read_token(tmp_path / "new" / "token")  # a missing file gets a fresh token, owner-only
    assert len(made) >= 32 and (tmp_path / "new" / "token").stat().st_mode & 0o077 == 0
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ValueError, match="at least 16"):
        read_token(tmp_path / "short")


def test_non_loopback_without_a_token_is_refused():
    result = subprocess.run([sys.executable, "-m", "backend", "serve", "--listen", "0.0.0.0:0"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "needs --token-file" in result.stderr and result.stdout == ""
