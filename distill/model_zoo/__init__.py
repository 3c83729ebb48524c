"""Named checkpoints. `manifest.json` maps a name to its file, sha256, architecture and the command that
made it. Entries shipped inside the package are verified by hash before use."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..utils.errors import DistillInputError

MANIFEST = Path(__file__).parent / "manifest.json"


@functools.lru_cache(maxsize=1)
def _manifest() -> dict[str, dict]:
    with open(MANIFEST) as f:
        entries = json.load(f)["models"]
    return {e["name"]: e for e in entries}


def list_entries() -> list[str]:
    return sorted(_manifest())


def has_entry(name: str) -> bool:
    return name in _manifest()


def get_entry(name: str) -> dict:
    if name not in _manifest():
        raise DistillInputError(f"unknown model-zoo name {name!r}; known: {', '.join(list_entries())}")
    return dict(_manifest()[name])


@functools.lru_cache(maxsize=None)
def _verified(path: str, sha256: str) -> bool:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == sha256


def get_checkpoint(name: str) -> Path:
    """Local path of a model-zoo checkpoint, after checking its full sha256."""
    entry = get_entry(name)
    if "path" not in entry:
        raise DistillInputError(f"model-zoo entry {name!r} has no local file; it is made by: {entry.get('command')}")
    path = Path(__file__).parent / entry["path"]
    if not path.is_file():
        raise DistillInputError(f"model-zoo file for {name!r} is missing; it is made by: {entry.get('command')}", path)
    if not _verified(str(path), entry["sha256"]):
        raise DistillInputError(f"sha256 of the {name!r} checkpoint does not match the manifest", path)
    return path
