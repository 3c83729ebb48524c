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
from .checks import check_teacher, load_class_embeddings
from .domain import check_names, training_world
from .embeddings import ClassEmbeddings
from .learned_prompts import describe, is_learned_prompts
from .teacher import create_teacher

NAMED = ("synthetic", "coco", "lvis", "custom")
KEYWORDS = NAMED[:-1]  # the named sets a --vocabulary may give by name


def _json_vocabulary(path: Path, what: str) -> tuple[list[str], list]:
    """A dataset json's category names and ids, in id order."""
    data = read_json(path, what=what)
    cats = data.get("categories") if isinstance(data, dict) else None
    if not cats or not all(isinstance(c, dict) and "id" in c and "name" in c for c in cats):
        raise DistillInputError("json has no 'categories' list with id and name", path)
    cats = sorted(cats, key=lambda c: c["id"])
    return [c["name"] for c in cats], [c["id"] for c in cats]


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a long list of names is no file name (ENAMETOOLONG)
        return False


def read_vocabulary(spec: str) -> tuple[list[str], dict]:
    """(class names, provenance) from a dataset json (its categories by id), a text file of names (one a line
    or comma separated) or a comma-separated list."""
    path = Path(spec)
    if path.suffix.lower() == ".npy":  # resolve_vocabulary takes these; a tool that encodes names cannot
        raise DistillInputError(
            "a .npy holds class embeddings, not class names: give the names to encode", path
        )
    if path.suffix.lower() in (".json", ".txt") or _is_file(path):
        if not _is_file(path):
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
        names = [  # one name a line, or comma separated
            n.strip()
            for ln in text.splitlines()
            if not ln.lstrip().startswith("#")
            for n in ln.split(",")
            if n.strip()
        ]
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
    check_names(training_world(arch, pretrained or None), names)  # a cached answer is as meaningless
    if existing and not Path(existing).is_file():  # a typo'd path must not quietly mean "encode anew"
        raise DistillInputError(
            "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS: class embeddings file not found", existing
        )
    if existing:
        emb = ClassEmbeddings.load(existing)
        teacher = SimpleNamespace(ARCH=arch, PRETRAINED=pretrained)
        check_teacher(emb.provenance, teacher, "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS", existing)
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


FORMS = 'class names "a,b,c", a text file of names, a dataset .json or a .npy of class embeddings'


def vocabulary_names(
    spec: str, flag: str = "--vocabulary", keywords: tuple[str, ...] = KEYWORDS
) -> tuple[list[str], dict]:
    """(class names, provenance) of a command line's vocabulary given by name: one of `keywords` (named sets),
    a dataset json, a text file of names or "name1,name2,..."; `flag` names it in the errors."""
    if not spec or not spec.strip():
        named = f", or {' / '.join(keywords)}" if keywords else ""
        raise DistillInputError(f"{flag}: empty vocabulary; give {FORMS}{named}")
    spec = spec.strip()
    if spec in keywords:
        names, prov = named_vocabulary(spec), {"vocabulary": spec}
    else:
        names, prov = read_vocabulary(spec)
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise DistillInputError(f"class name {n!r} appears twice in {flag}")
        seen.add(n)
    return names, prov


def resolve_vocabulary(
    spec: str, cfg, flag: str = "--vocabulary", keywords: tuple[str, ...] = KEYWORDS
) -> ClassEmbeddings:
    """A command line's vocabulary in any accepted form as (C, D) class embeddings for cfg's model: a .npy of
    class embeddings (its sidecar checked, and its teacher against MODEL.DISTILL.TEACHER as training checks
    its own), or names (`vocabulary_names`) encoded by MODEL.DISTILL.TEACHER (cached), or taken from
    MODEL.DISTILL.TEST_CLASS_EMBEDDINGS when it holds exactly these names."""
    if spec and spec.strip().lower().endswith(".npy"):
        emb = load_class_embeddings(spec.strip(), cfg, flag)
        made = emb.provenance.get("teacher")
        made = made if isinstance(made, dict) else {}  # a hand-made file records no teacher
        check_names(training_world(str(made.get("arch") or ""), made.get("pretrained")), emb.class_names)
        return emb
    names, _ = vocabulary_names(spec, flag, keywords)
    t = cfg.MODEL.DISTILL.TEACHER
    return vocabulary_embeddings(
        names, t.ARCH, t.PRETRAINED, t.TEMPLATES, cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS
    )


def training_vocabulary(cfg, meta: dict) -> ClassEmbeddings:
    """The vocabulary a detector was trained on, from MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS when that file is
    there, else from its checkpoint alone: the class names its metadata (`meta`, utils.checkpoint) records,
    encoded by the config's teacher with the recorded prompt templates."""
    path = cfg.MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS
    if path and Path(path).is_file():
        return load_class_embeddings(path, cfg, "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS")
    record = meta.get("vocabulary") if isinstance(meta, dict) else None
    if not isinstance(record, dict) or not record.get("class_names"):
        raise DistillInputError(
            "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS not found and the checkpoint records no training "
            "vocabulary (an older one): set it to the class embeddings the model was trained on",
            path or None,
        )
    t = cfg.MODEL.DISTILL.TEACHER
    prov = record.get("provenance") if isinstance(record.get("provenance"), dict) else {}
    check_teacher(prov, t, "the checkpoint's training vocabulary")
    templates = prov.get("templates") or t.TEMPLATES
    return vocabulary_embeddings(list(record["class_names"]), t.ARCH, t.PRETRAINED, templates)


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
