"""An output folder belongs to one run: a second writer is refused while the first holds the lock, and a fresh
run does not silently replace a finished one's model and append to its metrics."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from .errors import DistillInputError
from .io import ensure_dir

LOCK_NAME = ".lock"
_held: dict[str, int] = {}  # folder → fd of its lock, held until the process ends
RUN_FILES = ("model_final.pth", "last_checkpoint", "metrics.json")


def lock_output_dir(path: str | os.PathLike, what: str = "OUTPUT_DIR") -> Path:
    """Create `path` and hold an exclusive lock on it for the life of this process (flock: released by the OS
    when the process dies, so a killed run leaves no stale lock)."""
    path = ensure_dir(path, what)
    key = str(path.resolve())
    if key in _held:
        return path
    lock = path / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise DistillInputError(f"cannot write into {what} ({e.strerror})", path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DistillInputError(
            f"another run (pid {owner}) is writing into this {what}; wait for it or choose another folder",
            path,
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = fd
    return path


def previous_run(path: str | os.PathLike) -> list[str]:
    """Files of an earlier training run in `path` (checkpoints, metrics)."""
    path = Path(path)
    found = [n for n in RUN_FILES if (path / n).exists()]
    found += sorted(p.name for p in path.glob("model_*.pth") if p.name not in found)
    return found


def claim_training_dir(path: str | os.PathLike, resume: bool, overwrite: bool = False) -> Path:
    """Lock OUTPUT_DIR for a training run. A folder that holds a run needs --resume (continue it) or --overwrite
    (its checkpoints, metrics and event files are removed first); otherwise one clear error. --resume with no
    checkpoint to continue from is an error too, not a silent start from iteration 0."""
    if (
        resume and not (Path(path) / "last_checkpoint").is_file()
    ):  # checked before the lock creates the folder
        again = "; --overwrite starts again" if Path(path).is_dir() and previous_run(path) else ""
        raise DistillInputError(
            "--resume: no checkpoint to continue from (no last_checkpoint file); run without --resume to "
            f"start training{again}",
            path,
        )
    path = lock_output_dir(path)
    found = previous_run(path)
    if found and not resume:
        if not overwrite:
            raise DistillInputError(
                f"OUTPUT_DIR holds a training run ({', '.join(found[:3])}); pass --resume to "
                "continue it, --overwrite to start again, or choose another OUTPUT_DIR",
                path,
            )
        for name in found:
            (path / name).unlink(missing_ok=True)
        for p in path.glob("events.out.tfevents.*"):
            p.unlink(missing_ok=True)
        shutil.rmtree(path / "tensorboard", ignore_errors=True)
    return path
