"""Two processes fetching one name; a download process killed while it holds the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from distill.model_zoo import cache_path, get_checkpoint

from .conftest import child_env, file_entry, payload, sha, write_manifest

DATA = payload(1_500_000, seed=3)
PATH = "/zoo/tiny.pt"
CHILD = (
    "import sys; from distill.model_zoo import get_checkpoint; "
    "print(get_checkpoint(sys.argv[1], manifests=[sys.argv[2]], progress=False))"
)


def start(zoo) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, "tiny", str(zoo)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def serve(server, tmp_path, delay: float):
    server.files[PATH] = DATA
    server.plan[PATH] = [("slow", delay)]  # the first request takes ~1.5 s
    return write_manifest(tmp_path / "zoo.json", [file_entry("tiny", DATA, server.url(PATH))])


def test_two_processes_one_download(server, tmp_path):
    zoo = serve(server, tmp_path, 0.03)
    procs = [start(zoo), start(zoo)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert paths == {str(cache_path("tiny", [zoo]))}
    assert sha(paths.pop()) == file_entry("tiny", DATA, "")["sha256"]
    assert server.gets(PATH) == [None]  # the second process waited for the lock, then found the file
    assert sorted(p.name for p in cache_path("tiny", [zoo]).parent.iterdir()) == ["tiny.pt", "tiny.pt.lock"]


def test_killed_downloader_leaves_no_stale_lock(server, tmp_path):
    zoo = serve(server, tmp_path, 0.05)
    partial = cache_path("tiny", [zoo]).with_name("tiny.pt.partial")
    proc = start(zoo)
    deadline = time.monotonic() + 30
    while not (partial.exists() and partial.stat().st_size > 0):
        assert time.monotonic() < deadline and proc.poll() is None, "the child never started downloading"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    path = get_checkpoint("tiny", manifests=[zoo], progress=False)
    assert time.monotonic() - t0 < 5
    assert path.read_bytes() == DATA
    first, resumed = server.gets(PATH)
    assert first is None and resumed.startswith("bytes=") and resumed != "bytes=0-"
