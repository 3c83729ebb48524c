"""MODEL_ZOO.md from the built-in manifest (tools/make_model_zoo_md.py writes it; a test compares)."""

from __future__ import annotations

from typing import Callable

from .manifest import Entry

HEADER = """\
# Model zoo

<!-- Generated from distill/model_zoo/manifest.json by `python tools/make_model_zoo_md.py`; do not edit. -->

Every name below works wherever weights are expected: `MODEL.WEIGHTS distill://<name>` (or the bare
name) for a student, `--teacher <name>` for a teacher. Fetch ahead of time with
`python tools/download_model.py <name>` (`--all`, `--list`).

Downloads go to `$DISTILL_CACHE/model_zoo/<name>/` (default `~/.cache/distill`): streamed to a
`.partial` file, resumed after a cut connection, checked against the full sha256 before use.
`DISTILL_MODEL_ZOO_MIRROR=<base url>` serves every file from a mirror, `DISTILL_OFFLINE=1` uses only
the cache, `DISTILL_MODEL_ZOO_MANIFEST=a.json:b.json` (or `--manifest`) adds a lab's own entries.
Recipe entries have no file: their command makes it.

## What the shipped models can and cannot do

The shipped teacher and the students distilled from it know one small synthetic world: coloured shapes on
textured backgrounds, named in captions by shape and colour (the words are listed under each entry). They
exist so the whole pipeline runs, and is tested, on a CPU in minutes. They recognise nothing in real photos,
and a class name outside their vocabulary ("cat", "dog") gets a score that means nothing; the tools say so
once per run when asked for such words or images.

For real images use a real CLIP teacher: any open_clip architecture and pretrained tag, e.g.
`--teacher ViT-B-32 --pretrained openai` on the command line (`MODEL.DISTILL.TEACHER.ARCH ViT-B-32
MODEL.DISTILL.TEACHER.PRETRAINED openai` in a config), and a student distilled from it. open_clip downloads
the weights once, into the Hugging Face hub cache (`~/.cache/huggingface/hub`, `$HF_HUB_CACHE`) or
`~/.cache/clip`. For a machine without network, run `python tools/download_model.py ViT-B-32/openai` where
there is network and copy the folder it prints over. With `DISTILL_OFFLINE=1` (which also sets
`HF_HUB_OFFLINE`), or when the download host is unreachable, a teacher whose weights are not in the cache is
one error line naming the cache path and where the file comes from.
"""


def _cell(text) -> str:
    return "-" if text in (None, "") else str(text).replace("|", "\\|")


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def _source(e: dict) -> str:
    if "path" in e:
        return "shipped"
    if "url" in e:
        return "download"
    return "recipe" + (" (planned)" if e.get("status") == "planned" else "")


def _table(rows: list[dict], columns: list[tuple[str, Callable[[dict], object]]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(get(e)) for _, get in columns) + " |" for e in rows]
    return lines


TEACHER_COLUMNS = [
    ("name", lambda e: f"`{e['name']}`"),
    ("open_clip arch", lambda e: e["arch"]),
    ("pretrained tag", lambda e: e.get("pretrained")),
    ("source", _source),
    ("size", lambda e: _size(e.get("size"))),
]
STUDENT_COLUMNS = [
    ("name", lambda e: f"`{e['name']}`"),
    ("backend", lambda e: e["backend"]),
    ("teacher", lambda e: e.get("teacher")),
    ("config", lambda e: e.get("config")),
    ("source", _source),
    ("size", lambda e: _size(e.get("size"))),
]


def _number(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:.2f}"


def _details(e: dict) -> list[str]:
    lines = [f"### `{e['name']}`", ""]
    if e.get("description"):
        lines += [e["description"], ""]
    if "path" in e:
        lines.append(f"- file: shipped, `distill/model_zoo/{e['path']}`")
    if "url" in e:
        lines.append(f"- file: {e['url']}")
    if "sha256" in e:
        lines.append(f"- sha256: `{e['sha256']}` ({e['size']} bytes)")
    if "command" in e:
        lines.append(f"- made by: `{e['command']}`")
    if "recipe" in e:
        lines.append(
            f"- recipe: `{e['recipe']}`" + (" (config planned)" if e.get("status") == "planned" else "")
        )
    if "trained_on" in e:
        t = e["trained_on"]
        words = ", ".join(t["classes"]) + (
            f"; attributes {', '.join(t['attributes'])}" if t.get("attributes") else ""
        )
        lines.append(f"- trained only on {t['domain']}: {words}; nothing else (no real photos)")
    if e.get("license"):
        lines.append(f"- license: {e['license']}")
    if "metrics" in e:
        values = ", ".join(f"{k} {_number(v)}" for k, v in sorted(e["metrics"]["values"].items()))
        lines.append(f"- metrics: {values or '-'}; measured by `{e['metrics']['command']}`")
    return lines + [""]


def render(entries: list[Entry]) -> str:
    """The whole MODEL_ZOO.md text: a table per kind, then each entry's file, hash and commands."""
    data = sorted((e.data for e in entries), key=lambda e: e["name"])
    lines = [HEADER]
    for kind, columns, title in (
        ("teacher", TEACHER_COLUMNS, "Teachers"),
        ("student", STUDENT_COLUMNS, "Students"),
    ):
        rows = [e for e in data if e["kind"] == kind]
        lines += [f"## {title}", ""]
        lines += (_table(rows, columns) if rows else ["None yet."]) + [""]
        for e in rows:
            lines += _details(e)
    return "\n".join(lines).rstrip("\n") + "\n"
