"""Fetching one file into the cache: stream to `<file>.partial` (resumed with an HTTP Range request after a
cut connection), check size and full sha256, then `os.replace`. A lock file keeps two processes from
writing the same `.partial`."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..utils.errors import DistillInputError
from .manifest import local_path

try:
    import fcntl
except ImportError:  # not on Windows: downloads there are not guarded against a second process
    fcntl = None

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "distill-model-zoo"


class DownloadError(DistillInputError):
    """A model-zoo file could not be fetched, or failed its check. Tools print it as one line."""


class _Retry(Exception):
    """A transient failure (cut connection, timeout, 5xx): try again, resuming the partial file."""


class _Restart(_Retry):
    """The server will not continue the partial file: try again from byte 0."""


@contextlib.contextmanager
def file_lock(path: Path, watch: Path, stall_timeout: float):
    """Hold an exclusive `flock` on `path`. The kernel drops it when its holder dies, so a killed download
    leaves no stale lock. A waiter gives up only when the holder's `watch` file stops growing."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            _acquire(fd, path, watch, stall_timeout)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the flock


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _acquire(fd: int, path: Path, watch: Path, stall_timeout: float) -> None:
    last, deadline, told = None, time.monotonic() + stall_timeout, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = path.read_text().strip() or "?"
        if not told:
            logger.info("waiting for process %s, which is downloading %s", holder, watch.name)
            told = True
        if (size := _size(watch)) != last:
            last, deadline = size, time.monotonic() + stall_timeout
        elif time.monotonic() > deadline:
            raise DownloadError(
                f"process {holder} holds the download lock and its file made no progress for "
                f"{stall_timeout:g} s; stop that process",
                path,
            )
        time.sleep(0.1)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path, sha256: str, size: int, what: str) -> None:
    """Delete `path` and raise when its size or full sha256 differs from the manifest's."""
    got_size = path.stat().st_size
    got = sha256_file(path) if got_size == size else None
    if got == sha256:
        return
    path.unlink()
    found = f"sha256 {got}" if got else f"{got_size} bytes"
    expected = f"sha256 {sha256}" if got else f"{size} bytes"
    raise DownloadError(
        f"{what} is corrupt: {found}, the manifest says {expected}; the file was deleted, "
        "try again (or check the url / mirror)",
        path,
    )


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str,
    size: int,
    timeout: float,
    retries: int,
    progress: bool,
    what: str,
    lock_timeout: float = 600.0,
) -> Path:
    """Make `dest` a verified copy of `url` (http(s), file:// or a path) and return it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with file_lock(dest.with_name(dest.name + ".lock"), partial, lock_timeout):
        if dest.is_file() and sha256_file(dest) == sha256:  # another process just finished it
            return dest
        src = local_path(url)
        if src is None:
            _http_fetch(url, partial, size, timeout=timeout, retries=retries, progress=progress, what=what)
        elif src.is_file():
            shutil.copyfile(src, partial)
        else:
            raise DownloadError(f"{what}: file not found", src)
        check_file(partial, sha256, size, f"downloaded {what} ({url})")
        os.replace(partial, dest)
    return dest


def _http_fetch(
    url: str, partial: Path, size: int, *, timeout: float, retries: int, progress: bool, what: str
) -> None:
    from tqdm import tqdm

    from ..utils.progress import on_terminal

    bar = tqdm(
        total=size,
        initial=_size(partial) or 0,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=what,
        disable=not on_terminal(progress),
        leave=False,
    )
    with bar:
        for attempt in range(1, retries + 1):
            try:
                return _http_attempt(url, partial, size, timeout, bar)
            except _Retry as e:
                if attempt == retries:
                    kept = _size(partial) or 0
                    raise DownloadError(
                        f"{what}: download from {url} failed after {retries} attempt(s): {e}; "
                        f"{kept} of {size} bytes kept in {partial}, a rerun resumes"
                    ) from None
                logger.warning("%s: %s; retrying (%d/%d)", what, e, attempt, retries - 1)
                time.sleep(min(0.25 * 2**attempt, 5.0))


def _reason(e: BaseException, timeout: float) -> str:
    e = getattr(e, "reason", e)  # URLError wraps the socket error
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"no data for {timeout:g} s (timeout; DISTILL_DOWNLOAD_TIMEOUT)"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _open(url: str, have: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code in (408, 429) or e.code >= 500:
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        if e.code == 416 and have:  # the partial file is no prefix of the server's file: start over
            raise _Restart("the server refused to resume (HTTP 416)") from None
        raise DownloadError(f"HTTP {e.code} {e.reason} for {url}") from None
    except (OSError, http.client.HTTPException) as e:
        raise _Retry(_reason(e, timeout)) from None


def _start(resp, have: int) -> int:
    """Offset the response body starts at: `have` for a matching 206, 0 for a full 200."""
    if resp.status != 206:
        return 0
    content_range = resp.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    start = content_range.removeprefix("bytes ").split("-")[0]
    if start != str(have):
        raise _Restart(f"the server answered the resume with the wrong range {content_range!r}")
    return have


def _http_attempt(url: str, partial: Path, size: int, timeout: float, bar) -> None:
    have = _size(partial) or 0
    if have == size:  # complete: the caller checks it
        return
    if have > size:  # not a prefix of this file (an older version?)
        partial.unlink()
        have = 0
    try:
        with _open(url, have, timeout) as resp:
            start = _start(resp, have)
            bar.n = start
            bar.refresh()
            with open(partial, "ab" if start else "wb") as f:
                while chunk := resp.read1(CHUNK):  # what has arrived: a stall loses nothing
                    f.write(chunk)
                    bar.update(len(chunk))
    except _Restart:
        partial.unlink(missing_ok=True)
        raise
    except (OSError, http.client.HTTPException) as e:
        raise _Retry(_reason(e, timeout)) from None
    got = _size(partial) or 0
    if got < size:  # http.client returns b"" when the server closes early
        raise _Retry(f"connection closed after {got} of {size} bytes")
