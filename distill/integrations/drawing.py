"""Drawing detections, shared by both backends' demo modules (each supplies its own model loading and
prediction). Detections are dicts of tensors in original pixels: boxes (N, 4) XYXY, scores (N,), labels (N,)
vocabulary indices and, with masks, masks (N, H, W): BoxMasks or float 0/1."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from ..data.datasets import synthetic_dataset
from ..data.images import read_image_rgb
from ..modeling.masks import iter_local_masks
from ..teacher.checks import load_class_embeddings
from ..utils.io import atomic_write_bytes
from ..utils.visualize import draw_detections


def render(
    image_rgb: np.ndarray,
    det: dict,
    names,
    novel=None,
    score_thresh: float = 0.3,
    scale: int = 3,
    max_shown: int = 12,
):
    """Draw the best detections: above `score_thresh`, one box per object (class-agnostic NMS at 0.5)."""
    from torchvision.ops import nms

    keep = torch.where(det["scores"] >= score_thresh)[0]
    keep = keep[nms(det["boxes"][keep].float(), det["scores"][keep].float(), 0.5)][:max_shown]
    masks = list(iter_local_masks(det["masks"][keep])) if "masks" in det else None
    return draw_detections(
        image_rgb,
        det["boxes"][keep].cpu().numpy(),
        det["labels"][keep].tolist(),
        det["scores"][keep].tolist(),
        names,
        masks,
        novel,
        scale,
    )


def draw_predictions_grid(
    load_for_inference: Callable,
    predict: Callable,
    cfg,
    weights: str,
    bench_root: str | Path,
    out_png: str | Path,
    n: int = 6,
) -> Path:
    """Detections of the test vocabulary on the first `n` validation images that hold a novel object.
    `load_for_inference(cfg, weights, vocab, novel)` and `predict(model, cfg, d)` come from a backend."""
    dicts, meta = synthetic_dataset(bench_root, "val")
    vocab = load_class_embeddings(
        cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS,
        cfg,
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        expected_names=meta.thing_classes,
    )
    novel = torch.zeros(len(meta.thing_classes), dtype=torch.bool)
    novel[meta.contiguous_ids("novel")] = True
    model = load_for_inference(cfg, weights, vocab, novel)
    picks = [d for d in dicts if any(novel[a["category_id"]] for a in d["annotations"])][:n]
    tiles = []
    for d in picks:
        rgb = read_image_rgb(d["file_name"]).permute(1, 2, 0).numpy()
        tiles.append(
            render(np.ascontiguousarray(rgb), predict(model, cfg, d), meta.thing_classes, novel.tolist())
        )
    grid = np.concatenate(tiles, 1) if tiles else np.zeros((8, 8, 3), np.uint8)
    ok, buf = cv2.imencode(".png", grid[:, :, ::-1])
    atomic_write_bytes(out_png, buf.tobytes())
    return Path(out_png)
