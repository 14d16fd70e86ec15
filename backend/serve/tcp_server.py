"""`python -m backend serve --listen HOST:PORT`: the same protocol and Server over TCP (docs/ARCHITECTURE.md §9).
About 340 lines: a connection's whole life (listen, authenticate, attach, idle, send) reads best in one file.

A connection's first line must be `auth {token}` (protocol.auth); the token is compared in
constant time and nothing else is read from the connection before it passes: a wrong or missing
token gets an `error` (code "auth") and the connection is closed. One client at a time: another
that authenticates meanwhile gets `busy` and is closed. The attached client's requests go to the
one Server of server.py; its events leave on a writer thread (with the bytes of previews and
meshes in them: protocol.with_file_data), so a slow or vanished client never blocks the run. A client that
disconnects leaves the run going: connect again and send `attach {id}` for its latest progress,
preview and mesh, and its end. `shutdown` from a client closes only its own connection;
SIGINT/SIGTERM stop the server (the run is cancelled and writes its mesh first).

What a client may ask and what it is shown is remote_policy.py's: run folders only under the
output root (`--out`), targets as data, models from the hub or the operator's `--models` roots,
no server path in any event. A client that sends nothing for `--idle-timeout` seconds gets an
`error` (code "idle") and is closed (the run goes on); the add-on pings to stay attached.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import queue
import selectors
import signal
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

from .. import protocol
from .capabilities import check_sd_meanwhile
from .lines import EOF, read_lines
from .remote_policy import RemotePolicy
from .server import Server, event_line

log = logging.getLogger("dreamtime.server")

AUTH_SECONDS = 10.0  # a connection must authenticate within this
MAX_AUTH_BYTES = 4096  # the auth line is at most this long
MAX_HANDSHAKES = 16  # connections authenticating at once; more are closed at once
MAX_QUEUED_EVENTS = 20_000  # events waiting for a client that does not read: it is dropped
MIN_TOKEN_CHARS = 16
KEEPALIVE_SECONDS = 20  # a silently vanished peer is noticed within about 2x this
IDLE_SECONDS = 600.0  # an attached client that sends nothing for this long is closed (serve --idle-timeout)
FLUSH_SECONDS = 5.0  # a last event (idle, a stopped run's done) waits this long to go out before the connection closes


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen: expected HOST:PORT with a port from 0 to 65535, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ValueError(f"--listen: no host in {text!r} (use 127.0.0.1:PORT, or 0.0.0.0:PORT with a token)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def read_token(path: str | os.PathLike) -> str:
    """The token in `path`; a missing file is made with a fresh token, readable by its owner only."""
    import secrets

    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        log.info("wrote a new token to %s; give it to the add-on (Preferences > Remote > Token)", path)
    token = path.read_text(encoding="utf-8").strip()
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or any(c.isspace() for c in token):
        raise ValueError(f"--token-file {path}: the token must be one word of at least {MIN_TOKEN_CHARS} ASCII characters")
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by other users; chmod 600 it", path)
    return token


class Connection:
    """The attached client's side of the Server's output: `write(event)` queues, a thread sends
    each as `outgoing(event)` makes it (remote_policy: file bytes in, server paths out)."""

    def __init__(self, sock: socket.socket, address: str, outgoing: Any = None):
        self.sock, self.address, self.since = sock, address, time.time()
        self.outgoing = outgoing or protocol.with_file_data
        self._events: queue.Queue = queue.Queue()
        self.closed = False
        threading.Thread(target=self._send_loop, name=f"send-{address}", daemon=True).start()

    def write(self, event: dict[str, Any]) -> None:
        if self.closed:
            raise OSError("connection closed")
        if self._events.qsize() > MAX_QUEUED_EVENTS:
            log.warning("client %s reads nothing; dropping it", self.address)
            self.close()
            raise OSError("client not reading")
        self._events.put(event)

    def _send_loop(self) -> None:
        while (event := self._events.get()) is not None:
            if isinstance(event, threading.Event):  # flush(): everything queued before it is sent
                event.set()
                continue
            try:
                self.sock.sendall(event_line(self.outgoing(event)).encode("utf-8"))
            except OSError:
                self.close()
                return

    def flush(self, timeout: float = FLUSH_SECONDS) -> None:
        """Wait (at most `timeout`) until the events queued so far are sent."""
        sent = threading.Event()
        self._events.put(sent)
        sent.wait(timeout)

    def close(self) -> None:
        """Hang up: the reader sees EOF, the writer stops. Idempotent, from any thread."""
        if not self.closed:
            self.closed = True
            self._events.put(None)
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TcpServer:
    """Accepts connections, authenticates them, and feeds one Server from the attached client."""

    def __init__(self, server: Server, listener: socket.socket, token: str | None, idle_seconds: float = IDLE_SECONDS):
        self.server, self.listener, self.token, self.idle_seconds = server, listener, token, idle_seconds
        self.requests: queue.Queue = queue.Queue()
        self.client: Connection | None = None
        self._lock = threading.Lock()
        self._handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    def serve(self) -> int:
        """Serve until stop(); the run, if any, is cancelled and finishes writing first."""
        threading.Thread(target=self._accept_loop, name="tcp-accept", daemon=True).start()
        try:
            return self.server.dispatch(self.requests)
        finally:
            self.listener.close()
            with self._lock:  # read once: the client's own thread may detach it (set None) meanwhile
                client = self.client
            if client is not None and not client.closed:
                client.flush()  # the stopped run's last events (mesh, done) reach the client
                client.close()

    def stop(self) -> None:
        self.requests.put(EOF)

    # ------------------------------------------------------------------ connections
    def _accept_loop(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except OSError:
                return  # the listener was closed
            if not self._handshakes.acquire(blocking=False):
                sock.close()
                continue
            threading.Thread(target=self._serve_connection, args=(sock, f"{peer[0]}:{peer[1]}"), daemon=True).start()

    def _serve_connection(self, sock: socket.socket, address: str) -> None:
        try:
            try:
                client = self._authenticate(sock, address)
            finally:
                self._handshakes.release()
            if client is not None:
                self._attached(client)
        finally:
            sock.close()

    def _authenticate(self, sock: socket.socket, address: str) -> Connection | None:
        """Read the auth line only; the client's Connection if it passes and no other is attached."""
        sock.settimeout(AUTH_SECONDS)
        try:
            line = _read_one_line(sock)
        except (OSError, ValueError) as exc:
            log.info("connection from %s closed before authenticating (%s)", address, exc)
            return None
        if not self._token_ok(line):
            log.warning("connection from %s: authentication failed", address)
            _refuse(sock, "auth", "Authentication failed: wrong or missing token.",
                    "Copy the token from the backend's --token-file into the add-on's preferences (Token).")
            return None
        with self._lock:
            current = self.client
            if current is None:
                policy = self.server.policy
                self.client = Connection(sock, address, policy.outgoing if policy is not None else None)
                return self.client
        since = time.strftime("%H:%M:%S", time.localtime(current.since))
        _refuse(sock, "busy", f"Another client ({current.address}, since {since}) is connected to this backend.",
                f"One client at a time. If that was you and the connection dropped, try again in {2 * KEEPALIVE_SECONDS} s.")
        return None

    def _token_ok(self, line: bytes) -> bool:
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            return False
        if not isinstance(msg, dict) or msg.get("type") != protocol.AUTH or not isinstance(msg.get("token"), str):
            return False
        if self.token is None:
            return True
        given = msg["token"].strip()  # a token pasted with its file's newline (or spaces) is still the token
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def _attached(self, client: Connection) -> None:
        """Feed the client's requests to the Server until it hangs up; the run is left going."""
        sock, address = client.sock, client.address
        sock.settimeout(None)  # sends take as long as they take; only the reads wait at most idle_seconds
        _keepalive(sock)
        log.info("client %s attached", address)
        self.server.attach(client)

        def put(item: Any) -> None:
            if isinstance(item, dict) and item["type"] == "shutdown":
                client.close()  # over TCP, shutdown ends this connection, not the server
            else:
                self.requests.put(item)

        incoming = selectors.DefaultSelector()
        incoming.register(sock, selectors.EVENT_READ)

        def receive(size: int) -> bytes:
            if incoming.select(self.idle_seconds):
                return sock.recv(size)
            log.info("client %s sent nothing for %g s; closing its connection", address, self.idle_seconds)
            try:
                client.write(protocol.error(None, "idle", f"no request for {self.idle_seconds:g} s: this backend closes idle "
                                            "connections (serve --idle-timeout)",
                                            "The run goes on there: Reconnect picks it up. The add-on's Keep Alive preference "
                                            "pings the backend to stay connected."))
                client.flush()
            except OSError:
                pass  # it went meanwhile
            return b""

        try:
            read_lines(receive, put)
        finally:
            incoming.close()
            self.server.detach(client)
            client.close()
            with self._lock:
                if self.client is client:
                    self.client = None
            log.info("client %s detached; the run (if any) goes on", address)


def _read_one_line(sock: socket.socket) -> bytes:
    """Bytes up to the first newline, read one at a time so nothing after it is consumed."""
    line = bytearray()
    while len(line) <= MAX_AUTH_BYTES:
        byte = sock.recv(1)
        if not byte:
            raise ValueError("connection closed")
        if byte == b"\n":
            return bytes(line)
        line += byte
    raise ValueError(f"first line longer than {MAX_AUTH_BYTES} bytes")


def _refuse(sock: socket.socket, code: str, text: str, hint: str) -> None:
    try:
        sock.sendall(event_line(protocol.error(None, code, text, hint)).encode("utf-8"))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_SECONDS), ("TCP_KEEPINTVL", KEEPALIVE_SECONDS // 4), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, name):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
            except OSError:
                pass


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=8)


def main(listen_at: str, token_file: str | None, out: str | None = None, models: list[str] = (), allow_pickle_weights: bool = False,
         idle_timeout: float = IDLE_SECONDS, max_file_mib: float = protocol.MAX_FILE_BYTES / 2**20) -> int:
    """The `serve --listen` command: prints `listening on HOST:PORT` on stdout, then serves."""
    host, port = parse_listen(listen_at)
    if not idle_timeout > 0:
        raise ValueError(f"--idle-timeout: must be > 0 seconds, got {idle_timeout:g}")
    policy = RemotePolicy.from_options(out, list(models), allow_pickle_weights, max_file_mib)
    token = read_token(token_file) if token_file else None
    if token is None and not is_loopback(host):
        raise ValueError(f"--listen {listen_at}: a non-loopback address needs --token-file; anyone who can reach "
                         "the port could run generations as you (or keep 127.0.0.1 and use an SSH tunnel)")
    if token is None:
        log.warning("no --token-file: any local user can connect to %s:%d", host, port)
    try:
        listener = listen(host, port)
    except OSError as exc:
        raise ValueError(f"--listen {listen_at}: cannot listen there ({exc.strerror or exc})") from None
    from ..run_setup import resolve_device  # torch: only once the arguments are known to be good

    tcp = TcpServer(Server(None, resolve_device("auto").type, policy), listener, token, idle_timeout)
    bound_host, bound_port = tcp.address
    print(f"listening on {bound_host}:{bound_port}", flush=True)
    os.dup2(2, 1)  # from here on stray prints go to stderr, as with stdio serve
    check_sd_meanwhile()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: tcp.stop())
    log.info("DreamTime backend serving protocol %d on %s:%d (%s)", protocol.PROTOCOL_VERSION, bound_host, bound_port,
             "token required" if token else "no token")
    log.info("run folders go under %s (--out); models: hub ids%s; weights: %s; idle clients closed after %g s; files up to %g MiB",
             policy.out_root, "".join(f", folders under {root}" for root in policy.model_roots),
             "safetensors or pickles" if allow_pickle_weights else "safetensors only", idle_timeout, policy.max_file_bytes / 2**20)
    return tcp.serve()

