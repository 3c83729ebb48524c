"""Manifest checking, extra manifests beside the built-in one, resolve_weights and tools/download_model.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distill.model_zoo import MANIFEST, get_checkpoint, get_entry, has_entry, list_entries, resolve_weights
from distill.utils.errors import DistillInputError
from tests.conftest import REPO

from .conftest import child_env, file_entry, payload, write_manifest

DATA = payload(4096)
BUILTIN_STUDENT = "synthetic-vild-r18-fpn-quick"


@pytest.fixture
def lab(tmp_path):
    """A lab's private zoo: a folder with its manifest and one file next to it."""
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "r50.pt").write_bytes(DATA)
    entry = file_entry("lab-r50", DATA, "r50.pt", kind="student", config="configs/lab/r50.yaml")
    return write_manifest(tmp_path / "lab" / "zoo.json", [entry])


def test_builtin_manifest_has_the_quickstart_recipe():
    entry = get_entry(BUILTIN_STUDENT)
    assert entry["kind"] == "student" and entry["recipe"] == "make quickstart"
    with pytest.raises(DistillInputError, match="no file to download; make it with: make quickstart"):
        get_checkpoint(BUILTIN_STUDENT)


def test_extra_manifests_from_environment(lab, tmp_path, monkeypatch):
    other = write_manifest(tmp_path / "other.json", [file_entry("other-vit", DATA, "x.pt")])
    assert not has_entry("lab-r50")
    monkeypatch.setenv("DISTILL_MODEL_ZOO_MANIFEST", f"{lab}:{other}")
    assert {"lab-r50", "other-vit", BUILTIN_STUDENT} <= set(list_entries())
    assert get_checkpoint("lab-r50").read_bytes() == DATA


@pytest.mark.parametrize("clash_with_builtin", [True, False])
def test_name_clash_is_an_error(lab, tmp_path, clash_with_builtin):
    name = BUILTIN_STUDENT if clash_with_builtin else "lab-r50"
    dup = write_manifest(tmp_path / "dup.json", [file_entry(name, DATA, "y.pt", kind="student")])
    first = MANIFEST if clash_with_builtin else lab
    with pytest.raises(DistillInputError, match=f"{name}'? is in both {first}.* and {dup}"):
        list_entries([lab, dup])


BAD = [
    ({"sha256": "ab" * 31 + "a"}, "'sha256' must be 64 lowercase hex digits"),
    ({"sha256": "AB" * 32}, "'sha256' must be 64 lowercase hex digits"),
    ({"size": "12"}, "'size' must be a positive number of bytes"),
    ({"recipe": "make it"}, "exactly one of 'path'"),
    ({"colour": "red"}, "unknown field.*colour"),
    ({"kind": "tokenizer"}, "'kind' must be one of"),
    ({"name": "Lab/R50"}, "'name' must match"),
    ({"status": "planned"}, "'status' may only be"),
    ({"metrics": {"AP": 1.0}}, "'metrics' must be"),
    ({"metrics": {"command": "x", "values": {"AP": "high"}}}, "map metric names to numbers"),
    ({"backend": "mmdet"}, "a student needs 'backend'"),
    ({"trained_on": {"domain": "shapes", "classes": ["star"]}}, "only a teacher has 'trained_on'"),
    ({"kind": "teacher", "arch": "RN50", "trained_on": {"domain": "shapes"}}, "'trained_on' must be"),
    (
        {"kind": "teacher", "arch": "RN50", "trained_on": {"domain": "x", "classes": [1]}},
        "'trained_on' must be",
    ),
]


@pytest.mark.parametrize("change, message", BAD)
def test_bad_entries_are_one_line_errors(tmp_path, change, message):
    path = write_manifest(
        tmp_path / "bad.json", [{**file_entry("lab-x", DATA, "x.pt", kind="student"), **change}]
    )
    with pytest.raises(DistillInputError, match=message) as e:
        list_entries([path])
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_bad_manifest_files(tmp_path):
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DistillInputError, match="not valid json"):
        list_entries([tmp_path / "broken.json"])
    with pytest.raises(DistillInputError, match="model-zoo manifest not found"):
        list_entries([tmp_path / "absent.json"])
    write_manifest(tmp_path / "v2.json", [], format=2)
    with pytest.raises(DistillInputError, match="format 2 is not supported"):
        list_entries([tmp_path / "v2.json"])


def test_resolve_weights(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_MODEL_ZOO_MANIFEST", str(lab))
    cached = str(get_checkpoint("lab-r50"))
    assert resolve_weights("distill://lab-r50") == cached
    assert resolve_weights("lab-r50") == cached
    local = tmp_path / "lab" / "r50.pt"
    assert resolve_weights(str(local)) == str(local)
    assert resolve_weights(local.as_uri()) == str(local)
    assert resolve_weights("") == ""
    assert resolve_weights("detectron2://ImageNetPretrained/MSRA/R-50.pkl").startswith("detectron2://")
    with pytest.raises(DistillInputError, match="no such file and no model-zoo name; did you mean .*lab-r50"):
        resolve_weights("lab-r5")
    with pytest.raises(DistillInputError, match="unknown model-zoo name 'nope'"):
        resolve_weights("distill://nope")


def tool(*args, **env):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "download_model.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=child_env(**env),
        timeout=60,
    )


def test_download_tool(lab, zoo_env):
    r = tool("--list", "--manifest", lab)
    assert r.returncode == 0, r.stderr
    assert "lab-r50" in r.stdout and "not cached" in r.stdout and "make it with: make quickstart" in r.stdout
    r = tool("distill://lab-r50", "--manifest", lab)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(zoo_env / "model_zoo" / "lab-r50" / "r50.pt")
    r = tool("--all", "--quiet", "--manifest", lab)
    assert r.returncode == 0 and "recipe entry, make it with: make quickstart" in r.stderr
    assert f"cached {zoo_env}" in tool("--list", DISTILL_MODEL_ZOO_MANIFEST=str(lab)).stdout


def test_download_tool_errors(lab):
    r = tool("lab-r5", "--manifest", lab)
    assert r.returncode == 2 and r.stderr.startswith(
        "error: unknown model-zoo name 'lab-r5'; did you mean lab-r50"
    )
    assert len(r.stderr.strip().splitlines()) == 1
    r = tool()
    assert r.returncode == 2 and "give --all" in r.stderr


def test_every_shipped_weights_file_is_package_data():
    """A wheel carries the weights the built-in manifest ships (the package-data globs of pyproject.toml)."""
    import fnmatch
    import json

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "distill"
    ]
    shipped = [e["path"] for e in json.loads(MANIFEST.read_text())["models"] if e.get("path")]
    assert shipped, "the built-in manifest ships no file"
    for path in shipped:
        rel = f"model_zoo/{path}"
        assert (REPO / "distill" / rel).is_file(), rel
        assert any(fnmatch.fnmatch(rel, g) for g in globs), (
            f"{rel} is not package data: add it to pyproject.toml"
        )
