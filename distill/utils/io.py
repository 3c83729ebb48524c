"""Atomic file writes and checked json reads: an interrupted job never leaves a half-written file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import DistillInputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".partial", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a user's files follow the umask like open() does
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        raise DistillInputError(f"not valid json ({e.msg} at line {e.lineno}, column {e.colno})", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DistillInputError(f"cannot read {what} ({e})", path) from None
