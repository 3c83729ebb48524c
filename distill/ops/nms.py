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


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """torchvision.ops.batched_nms (NMS within each value of idxs (N,)), with its two strategies on CPU (one `nms`
    of boxes offset per group up to 1000 boxes, one `nms` per group above), so the result is torchvision's."""
    if boxes.device.type != "cpu":
        return torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.numel() <= 4000:
        offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(idxs):
        where = torch.where(idxs == group)[0]
        keep_mask[where[nms(boxes[where], scores[where], iou_threshold)]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]
