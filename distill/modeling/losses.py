"""ViLD losses as pure functions of tensors (no framework objects, no side effects)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

NOVEL_LOGIT_MODES = ("zero", "neg_inf")


def vild_text_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    novel_mask: torch.Tensor | None = None,
    novel_mode: str = "zero",
) -> torch.Tensor:
    """Cross entropy over [classes, background] (ViLD-text).

    Args:
        logits: (N, C + 1), background last.
        labels: (N,) in [0, C]; C is background.
        novel_mask: (C,) bool; only needed when the training vocabulary also holds novel classes (ViLD's
            default trains on base classes only). "zero": their logits are multiplied by 0 but stay in the
            denominator (ViLD); "neg_inf": set to -1e11 (DetPro), i.e. dropped.
    Returns:
        scalar, mean over the N sampled RoIs (0 with gradient when N == 0).
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if novel_mask is not None and novel_mask.any():
        if novel_mode not in NOVEL_LOGIT_MODES:
            raise ValueError(f"novel_mode must be one of {NOVEL_LOGIT_MODES}, got {novel_mode!r}")
        mask = torch.cat([novel_mask.to(logits.device), novel_mask.new_zeros(1).to(logits.device)])
        if novel_mode == "zero":
            logits = logits * (~mask).to(logits.dtype)
        else:
            logits = logits.masked_fill(mask, -1e11)
    return F.cross_entropy(logits, labels)


def vild_image_loss(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 between normalised student and teacher region embeddings (ViLD-image).

    Args:
        student: (N, D) L2-normalised student region embeddings of the distillation proposals.
        teacher: (N, D) the teacher's embeddings of the same boxes (normalised here, they may be fp16).
        valid: (N,) bool, False for padding.
    Returns:
        scalar: sum over D of |s - t|, averaged over valid proposals (0 with gradient when none).
    """
    t = F.normalize(teacher.to(student.dtype), dim=-1)
    per = (student - t).abs().sum(-1)
    if valid is not None:
        per = per[valid]
    if per.numel() == 0:
        return student.sum() * 0.0
    return per.mean()


def pixel_distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: str = "l1", valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Dense distillation: (B, D, H, W) student vs teacher pixel embeddings, both normalised over D.

    kind "l1": sum over D of |s - t|; "cosine": 1 - cos. Averaged over valid pixels ((B, H, W) bool).
    """
    s = F.normalize(student, dim=1)
    t = F.normalize(teacher.to(student.dtype), dim=1)
    if kind == "l1":
        per = (s - t).abs().sum(1)
    elif kind == "cosine":
        per = 1.0 - (s * t).sum(1)
    else:
        raise ValueError(f"kind must be 'l1' or 'cosine', got {kind!r}")
    if valid is not None:
        per = per[valid]
    return per.mean() if per.numel() else student.sum() * 0.0
