"""Non-maximum suppression: `distill::nms` on CPU (torchvision.ops.nms's result, several times faster for
RPN-sized inputs), torchvision's kernels elsewhere and when the extension is not built."""
from __future__ import annotations

import torch
import torchvision

from . import _loader


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """boxes (N, 4) XYXY, scores (N,) → kept indices (K,) int64 by decreasing score (torchvision.ops.nms)."""
    if boxes.device.type == "cpu" and boxes.dtype in (torch.float32, torch.float64):
        if _loader.ops_available():
            return torch.ops.distill.nms(boxes, scores, float(iou_threshold))
        _loader.require_or_warn()
    return torchvision.ops.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.batched_nms (NMS within each value of idxs (N,)) with `nms` per group, which on CPU is
    faster than torchvision's coordinate-offset trick as well as its per-group loop."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.device.type != "cpu":
        return torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(idxs):
        where = torch.where(idxs == group)[0]
        keep_mask[where[nms(boxes[where], scores[where], iou_threshold)]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]
