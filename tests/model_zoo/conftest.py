"""A real HTTP server on 127.0.0.1 for the download tests: Range requests, cut connections, stalls, 404."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ENV = (
    "DISTILL_MODEL_ZOO_MIRROR",
    "DISTILL_MODEL_ZOO_MANIFEST",
    "DISTILL_OFFLINE",
    "DISTILL_DOWNLOAD_TIMEOUT",
)


class ZooServer(ThreadingHTTPServer):
    """Serves `files` by url path. `plan[path]` lists what its next requests do, one item per request:
    ("cut", n) closes after n body bytes, ("hang", n) sends n body bytes then nothing, ("stall", s)
    sends nothing for s seconds, ("slow", s) sleeps s between 32 KiB chunks, ("error", code) answers
    with that HTTP error, ("norange", 0) ignores a Range header and sends the whole file. Every request is logged as (path, Range header)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.plan: dict[str, list[tuple[str, float]]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.stopping = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def gets(self, path: str) -> list[str | None]:
        """Range headers of the requests for `path`, in order."""
        return [r for p, r in self.requests if p == path]

    def handle_error(self, request, client_address):  # a client killed mid-file is expected here
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv: ZooServer = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        queue = srv.plan.get(self.path)
        action, arg = queue.pop(0) if queue else (None, 0)
        if action == "error":
            self.send_error(int(arg))
            return
        if action == "stall":
            srv.stopping.wait(arg)
            self.close_connection = True
            return
        start = 0 if action == "norange" else self._range_start()
        if start >= len(data) and start:
            self.send_error(416)
            return
        self._send_head(len(data), start)
        self._send_body(data[start:], action, arg)

    def _range_start(self) -> int:
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        return int(m.group(1)) if m else 0

    def _send_head(self, total: int, start: int) -> None:
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.send_header("Content-Length", str(total - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def _send_body(self, body: bytes, action, arg) -> None:
        if action in ("cut", "hang"):
            self.wfile.write(body[: int(arg)])
            self.wfile.flush()
            if action == "hang":
                self.server.stopping.wait(30)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        step = 32 << 10
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            if action == "slow" and self.server.stopping.wait(arg):  # True: shutting down
                return


@pytest.fixture
def server():
    srv = ZooServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stopping.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def zoo_env(tmp_path, monkeypatch) -> Path:
    """A private cache and no model-zoo settings from the caller's environment."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("DISTILL_CACHE", str(cache))
    return cache


def payload(n: int = 1_000_000, seed: int = 0) -> bytes:
    """Deterministic bytes that no prefix shift maps onto themselves."""
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def file_entry(name: str, data: bytes, url: str, kind: str = "teacher", **extra) -> dict:
    entry = {
        "name": name,
        "kind": kind,
        "url": url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "command": "python tools/train_teacher.py",
    }
    entry.update({"arch": "distill-tiny-vit"} if kind == "teacher" else {"backend": "torchvision"})
    return {**entry, **extra}


def write_manifest(path: Path, entries: list[dict], **top) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": 1, **top, "models": entries}))
    return path


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def child_env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}
