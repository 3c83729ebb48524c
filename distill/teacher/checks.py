"""Inputs checked where they enter against what they must fit: class embeddings against the config's teacher,
the region store against the class embeddings and the training images. Each mismatch that would train or
evaluate to a wrong result with exit 0 is one DistillInputError naming the file to fix."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..utils.errors import DistillInputError
from .embeddings import ClassEmbeddings

logger = logging.getLogger(__name__)


def _same_weights(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and os.path.samefile(pa, pb)


def teacher_mismatch(provenance: dict, teacher_cfg) -> str | None:
    """Why embeddings with this provenance do not come from the config's teacher (None when they may)."""
    made = provenance.get("teacher") if isinstance(provenance, dict) else None
    if not isinstance(made, dict) or not made.get("arch"):
        return None  # no record (hand-made file): nothing to compare
    arch, pre = str(made.get("arch")), str(made.get("pretrained") or "")
    want_pre = str(teacher_cfg.PRETRAINED or "")
    # a model-zoo teacher is recorded by its zoo name, which the config may give as ARCH or PRETRAINED
    if want_pre and pre and _same_weights(pre, want_pre):
        return None
    if arch != teacher_cfg.ARCH and pre != teacher_cfg.ARCH:
        return f"made by teacher {arch}/{pre or '-'}, the config's is {teacher_cfg.ARCH}/{want_pre or '-'}"
    if want_pre and pre and not _same_weights(pre, want_pre):
        return f"made by teacher {arch}/{pre}, the config's is {teacher_cfg.ARCH}/{want_pre}"
    return None


def load_class_embeddings(
    path: str, cfg, key: str, expected_dim: int | None = None, expected_names: Sequence[str] | None = None
) -> ClassEmbeddings:
    """ClassEmbeddings.load plus the check against cfg.MODEL.DISTILL.TEACHER; `key` is the config key (for the
    message), e.g. "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS"."""
    if not path:
        raise DistillInputError(f"{key} is not set (tools/dump_text_embeddings.py makes one)")
    emb = ClassEmbeddings.load(path, expected_dim=expected_dim, expected_names=expected_names)
    check_teacher(emb.provenance, cfg.MODEL.DISTILL.TEACHER, key, path)
    return emb


def check_teacher(provenance: dict, teacher_cfg, key: str, path: str | os.PathLike | None = None) -> None:
    """The one provenance check of every tool: class embeddings (their `provenance`) made by another teacher
    than `teacher_cfg` (a MODEL.DISTILL.TEACHER node) are one DistillInputError naming `key` (a flag or config
    key), since they would score nothing right with exit 0."""
    why = teacher_mismatch(provenance, teacher_cfg)
    if why:
        raise DistillInputError(
            f"{key}: {why} (MODEL.DISTILL.TEACHER); redo them with "
            "tools/dump_text_embeddings.py or fix the config",
            path,
        )


def check_region_store(
    store_path: str, vocab: ClassEmbeddings, vocab_key: str, image_ids: Iterable[int], teacher_cfg=None
):
    """The region store must hold the class embeddings' dim and teacher and cover the training images.

    Returns the opened RegionEmbeddingStore. Covering none of the images is an error (the ViLD-image loss
    would be 0 all run); covering under half of them is a warning.
    """
    from ..data.region_store import RegionEmbeddingStore

    store = RegionEmbeddingStore(store_path)
    store_teacher = store.meta.get("teacher", {}) if isinstance(store.meta.get("teacher"), dict) else {}
    if teacher_cfg is not None:
        why = teacher_mismatch({"teacher": store_teacher}, teacher_cfg)
        if why:
            raise DistillInputError(f"region store {why} (MODEL.DISTILL.TEACHER)", store_path)
    if store.dim != vocab.dim:
        vt = (vocab.provenance.get("teacher") or {}).get("arch", "?")
        raise DistillInputError(
            f"{vocab_key} holds {vocab.dim}-dim embeddings (teacher {vt}) but the region "
            f"store {store_path} holds {store.dim}-dim ones (teacher "
            f"{store_teacher.get('arch', '?')}): one of them is from another teacher"
        )
    ids = set(image_ids)
    covered = sum(1 for i in ids if i in store)
    if ids and covered == 0:
        raise DistillInputError(
            f"region store covers none of the {len(ids)} training images (another dataset's "
            "store?): the ViLD-image loss would be 0 all run; set MODEL.DISTILL.VILD.REGION_STORE "
            "to the store of DATASETS.TRAIN, or train MODEL.DISTILL.METHOD vild_text",
            store_path,
        )
    if ids and covered < len(ids) / 2:
        logger.warning("region store %s covers only %d of %d training images", store_path, covered, len(ids))
    return store
