"""Requests from a byte stream: one JSON object per line (docs/ARCHITECTURE.md §3).

Shared by the stdio server (server.py) and the TCP server (tcp_server.py): `read_lines` turns
what a `read(n)` callable yields into requests or ProtocolErrors, bounded in length, and returns at
end of input; the servers then queue `EOF`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .. import protocol
from ..protocol import ProtocolError

log = logging.getLogger("dreamtime.server")

MAX_LINE_BYTES = 1 << 20  # a request longer than this is refused (configs are a few KB)
MAX_ID_CHARS = 200
EOF = object()  # queued after the last request of a stream


def parse_request(line: str | bytes) -> dict[str, Any]:
    """One stdin line -> a request dict; ProtocolError saying what is wrong with it."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line)} bytes; at most {MAX_LINE_BYTES}")
    msg = protocol.decode(line, protocol.REQUESTS)
    if msg.get("version", protocol.PROTOCOL_VERSION) != protocol.PROTOCOL_VERSION:  # optional on requests
        raise ProtocolError(f"protocol version {msg['version']!r}; this backend speaks {protocol.PROTOCOL_VERSION}")
    if "id" in protocol.REQUESTS[msg["type"]]:
        run_id = msg["id"]
        if not isinstance(run_id, str) or not run_id or len(run_id) > MAX_ID_CHARS:
            raise ProtocolError(f"{msg['type']}: id must be a non-empty string of at most {MAX_ID_CHARS} characters")
    if msg["type"] == "generate" and not isinstance(msg["config"], dict):
        raise ProtocolError("generate: config must be a JSON object")
    return msg


def read_lines(read: Callable[[int], bytes], put: Callable[[Any], None]) -> None:
    """Each line that `read(n)` yields -> put(request) or put(ProtocolError); returns at EOF."""
    pending, skipping = b"", False
    try:
        while chunk := read(1 << 16):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if skipping:  # the tail of an oversized line
                    skipping = False
                elif line.strip():
                    _put_request(line, put)
            if len(pending) > MAX_LINE_BYTES and not skipping:
                put(ProtocolError(f"line longer than {MAX_LINE_BYTES} bytes"))
                pending, skipping = b"", True
            elif skipping:
                pending = b""
        if pending.strip() and not skipping:
            _put_request(pending, put)
    except OSError as exc:
        log.warning("input unreadable: %s", exc)


def _put_request(line: bytes, put: Callable[[Any], None]) -> None:
    try:
        put(parse_request(line))
    except ProtocolError as exc:
        put(exc)
