"""The built-in manifest against the tree: MODEL_ZOO.md up to date, configs present, hashes well formed,
shipped files there and matching."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest

from distill.model_zoo import MANIFEST
from distill.model_zoo.manifest import load_manifest
from distill.model_zoo.markdown import render
from tests.conftest import REPO

from .conftest import child_env, file_entry, write_manifest

RAW = json.loads(MANIFEST.read_text())["models"]
FIX = "run `python tools/make_model_zoo_md.py`"


def test_model_zoo_md_matches_the_manifest():
    text = (REPO / "MODEL_ZOO.md").read_text(encoding="utf-8")
    assert text == render(load_manifest(MANIFEST)), f"MODEL_ZOO.md is stale: {FIX}"


def test_make_model_zoo_md_check_ignores_extra_manifests(tmp_path):
    extra = write_manifest(tmp_path / "lab.json", [file_entry("lab-x", b"x", "x.pt")])
    r = subprocess.run(
        [sys.executable, str(REPO / "tools/make_model_zoo_md.py"), "--check"],
        capture_output=True,
        text=True,
        env=child_env(DISTILL_MODEL_ZOO_MANIFEST=str(extra)),
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_check_reports_a_stale_file(tmp_path):
    stale = tmp_path / "MODEL_ZOO.md"
    stale.write_text("# Model zoo\n")
    r = subprocess.run(
        [sys.executable, str(REPO / "tools/make_model_zoo_md.py"), "--check", "--output", stale],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert r.returncode == 1 and "out of date" in r.stderr


def entry_problems(entry: dict) -> list[str]:
    """What in one raw manifest entry disagrees with the tree."""
    problems = []
    if "recipe" not in entry:
        if not re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256"))):
            problems.append(f"sha256 {entry.get('sha256')!r} is not 64 hex digits")
        if not entry.get("command"):
            problems.append("a file entry names the command that made it")
    config = entry.get("config")
    exists = config is not None and (REPO / config).is_file()
    if entry.get("status") == "planned":
        if "recipe" not in entry:
            problems.append("only a recipe entry may have a planned config")
        elif exists:
            problems.append(f'{config} exists now: drop "status": "planned" and {FIX}')
    elif config is not None and not exists:
        problems.append(f"config {config} does not exist")
    if "path" in entry:
        problems += _shipped_problems(entry)
    return problems


def _shipped_problems(entry: dict) -> list[str]:
    path = MANIFEST.parent / entry["path"]
    if not path.is_file():
        return [f"shipped file {path} is missing"]
    if hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
        return [f"shipped file {path} does not match its sha256"]
    return []


@pytest.mark.parametrize("entry", RAW, ids=[e["name"] for e in RAW])
def test_entry_matches_the_tree(entry):
    assert entry_problems(entry) == []


def test_entry_check_catches_mismatches():
    student = {
        "name": "s",
        "kind": "student",
        "backend": "torchvision",
        "command": "make s",
        "sha256": "0" * 64,
        "size": 1,
        "url": "https://h/s.pt",
    }
    assert entry_problems(student) == []
    assert entry_problems({**student, "sha256": "0" * 63}) == [f"sha256 {'0' * 63!r} is not 64 hex digits"]
    assert entry_problems({**student, "config": "configs/none.yaml"}) == [
        "config configs/none.yaml does not exist"
    ]
    assert entry_problems({**student, "config": "configs/none.yaml", "status": "planned"}) == [
        "only a recipe entry may have a planned config"
    ]
    recipe = {"name": "r", "kind": "student", "backend": "torchvision", "recipe": "make r"}
    assert entry_problems({**recipe, "config": "configs/none.yaml", "status": "planned"}) == []
    assert entry_problems({**student, "url": None, "path": "weights/none.pt"})[0].startswith("shipped file")


def test_render_follows_the_manifest(tmp_path):
    path = write_manifest(
        tmp_path / "m.json",
        [
            file_entry(
                "t-a",
                b"abc",
                "https://h/t-a.pt",
                pretrained="openai",
                metrics={"command": "python tools/train_teacher.py --eval-only", "values": {"acc": 91.234}},
            ),
            {"name": "s-b", "kind": "student", "backend": "detectron2", "recipe": "make s | tee log"},
        ],
    )
    text = render(load_manifest(path))
    assert "| `t-a` | distill-tiny-vit | openai | download | 0.0 MB |" in text
    assert "acc 91.23; measured by `python tools/train_teacher.py --eval-only`" in text
    assert "| `s-b` | detectron2 | - | - | recipe | - |" in text and "- recipe: `make s | tee log`" in text
