"""Drawing detections, for the applications that show them (tools/demo.py's outputs, the web demo, the
quickstart's picture), whichever backend or zero-shot detector made them. Detections are dicts of tensors in
original pixels: boxes (N, 4) XYXY, scores (N,), labels (N,) vocabulary indices and, with masks, masks
(N, H, W): BoxMasks or float 0/1."""

from __future__ import annotations

import numpy as np
import torch

from ..modeling.masks import iter_local_masks
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
