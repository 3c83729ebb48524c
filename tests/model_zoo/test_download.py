"""Downloads against a real HTTP server: good file, resume, corrupt file, 404, timeout, mirror, offline."""

from __future__ import annotations

import time

import pytest

from distill.model_zoo import DownloadError, cache_path, get_checkpoint
from distill.model_zoo.download import fetch, file_lock

from .conftest import file_entry, payload, write_manifest

DATA = payload()
PATH = "/zoo/teachers/tiny.pt"


@pytest.fixture
def zoo(server, tmp_path):
    """A manifest with one downloadable teacher `tiny` served at PATH."""
    server.files[PATH] = DATA
    return write_manifest(tmp_path / "zoo.json", [file_entry("tiny", DATA, server.url(PATH))])


def get(zoo, **kwargs):
    return get_checkpoint("tiny", manifests=[zoo], progress=False, **kwargs)


def test_good_download_lands_in_cache(server, zoo, zoo_env):
    path = get(zoo)
    assert path == zoo_env / "model_zoo" / "tiny" / "tiny.pt"
    assert path.read_bytes() == DATA
    assert not path.with_name("tiny.pt.partial").exists()
    assert get(zoo) == path and len(server.gets(PATH)) == 1  # second call: cache hit, no request


def test_cut_connection_resumes_with_range(server, zoo):
    server.plan[PATH] = [("cut", 300_000)]
    path = get(zoo, retries=3)
    assert server.gets(PATH) == [None, "bytes=300000-"]
    assert path.read_bytes() == DATA


def test_partial_file_is_resumed_by_the_next_call(server, zoo):
    server.plan[PATH] = [("cut", 250_000)]
    with pytest.raises(
        DownloadError, match=r"connection closed after 250000 of 1000000 bytes.*rerun resumes"
    ):
        get(zoo, retries=1)
    partial = cache_path("tiny", [zoo]).with_name("tiny.pt.partial")
    assert partial.stat().st_size == 250_000
    assert get(zoo).read_bytes() == DATA
    assert server.gets(PATH) == [None, "bytes=250000-"]


def test_server_ignoring_range_restarts_the_file(server, zoo):
    server.plan[PATH] = [("cut", 100_000), ("norange", 0)]
    assert get(zoo, retries=2).read_bytes() == DATA
    assert server.gets(PATH) == [None, "bytes=100000-"]


def test_server_error_is_retried(server, zoo):
    server.plan[PATH] = [("error", 503)]
    assert get(zoo, retries=2).read_bytes() == DATA
    assert len(server.gets(PATH)) == 2


def test_progress_bar(server, zoo, capsys, monkeypatch):
    import distill.utils.progress

    get_checkpoint("tiny", manifests=[zoo], progress=True)
    assert "tiny" not in capsys.readouterr().err  # redirected: no bar of \r-joined refreshes
    cache_path("tiny", [zoo]).unlink()
    monkeypatch.setattr(distill.utils.progress, "on_terminal", lambda progress=True: bool(progress))
    get_checkpoint("tiny", manifests=[zoo], progress=True)
    assert "tiny" in capsys.readouterr().err


def test_hash_mismatch_deletes_the_file(server, zoo):
    server.files[PATH] = payload(seed=1)  # same size, other bytes
    with pytest.raises(DownloadError, match="is corrupt: sha256 .* the manifest says sha256 .* deleted"):
        get(zoo)
    folder = cache_path("tiny", [zoo]).parent
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.pt.lock"]


def test_wrong_size_deletes_the_file(server, zoo):
    server.files[PATH] = DATA + b"extra"
    with pytest.raises(DownloadError, match="1000005 bytes, the manifest says 1000000 bytes"):
        get(zoo)
    assert not cache_path("tiny", [zoo]).with_name("tiny.pt.partial").exists()


def test_404_is_not_retried(server, zoo):
    del server.files[PATH]
    with pytest.raises(DownloadError, match="HTTP 404"):
        get(zoo, retries=3)
    assert len(server.gets(PATH)) == 1


def test_stalled_server_times_out(server, zoo):
    server.plan[PATH] = [("stall", 30)] * 2
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"failed after 2 attempt\(s\): no data for 0.3 s \(timeout"):
        get(zoo, timeout=0.3, retries=2)
    assert time.monotonic() - t0 < 5


def test_stall_mid_file_resumes_what_arrived(server, zoo):
    server.plan[PATH] = [("hang", 400_000)]
    assert get(zoo, timeout=1.0, retries=2).read_bytes() == DATA
    assert server.gets(PATH) == [None, "bytes=400000-"]


def test_timeout_from_environment(server, zoo, monkeypatch):
    monkeypatch.setenv("DISTILL_DOWNLOAD_TIMEOUT", "0.2")
    server.plan[PATH] = [("stall", 30)]
    with pytest.raises(DownloadError, match="no data for 0.2 s"):
        get(zoo, retries=1)
    monkeypatch.setenv("DISTILL_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(Exception, match="DISTILL_DOWNLOAD_TIMEOUT must be a number"):
        get(zoo)


def test_mirror_serves_the_same_relative_path(server, tmp_path, monkeypatch):
    server.files["/mirror/teachers/tiny.pt"] = DATA
    dead = "http://127.0.0.1:9/zoo"  # nothing listens on the discard port
    zoo = write_manifest(
        tmp_path / "zoo.json",
        [file_entry("tiny", DATA, f"{dead}/teachers/tiny.pt"), file_entry("rel", DATA, "teachers/tiny.pt")],
        base_url=dead,
    )
    monkeypatch.setenv("DISTILL_MODEL_ZOO_MIRROR", server.url("/mirror/"))
    assert get(zoo).read_bytes() == DATA
    assert get_checkpoint("rel", manifests=[zoo], progress=False).read_bytes() == DATA
    assert server.gets("/mirror/teachers/tiny.pt") == [None, None]


def test_mirror_folder(tmp_path, monkeypatch):
    (tmp_path / "mirror/teachers").mkdir(parents=True)
    (tmp_path / "mirror/teachers/tiny.pt").write_bytes(DATA)
    zoo = write_manifest(
        tmp_path / "zoo.json",
        [file_entry("tiny", DATA, "https://host.invalid/zoo/teachers/tiny.pt")],
        base_url="https://host.invalid/zoo",
    )
    monkeypatch.setenv("DISTILL_MODEL_ZOO_MIRROR", str(tmp_path / "mirror"))
    assert get(zoo).read_bytes() == DATA


def test_file_urls_and_plain_paths(tmp_path):
    src = tmp_path / "lab" / "tiny.pt"
    src.parent.mkdir()
    src.write_bytes(DATA)
    zoo = write_manifest(
        tmp_path / "lab" / "zoo.json",
        [
            file_entry("by-file-url", DATA, src.as_uri()),
            file_entry("by-path", DATA, str(src)),
            file_entry("by-relative-path", DATA, "tiny.pt"),
            file_entry("missing", DATA, "nope.pt"),
        ],
    )
    for name in ("by-file-url", "by-path", "by-relative-path"):
        path = get_checkpoint(name, manifests=[zoo])
        assert path.read_bytes() == DATA and path != src
    with pytest.raises(DownloadError, match="file not found"):
        get_checkpoint("missing", manifests=[zoo])


def test_offline_uses_only_the_cache(server, zoo, monkeypatch):
    with pytest.raises(DownloadError, match="not in the cache and offline mode is on"):
        get(zoo, offline=True)
    assert server.requests == []
    path = get(zoo)
    monkeypatch.setenv("DISTILL_OFFLINE", "1")
    assert get(zoo) == path and len(server.requests) == 1


def test_corrupt_cache_is_fetched_again_or_refused_offline(server, zoo):
    path = get(zoo)
    path.write_bytes(payload(seed=2))
    with pytest.raises(DownloadError, match="cached tiny is corrupt"):
        get(zoo, offline=True)
    assert not path.exists()
    path.parent.joinpath("tiny.pt").write_bytes(b"junk")
    assert get(zoo).read_bytes() == DATA and len(server.gets(PATH)) == 2


def test_lock_holder_without_progress_is_reported(server, tmp_path):
    dest = tmp_path / "d" / "tiny.pt"
    dest.parent.mkdir()
    with file_lock(dest.with_name("tiny.pt.lock"), dest.with_name("tiny.pt.partial"), 60):
        with pytest.raises(DownloadError, match="made no progress for 0.3 s"):
            fetch(
                server.url(PATH),
                dest,
                sha256="0" * 64,
                size=1,
                timeout=1,
                retries=1,
                progress=False,
                what="tiny",
                lock_timeout=0.3,
            )
