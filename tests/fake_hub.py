"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests (no test reaches the real one).

Point huggingface_hub at it with HF_ENDPOINT=hub.url (and a fresh HF_HOME). It answers what
`HfApi.model_info`, `snapshot_download` and `hf_hub_download` ask — the repository info with file
sizes, the file tree, HEAD and GET (with Range) of each file — for the repositories added to it.
File bodies go out in CHUNK-byte pieces, `delay` seconds apart, so a test can watch a download
progress and stop it; `log` records each body sent in full ("sent", path) or cut off ("aborted", path).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

CHUNK = 1 << 20


class FakeHub:
    def __init__(self, delay: float = 0.0):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.delay = delay
        self.log: list[tuple[str, str]] = []
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._file(self, head=True)

            def do_GET(self):
                hub._get(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, bytes] | Path) -> None:
        """A repository: {path: bytes}, or every file under a folder."""
        if isinstance(files, Path):
            files = {str(p.relative_to(files)).replace("\\", "/"): p.read_bytes() for p in sorted(files.rglob("*")) if p.is_file()}
        self.repos[repo_id] = dict(files)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ requests
    @staticmethod
    def sha(repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()

    def _repo(self, path: str) -> tuple[str | None, str]:
        for repo_id in self.repos:
            for prefix in (f"/api/models/{repo_id}", f"/{repo_id}/resolve/"):
                if path == prefix or path.startswith(prefix + ("" if prefix.endswith("/") else "/")) or path.startswith(prefix + "?"):
                    return repo_id, path[len(prefix):]
        return None, path

    def _get(self, handler) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append(f"GET {path}")
        repo_id, rest = self._repo(path)
        if repo_id is None:
            return _send(handler, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
        if path.startswith("/api/models/"):
            files = self.repos[repo_id]
            if rest.startswith("/tree/"):
                entries = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                           for name, data in files.items()]
                return _send(handler, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"})
            info = {"id": repo_id, "modelId": repo_id, "sha": self.sha(repo_id), "private": False,
                    "siblings": [{"rfilename": name, "size": len(data)} for name, data in files.items()]}
            return _send(handler, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        self._file(handler, head=False)

    def _file(self, handler, head: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        repo_id, rest = self._repo(path)
        name = rest.partition("/")[2]
        data = self.repos.get(repo_id, {}).get(name)
        if data is None:
            return _send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, head=True)
        headers = {"X-Repo-Commit": self.sha(repo_id), "ETag": f'"{hashlib.sha1(data).hexdigest()}"', "Accept-Ranges": "bytes"}
        start = 0
        ranged = handler.headers.get("Range", "")
        if ranged.startswith("bytes=") and not head:
            start = int(ranged[6:].split("-")[0] or 0)
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        handler.send_response(206 if start else 200)
        for key, value in {**headers, "Content-Length": str(len(body) if not head else len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if head:
            return
        try:
            for offset in range(0, len(body), CHUNK):
                handler.wfile.write(body[offset:offset + CHUNK])
                handler.wfile.flush()
                if self.delay:
                    time.sleep(self.delay)
        except OSError:
            self.log.append(("aborted", name))
            return
        self.log.append(("sent", name))


def _send(handler, status: int, body: bytes, headers: dict[str, str], head: bool = False) -> None:
    handler.send_response(status)
    for key, value in {**headers, "Content-Length": str(len(body))}.items():
        handler.send_header(key, value)
    handler.end_headers()
    if not head:
        handler.wfile.write(body)
