"""The segmenter's training samples (images and label maps read once, checked) and the dense teacher targets
for them (painted from a region store, read from the cache, or computed online)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch

from ....evaluation.sem_seg import read_sem_seg_png
from ....modeling.sem_seg import check_sem_seg_labels
from ....teacher.dense_targets import (
    DenseTargetCache,
    DenseTargetConfig,
    compute_dense_targets,
    dense_targets_from_store,
)
from ....utils.errors import DistillInputError
from ....utils.progress import job_progress


def dense_target_config(cfg) -> DenseTargetConfig:
    s = cfg.MODEL.DISTILL.SEM_SEG
    sha = ""
    if s.DENSE_TARGETS == "regions" and (s.PROPOSALS or not s.REGION_STORE):
        if not s.PROPOSALS or not os.path.isfile(s.PROPOSALS):
            raise DistillInputError(
                'dense targets "regions" need MODEL.DISTILL.SEM_SEG.PROPOSALS (a proposals json, '
                "e.g. the quickstart's proposals_train.json) or SEM_SEG.REGION_STORE",
                s.PROPOSALS or None,
            )
        sha = hashlib.sha256(Path(s.PROPOSALS).read_bytes()).hexdigest()
    return DenseTargetConfig(
        kind=s.DENSE_TARGETS,
        stride=s.DENSE_TARGET_STRIDE,
        input_scale=s.PIXELS_INPUT_SCALE,
        window_sizes=tuple(s.WINDOW_SIZES),
        window_stride=s.WINDOW_STRIDE,
        proposals_sha256=sha,
    )


def load_region_boxes(cfg, image_ids: Sequence[int]) -> dict | None:
    """{image_id: (N, 4) XYXY} from MODEL.DISTILL.SEM_SEG.PROPOSALS for the "regions" kind, else None."""
    from ....teacher.regions import load_proposals

    s = cfg.MODEL.DISTILL.SEM_SEG
    if s.DENSE_TARGETS != "regions" or not s.PROPOSALS:
        return None
    return load_proposals(s.PROPOSALS, list(image_ids), cfg.MODEL.DISTILL.VILD.NUM_DISTILL_PROPOSALS)


def load_sem_seg_samples(
    dataset_dicts: Sequence[dict], num_values: int, ignore_value: int = 255
) -> list[dict]:
    """Read every image and label map once (the synthetic benchmark fits in memory), with the label checks.

    Returns dicts {"image_id", "file_name", "image": (3, H, W) uint8, "labels": (H, W) int64 pixel values}.
    """
    from ....data.images import read_image_rgb

    out = []
    for d in dataset_dicts:
        if "sem_seg_file_name" not in d:
            raise DistillInputError(f"image {d.get('image_id')} has no sem_seg_file_name", d.get("file_name"))
        img = read_image_rgb(d["file_name"])
        path = d["sem_seg_file_name"]
        # decoded without the value check: check_sem_seg_labels gives the fuller message
        lab = read_sem_seg_png(path, num_classes=1 << 16, ignore_label=ignore_value)
        lab = check_sem_seg_labels(lab, path, num_values, ignore_value, tuple(img.shape[1:]))
        out.append(
            {
                "image_id": d["image_id"],
                "file_name": d["file_name"],
                "image": img,
                "labels": torch.from_numpy(lab),
            }
        )
    return out


def dense_targets_for(
    samples: Sequence[dict],
    teacher,
    tcfg: DenseTargetConfig,
    cache_root: str | None,
    boxes: dict | None = None,
    progress: bool = False,
    store=None,
) -> dict:
    """{image_id: (D, h, w) fp16} for every sample: painted from `store` (a region store, "regions" kind) where
    it holds the image, else from the cache (filled on first use) or computed online; `boxes` {image_id: (N, 4)}
    for the "regions" kind."""
    cache = DenseTargetCache(cache_root, teacher, tcfg) if cache_root else None
    out = {}
    for s in job_progress(samples, progress, desc=f"dense targets ({tcfg.kind})", unit="img"):
        if store is not None and s["image_id"] in store:
            out[s["image_id"]] = dense_targets_from_store(
                store, s["image_id"], *s["image"].shape[1:], tcfg
            ).half()
            continue
        if tcfg.kind == "regions" and boxes is None:
            raise DistillInputError(
                f"image {s['image_id']} is not in MODEL.DISTILL.SEM_SEG.REGION_STORE and no "
                "SEM_SEG.PROPOSALS give its boxes",
                s["file_name"],
            )
        b = None if boxes is None else boxes.get(s["image_id"], torch.zeros(0, 4))
        out[s["image_id"]] = (
            cache.get(s["image_id"], s["image"], s["file_name"], b)
            if cache is not None
            else compute_dense_targets(teacher, s["image"], tcfg, b).half()
        )
    return out
