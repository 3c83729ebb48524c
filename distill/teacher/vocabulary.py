"""Vocabularies (lists of class names) and their class embeddings for the tools: from a dataset json, a
names file, a comma list or a named set (synthetic, COCO, LVIS); text embeddings cached by teacher and names."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

from ..data import ov_coco_categories
from ..data.synthetic import SYNTHETIC_CATEGORIES
from ..utils.errors import DistillInputError
from ..utils.io import read_json
from .checks import teacher_mismatch
from .embeddings import ClassEmbeddings
from .learned_prompts import describe, is_learned_prompts
from .teacher import create_teacher

NAMED = ("synthetic", "coco", "lvis", "custom")


def _json_vocabulary(path: Path, what: str) -> tuple[list[str], list]:
    """A dataset json's category names and ids, in id order."""
    data = read_json(path, what=what)
    cats = data.get("categories") if isinstance(data, dict) else None
    if not cats or not all(isinstance(c, dict) and "id" in c and "name" in c for c in cats):
        raise DistillInputError("json has no 'categories' list with id and name", path)
    cats = sorted(cats, key=lambda c: c["id"])
    return [c["name"] for c in cats], [c["id"] for c in cats]


def read_vocabulary(spec: str) -> tuple[list[str], dict]:
    """(class names, provenance) from a dataset json, a names file or a comma-separated list."""
    path = Path(spec)
    if path.suffix.lower() in (".json", ".txt") or path.is_file():
        if not path.is_file():
            raise DistillInputError("vocabulary file not found", path)
        if path.suffix.lower() == ".json":
            names, ids = _json_vocabulary(path, "dataset json")
            return names, {"vocabulary": str(path), "category_ids": ids}
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DistillInputError(
                "not a text file of class names (one a line) nor a dataset .json", path
            ) from None
        names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not names:
            raise DistillInputError("names file is empty", path)
        return names, {"vocabulary": str(path)}
    if "," not in spec and ("/" in spec or os.sep in spec or path.suffix):
        raise DistillInputError(
            "vocabulary file not found (a one-class vocabulary has no '/' or '.'; a list needs commas)", path
        )
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise DistillInputError("empty vocabulary")
    return names, {"vocabulary": "list"}


def named_vocabulary(kind: str, custom: str | None = None) -> list[str]:
    """The class names of "synthetic", "coco" (OV-COCO's 65), "lvis" (from $DISTILL_DATASETS/lvis/lvis_v1_val.json)
    or "custom" (`custom`: "name1,name2,...")."""
    if kind == "synthetic":
        return [c["name"] for c in SYNTHETIC_CATEGORIES]
    if kind == "coco":
        return [c["name"] for c in ov_coco_categories()]
    if kind == "lvis":
        path = Path(os.environ.get("DISTILL_DATASETS", "datasets")) / "lvis" / "lvis_v1_val.json"
        names, _ = _json_vocabulary(path, "LVIS annotation file (for the LVIS class names)")
        return names
    names = [n.strip() for n in (custom or "").split(",") if n.strip()]
    if not names:
        raise DistillInputError(
            '--vocabulary custom needs --custom-vocabulary "name1,name2,..." (empty vocabulary)'
        )
    if len(set(names)) != len(names):
        raise DistillInputError("a class name appears twice in --custom-vocabulary")
    return names


def vocabulary_embeddings(
    names: list[str], arch: str, pretrained: str, templates: str, existing: str | None = None
) -> ClassEmbeddings:
    """`existing` (a ClassEmbeddings file) when it holds exactly these names, else the teacher's text embeddings
    (C, D), computed once and cached under $DISTILL_CACHE/text_embeddings."""
    if existing and not Path(existing).is_file():  # a typo'd path must not quietly mean "encode anew"
        raise DistillInputError(
            "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS: class embeddings file not found", existing
        )
    if existing:
        emb = ClassEmbeddings.load(existing)
        why = teacher_mismatch(emb.provenance, SimpleNamespace(ARCH=arch, PRETRAINED=pretrained))
        if why:  # a file of another teacher would score nothing right
            raise DistillInputError(
                f"MODEL.DISTILL.TEST_CLASS_EMBEDDINGS: {why} (MODEL.DISTILL.TEACHER)", existing
            )
        if emb.class_names == names:
            return emb
    tag = templates + (
        ":" + describe(templates)["learned_prompts"]["sha256"] if is_learned_prompts(templates) else ""
    )  # a retrained file is a new key
    key = hashlib.sha256("\n".join([arch, pretrained, tag, *names]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" / "distill")) / "text_embeddings"
    path = cache / f"{key}.npy"
    if path.is_file():
        return ClassEmbeddings.load(path, expected_names=names)
    teacher = create_teacher(arch, pretrained or None)
    emb = ClassEmbeddings(
        teacher.encode_text(names, templates).cpu(), names, {**teacher.provenance(), "templates": templates}
    )
    emb.save(path)
    return emb


def resolve_vocabulary(spec: str, cfg) -> ClassEmbeddings:
    """A command line's --vocabulary: a .npy of class embeddings (its sidecar checked), a named set (synthetic,
    coco, lvis) or "name1,name2,..."; names are encoded by cfg's MODEL.DISTILL.TEACHER (cached), or taken from
    MODEL.DISTILL.TEST_CLASS_EMBEDDINGS when it holds exactly these names."""
    if spec.endswith(".npy"):
        return ClassEmbeddings.load(spec)
    names = named_vocabulary(spec) if spec in NAMED[:-1] else named_vocabulary("custom", spec)
    t = cfg.MODEL.DISTILL.TEACHER
    return vocabulary_embeddings(
        names, t.ARCH, t.PRETRAINED, t.TEMPLATES, cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS
    )


def base_vocabulary(spec: str, names: list[str]) -> list[str]:
    """Names of the categories of dataset json `spec` with "split": "base", in the order of `names`."""
    if Path(spec).suffix.lower() != ".json":
        raise DistillInputError('--base-output needs a dataset json --vocabulary (its categories\' "split")')
    split = {c["name"]: c.get("split") for c in read_json(spec, what="dataset json")["categories"]}
    base = [n for n in names if split.get(n) == "base"]
    if not base:
        raise DistillInputError(
            'no category has "split": "base" (files of tools/prepare_ov_*.py have it)', spec
        )
    return base
