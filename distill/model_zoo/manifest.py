"""Reading and checking model-zoo manifests (format in the package docstring), and where an entry's file
comes from: its url, the same file on a mirror, its place in the cache."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..utils.errors import DistillInputError
from ..utils.io import read_json

FORMAT = 1
KINDS = ("teacher", "student")
BACKENDS = ("torchvision", "detectron2")
SOURCES = ("path", "url", "recipe")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
SHA256 = re.compile(r"[0-9a-f]{64}")
FIELDS = {
    "name",
    "kind",
    "description",
    "license",
    "path",
    "url",
    "recipe",
    "sha256",
    "size",
    "command",
    "arch",
    "pretrained",
    "backend",
    "teacher",
    "config",
    "status",
    "metrics",
    "trained_on",
}
REMOTE = ("http", "https")


@dataclass(frozen=True)
class Entry:
    """One manifest entry with where it was read from (for relative paths, urls and error messages)."""

    data: dict
    manifest: Path
    base_url: str | None

    @property
    def name(self) -> str:
        return self.data["name"]


# ---------------------------------------------------------------------------------------------- checking
def _check_file_fields(e: dict) -> str | None:
    if not isinstance(e.get("sha256"), str) or not SHA256.fullmatch(e["sha256"]):
        return f"'sha256' must be 64 lowercase hex digits, got {e.get('sha256')!r}"
    if type(e.get("size")) is not int or e["size"] <= 0:
        return f"'size' must be a positive number of bytes, got {e.get('size')!r}"
    return None


def _check_metrics(m) -> str | None:
    if not isinstance(m, dict) or set(m) != {"command", "values"} or not isinstance(m["command"], str):
        return '\'metrics\' must be {"command": <command that measured them>, "values": {name: number}}'
    if not isinstance(m["values"], dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in m["values"].values()
    ):
        return "'metrics.values' must map metric names to numbers"
    return None


def _check_trained_on(t) -> str | None:
    def strings(v) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) and x for x in v)

    if (
        not isinstance(t, dict)
        or not set(t) <= {"domain", "classes", "attributes"}
        or not isinstance(t.get("domain"), str)
        or not strings(t.get("classes"))
        or not t["classes"]
        or not strings(t.get("attributes", []))
    ):
        return (
            '\'trained_on\' must be {"domain": <what the teacher saw>, "classes": [names], '
            '"attributes": [words], optional}'
        )
    return None


def _entry_problem(e) -> str | None:
    """The first thing wrong with one entry, or None."""
    if not isinstance(e, dict):
        return "every entry must be a json object"
    if not isinstance(e.get("name"), str) or not NAME.fullmatch(e["name"]):
        return f"'name' must match {NAME.pattern} (lowercase, no '/'), got {e.get('name')!r}"
    if unknown := sorted(set(e) - FIELDS):
        return f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}"
    if e.get("kind") not in KINDS:
        return f"'kind' must be one of {', '.join(KINDS)}, got {e.get('kind')!r}"
    if [s in e for s in SOURCES].count(True) != 1:
        return "exactly one of 'path' (shipped file), 'url' (downloaded file) or 'recipe' (no file) is needed"
    if "recipe" not in e and (problem := _check_file_fields(e)):
        return problem
    if e["kind"] == "teacher" and not isinstance(e.get("arch"), str):
        return "a teacher needs 'arch' (an open_clip architecture)"
    if not isinstance(e.get("pretrained"), (str, type(None))):
        return "'pretrained' is an open_clip pretrained tag (a string) or null"
    if e["kind"] == "student" and e.get("backend") not in BACKENDS:
        return f"a student needs 'backend', one of {', '.join(BACKENDS)}"
    if "status" in e and (e["status"] != "planned" or "recipe" not in e):
        return "'status' may only be \"planned\", and only on a recipe entry (its config is not written yet)"
    if "trained_on" in e:
        if e["kind"] != "teacher":
            return "only a teacher has 'trained_on' (what it was trained on)"
        if problem := _check_trained_on(e["trained_on"]):
            return problem
    if "metrics" in e:
        return _check_metrics(e["metrics"])
    return None


def load_manifest(path: str | os.PathLike) -> list[Entry]:
    """All entries of one manifest file, checked; a bad entry is a one-line error naming it."""
    path = Path(path).resolve()
    data = read_json(path, "model-zoo manifest")
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise DistillInputError('a model-zoo manifest is {"format": 1, "models": [...]}', path)
    if data.get("format", FORMAT) != FORMAT:
        raise DistillInputError(
            f"manifest format {data.get('format')!r} is not supported (only {FORMAT})", path
        )
    base_url = data.get("base_url")
    entries = []
    for i, e in enumerate(data["models"]):
        if problem := _entry_problem(e):
            label = e.get("name") if isinstance(e, dict) and isinstance(e.get("name"), str) else f"#{i}"
            raise DistillInputError(f"model-zoo entry {label}: {problem}", path)
        entries.append(Entry(e, path, base_url))
    return entries


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
        return str(path), st.st_mtime_ns, st.st_size
    except OSError:
        return str(path), None, None


def load_zoo(paths: list[Path]) -> dict[str, Entry]:
    """Entries of several manifests by name; a name in two manifests is an error naming both."""
    return _load_zoo(tuple(_stamp(Path(p).resolve()) for p in paths))


@functools.lru_cache(maxsize=8)
def _load_zoo(stamps: tuple) -> dict[str, Entry]:  # keyed by mtime too: an edited manifest is reread
    zoo: dict[str, Entry] = {}
    for path, _, _ in stamps:
        for entry in load_manifest(path):
            if entry.name in zoo:
                raise DistillInputError(
                    f"model-zoo name {entry.name!r} is in both {zoo[entry.name].manifest} "
                    f"and {entry.manifest}; rename one",
                    entry.manifest,
                )
            zoo[entry.name] = entry
    return zoo


# ---------------------------------------------------------------------------------------------- sources
def is_remote(url: str) -> bool:
    return urlparse(url).scheme in REMOTE


def local_path(url: str) -> Path | None:
    """The file a `file://` url or plain path names; None for a remote url."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from urllib.request import url2pathname

        return Path(url2pathname(parsed.path))
    if parsed.scheme in REMOTE:
        return None
    return Path(url).expanduser()


def _is_absolute(url: str) -> bool:
    return urlparse(url).scheme in (*REMOTE, "file") or os.path.isabs(os.path.expanduser(url))


def source_url(entry: Entry) -> str:
    """Where the file of a `url` entry is: relative urls hang off the manifest's base_url, else its folder."""
    url = entry.data["url"]
    if _is_absolute(url):
        return url
    if entry.base_url:
        return entry.base_url.rstrip("/") + "/" + url
    return str(entry.manifest.parent / url)


def relative_path(entry: Entry) -> str:
    """The file's path below the zoo's root: what a mirror serves it under."""
    url = entry.data["url"]
    if not _is_absolute(url):
        return url.lstrip("/")
    base = (entry.base_url or "").rstrip("/") + "/"
    if entry.base_url and url.startswith(base):
        return url[len(base) :]
    return urlparse(url).path.lstrip("/")


def mirror_url(mirror: str, entry: Entry) -> str:
    """The entry's file on a mirror (an http(s) or file:// base url, or a folder)."""
    rel = relative_path(entry)
    if urlparse(mirror).scheme in (*REMOTE, "file"):
        return mirror.rstrip("/") + "/" + rel
    return str(Path(mirror).expanduser() / rel)
