"""Named checkpoints: teachers and students by name, fetched once into a cache and always hash-checked.

Manifest format (``manifest.json`` here; a lab's own manifests have the same format)::

    {"format": 1,
     "base_url": "https://host/zoo",          # optional: relative "url"s hang off it
     "models": [
       {"name": "synthetic-tiny-teacher",          # [a-z0-9][a-z0-9._-]*, unique over all manifests
        "kind": "teacher",                     # "teacher" | "student"
        "description": "...",                  # optional, like "license"
        "arch": "distill-tiny-vit",            # teacher: open_clip architecture ...
        "pretrained": null,                    # ... and the open_clip pretrained tag the file is (or null)
        "path": "weights/synthetic_tiny_vit_fp16.pt",   # exactly one of path / url / recipe, see below
        "sha256": "<64 lowercase hex>", "size": 1234567, # full hash and bytes of the file (path / url)
        "command": "python tools/train_teacher.py ...",  # the command that made the file
        "trained_on": {"domain": "synthetic shapes",   # teacher, optional: a narrow training world; words
                       "classes": ["circle", ...],     # and images outside it get a one-line warning
                       "attributes": ["red", ...]},
        "metrics": {"command": "python tools/train_teacher.py --eval-only ...",   # what measured them
                    "values": {"zero_shot_acc": 91.2}}},
       {"name": "synthetic-vild-r18-fpn-quick", "kind": "student",
        "backend": "torchvision",              # student: "torchvision" | "detectron2"
        "teacher": "synthetic-tiny-teacher",       # student: a zoo name or "ARCH/TAG" (optional)
        "config": "configs/synthetic/vild_r18_fpn_quick.yaml",   # repository-relative (optional)
        "recipe": "make quickstart",           # no file: the command that makes it
        "status": "planned"}]}                 # recipe entries only: the config is not written yet

Where the file comes from:
  ``path``   shipped beside the manifest (inside the package for the built-in one); used in place.
  ``url``    ``http(s)://``, ``file://``, an absolute path, or a path relative to ``base_url`` (else to the
             manifest's folder). Copied into ``$DISTILL_CACHE/model_zoo/<name>/`` (default cache
             ``~/.cache/distill``): streamed to ``*.partial`` with a progress bar, resumed with an HTTP
             Range request after a cut connection, full sha256 checked before ``os.replace``; a corrupt
             download is deleted with a clear error. A lock file lets one process download while the
             others wait; the kernel drops the lock of a killed process.
  ``recipe`` nothing to fetch; :func:`get_checkpoint` says which command makes it.

Environment:
  ``DISTILL_CACHE``                cache root.
  ``DISTILL_MODEL_ZOO_MIRROR``     base url (or folder) serving every ``url`` file under the same
                                   relative path (the part after ``base_url``, else the url's path).
  ``DISTILL_MODEL_ZOO_MANIFEST``   extra manifests, separated by ``:``; their names sit beside the
                                   built-in ones, a clash is an error.
  ``DISTILL_OFFLINE=1``            use only the cache (and local files): never open a connection.
  ``DISTILL_DOWNLOAD_TIMEOUT``     seconds without data before a download attempt gives up (default 60).
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from pathlib import Path
from typing import Iterable

from ..utils.errors import DistillInputError
from .config_files import get_config_file
from .download import DownloadError, check_file, fetch, sha256_file
from .manifest import Entry, is_remote, load_zoo, local_path, mirror_url, relative_path, source_url

__all__ = [
    "DownloadError",
    "cache_root",
    "get_checkpoint",
    "get_config_file",
    "get_entry",
    "has_entry",
    "list_entries",
    "manifest_paths",
    "offline_mode",
    "resolve_weights",
]

logger = logging.getLogger(__name__)

MANIFEST = Path(__file__).parent / "manifest.json"
SCHEME = "distill://"
DEFAULT_TIMEOUT = 60.0


# ---------------------------------------------------------------------------------------------- settings
def manifest_paths(extra: Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """The built-in manifest, then $DISTILL_MODEL_ZOO_MANIFEST's, then `extra`."""
    env = [p for p in os.environ.get("DISTILL_MODEL_ZOO_MANIFEST", "").split(":") if p]
    return [MANIFEST, *map(Path, env), *map(Path, extra or ())]


def cache_root() -> Path:
    return Path(os.environ.get("DISTILL_CACHE") or "~/.cache/distill").expanduser()


def offline_mode() -> bool:
    """$DISTILL_OFFLINE is on: only caches and local files, never a connection (the zoo's and the teachers')."""
    return os.environ.get("DISTILL_OFFLINE", "").lower() in ("1", "true", "yes")


def _offline(offline: bool | None) -> bool:
    return offline if offline is not None else offline_mode()


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    value = os.environ.get("DISTILL_DOWNLOAD_TIMEOUT") or DEFAULT_TIMEOUT
    try:
        return float(value)
    except ValueError:
        raise DistillInputError(
            f"DISTILL_DOWNLOAD_TIMEOUT must be a number of seconds, got {value!r}"
        ) from None


# ---------------------------------------------------------------------------------------------- entries
def _zoo(manifests=None) -> dict[str, Entry]:
    return load_zoo(manifest_paths(manifests))


def _lookup(name: str, manifests=None) -> Entry:
    zoo = _zoo(manifests)
    if name not in zoo:
        close = difflib.get_close_matches(name, list(zoo), n=3)
        hint = (
            f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(zoo)) or 'none'}"
        )
        raise DistillInputError(f"unknown model-zoo name {name!r}{hint}")
    return zoo[name]


def list_entries(manifests: Iterable[str | os.PathLike] | None = None) -> list[str]:
    return sorted(_zoo(manifests))


def has_entry(name: str, manifests: Iterable[str | os.PathLike] | None = None) -> bool:
    return name in _zoo(manifests)


def get_entry(name: str, manifests: Iterable[str | os.PathLike] | None = None) -> dict:
    """A copy of the manifest entry `name` (format in the module docstring)."""
    return dict(_lookup(name, manifests).data)


# ---------------------------------------------------------------------------------------------- files
@functools.lru_cache(maxsize=None)
def _verified(path: str, stamp: tuple, sha256: str) -> bool:  # stamp: a changed file is hashed again
    return sha256_file(Path(path)) == sha256


def _is_verified(path: Path, sha256: str) -> bool:
    st = path.stat()
    return _verified(str(path), (st.st_ino, st.st_size, st.st_mtime_ns), sha256)


def cache_path(name: str, manifests: Iterable[str | os.PathLike] | None = None) -> Path:
    """Where a `url` entry's file lives once downloaded."""
    entry = _lookup(name, manifests)
    return cache_root() / "model_zoo" / name / Path(relative_path(entry)).name


def _shipped(entry: Entry) -> Path:
    data = entry.data
    path = entry.manifest.parent / data["path"]
    if not path.is_file():
        raise DistillInputError(
            f"model-zoo file for {entry.name!r} is missing; it is made by: {data.get('command', '?')}", path
        )
    if not _is_verified(path, data["sha256"]):
        raise DistillInputError(f"sha256 of the {entry.name!r} checkpoint does not match the manifest", path)
    return path


def _download(entry: Entry, dest: Path, offline: bool, **kwargs) -> Path:
    mirror = os.environ.get("DISTILL_MODEL_ZOO_MIRROR")
    url = mirror_url(mirror, entry) if mirror else source_url(entry)
    if offline and is_remote(url):
        raise DownloadError(
            f"{entry.name!r} is not in the cache and offline mode is on (DISTILL_OFFLINE); "
            f"run `python tools/download_model.py {entry.name}` where there is network, "
            f"or put the file at {dest}"
        )
    logger.info("downloading %s from %s", entry.name, url)
    return fetch(url, dest, sha256=entry.data["sha256"], size=entry.data["size"], what=entry.name, **kwargs)


def get_checkpoint(
    name: str,
    *,
    manifests: Iterable[str | os.PathLike] | None = None,
    offline: bool | None = None,
    timeout: float | None = None,
    retries: int = 3,
    progress: bool | None = None,
) -> Path:
    """Local path of a model-zoo checkpoint, downloaded into the cache if needed, full sha256 checked.

    Args:
        manifests: extra manifests beside the built-in one and $DISTILL_MODEL_ZOO_MANIFEST's.
        offline: use only the cache and local files (default: $DISTILL_OFFLINE).
        timeout: seconds without data before an attempt fails (default: $DISTILL_DOWNLOAD_TIMEOUT or 60).
        retries: attempts per download; each resumes what the last one fetched.
        progress: show a progress bar (default: when stderr is a terminal).
    """
    entry = _lookup(name, manifests)
    if "recipe" in entry.data:
        raise DistillInputError(
            f"model-zoo entry {name!r} has no file to download; make it with: {entry.data['recipe']}"
        )
    if "path" in entry.data:
        return _shipped(entry)
    dest, offline = cache_path(name, manifests), _offline(offline)
    if dest.is_file():
        if _is_verified(dest, entry.data["sha256"]):
            return dest
        if offline:
            check_file(dest, entry.data["sha256"], entry.data["size"], f"cached {name}")  # deletes, raises
        logger.warning("cached %s fails its sha256 check; downloading it again", dest)
    progress = progress if progress is not None else os.isatty(2)
    return _download(entry, dest, offline, timeout=_timeout(timeout), retries=retries, progress=progress)


def resolve_weights(spec: str, **kwargs) -> str:
    """A weights spec → a local path: ``distill://<name>`` or a bare model-zoo name is fetched and checked
    (see :func:`get_checkpoint`, which takes `kwargs`); an existing path, an empty spec (no weights) and
    other frameworks' urls (``detectron2://``, ``https://``) are returned unchanged for their loaders;
    ``file://`` becomes a plain path."""
    if not spec:
        return spec
    if spec.startswith(SCHEME):
        return str(get_checkpoint(spec[len(SCHEME) :], **kwargs))
    if spec.startswith("file://"):
        spec = str(local_path(spec))
    if os.path.exists(spec) or "://" in spec:
        return spec
    if has_entry(spec, kwargs.get("manifests")):
        return str(get_checkpoint(spec, **kwargs))
    close = difflib.get_close_matches(spec, list_entries(kwargs.get("manifests")), n=3)
    hint = f"; did you mean the model-zoo name {', '.join(close)}?" if close else ""
    raise DistillInputError(f"weights not found: no such file and no model-zoo name{hint}", spec)
