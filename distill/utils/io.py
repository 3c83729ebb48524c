"""Atomic file writes and checked reads: an interrupted job never leaves a half-written file, an OS error on a
write path is one line (DistillInputError), and what is written honours the umask."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import DistillInputError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def chmod_default(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a mkstemp / mkdtemp result (0600 / 0700) the mode open() / mkdir() would have: 0666 / 0777 & ~umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def write_error(path: str | os.PathLike, e: OSError, what: str = "") -> DistillInputError:
    """An OS error while writing `path` as one line, with what to do about the usual ones."""
    hint = {
        errno.ENOSPC: "disk full",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EEXIST: "a file is in the way of a folder",
        errno.ENOTDIR: "a file is in the way of a folder",
        errno.EDQUOT: "disk quota exceeded",
    }.get(e.errno, e.strerror or str(e))
    where = e.filename if getattr(e, "filename", None) and str(e.filename) != str(path) else None
    return DistillInputError(
        f"cannot write {what + ' ' if what else ''}({hint}{f': {where}' if where else ''})", path
    )


def ensure_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """mkdir -p with a one-line error for a file in the way, a read-only mount, a full disk."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e, what) from None
    if not path.is_dir():
        raise DistillInputError(f"{what} is a file, not a folder", path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds. OS errors (no
    space, read-only, a file where a folder should be) become one DistillInputError; the temp file goes."""
    path = Path(path)
    if path.is_dir():
        raise DistillInputError("is a folder, expected a file path", path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".partial", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        yield Path(tmp)
        if os.path.exists(tmp):
            chmod_default(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """Deterministic json text (sorted keys, fixed separators): same object, same bytes."""
    seps = (",", ": ") if indent is not None else (",", ":")
    return json.dumps(obj, sort_keys=True, indent=indent, separators=seps, ensure_ascii=False)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    atomic_write_bytes(path, (dumps_json(obj, indent) + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike, what: str = "json file") -> Any:
    """Load json with one-line errors for a missing, unreadable or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise DistillInputError(f"{what} not found", path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except json.JSONDecodeError as e:
        raise DistillInputError(
            f"not valid json ({e.msg} at line {e.lineno}, column {e.colno})", path
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DistillInputError(f"cannot read {what} ({e})", path) from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (or one folder), existing or not."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_not_input(output: str | os.PathLike, inputs, what: str = "output") -> None:
    """Refuse a write path that is one of the tool's inputs (the user's data is never overwritten unasked)."""
    for i in inputs:
        if i and same_file(output, i):
            raise DistillInputError(f"{what} would overwrite the input {i}; choose another path", output)
