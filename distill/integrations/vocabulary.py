"""A vocabulary given on a command line or in a form → `ClassEmbeddings`.

spec: a `.npy` written by tools/dump_text_embeddings.py (its sidecar is checked), "synthetic" (the synthetic
benchmark's classes) or comma-separated class names, encoded by the config's teacher.
"""

from __future__ import annotations

from pathlib import Path

from ..teacher.embeddings import ClassEmbeddings
from ..utils.errors import DistillInputError


def parse_names(text: str) -> list[str]:
    """ "a, b,c" → ["a", "b", "c"]; empty or repeated names are an error."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names:
        raise DistillInputError("empty vocabulary: give class names separated by commas")
    if len(set(names)) != len(names):
        raise DistillInputError("a class name appears twice in the vocabulary")
    return names


def encode_names(names: list[str], teacher_cfg, teacher=None) -> ClassEmbeddings:
    """Encode with the teacher of MODEL.DISTILL.TEACHER (or the `teacher` given), prompt ensemble TEMPLATES."""
    from ..teacher import create_teacher

    teacher = teacher or create_teacher(teacher_cfg.ARCH, teacher_cfg.PRETRAINED or None)
    emb = teacher.encode_text(names, teacher_cfg.TEMPLATES).cpu()
    return ClassEmbeddings(emb, names, {**teacher.provenance(), "templates": teacher_cfg.TEMPLATES})


def resolve_vocabulary(spec: str, cfg, teacher=None) -> ClassEmbeddings:
    """spec (see the module doc) → embeddings; the config's TEST_CLASS_EMBEDDINGS when it holds these names."""
    if spec.endswith(".npy") or Path(spec).is_file():
        return ClassEmbeddings.load(spec)
    if spec == "synthetic":
        from ..data.synthetic import SYNTHETIC_CATEGORIES

        names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    else:
        names = parse_names(spec)
    test = cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS
    if test and Path(test).is_file():
        emb = ClassEmbeddings.load(test)
        if emb.class_names == names:
            return emb
    return encode_names(names, cfg.MODEL.DISTILL.TEACHER, teacher)
