"""Zero-shot detection by the teacher alone: ViLD's "CLIP on cropped regions" baseline.

Class-agnostic proposals (a trained proposal network's, or a training-free generator's) are cropped at 1x
and 1.5x, embedded by the teacher's image tower (the two embeddings normalised, summed, re-normalised, as
ViLD's region targets), compared by cosine with the vocabulary's text embeddings at the teacher's logit
scale, and turned into class probabilities by a softmax over the vocabulary (CLIP has no background
class; ViLD's baseline has none either). A detection's score is the class probability, optionally times
the proposal's objectness (ViLD: their geometric mean, `objectness_weight` 0.5); per-class NMS; boxes are the
proposals themselves (nothing regresses them). No training: what a user with a real CLIP can run on day one,
and the reference point distillation must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..ops.nms import batched_nms
from ..teacher.teacher import Teacher, check_boxes

# image (3, H, W) uint8 → (boxes (K, 4) XYXY pixels, objectness (K,) in [0, 1])
Proposer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ZeroShotConfig:
    """How proposals become detections (defaults: ViLD's baseline without objectness, LVIS-like NMS)."""

    scales: tuple[float, ...] = (1.0, 1.5)  # crop scales, ensembled (ViLD: 1x and 1.5x)
    objectness_weight: float = 0.0  # a in p^(1 - a) * objectness^a; 0.5 = ViLD's geometric mean
    nms_thresh: float = 0.5  # per-class NMS IoU
    score_thresh: float = 0.0  # candidates scoring at most this are dropped before NMS
    max_detections: int = 100  # per image
    max_candidates: int = 10_000  # (proposal, class) pairs entering NMS, the best first
    max_logit_scale: float = 100.0  # CLIP clamps its learned temperature there
    geometry: str = "center"  # crop geometry (see distill.teacher.crops)
    batch_size: int = 256  # crops per teacher forward

    def __post_init__(self):
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError("scales must be positive and at least one")
        if not 0.0 <= self.objectness_weight <= 1.0:
            raise ValueError("objectness_weight must be in [0, 1]")
        if not 0.0 < self.nms_thresh <= 1.0 or self.max_detections < 1 or self.max_candidates < 1:
            raise ValueError("need 0 < nms_thresh <= 1, max_detections >= 1 and max_candidates >= 1")


def logit_scale(teacher: Teacher, cap: float = 100.0) -> float:
    """The teacher's learned temperature exp(logit_scale) (CLIP: 100), at most `cap`."""
    scale = getattr(teacher.model, "logit_scale", None)
    return cap if scale is None else min(float(scale.detach().float().exp()), cap)


def class_probabilities(regions: torch.Tensor, classes: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax over the vocabulary of scaled cosines.

    Args: regions (N, D) and classes (C, D), both L2-normalised; scale: the logit scale (CLIP: 100).
    Returns: (N, C), rows summing to 1.
    """
    return torch.softmax(scale * regions.float() @ classes.float().t(), dim=1)


def combine_objectness(probs: torch.Tensor, objectness: torch.Tensor | None, weight: float) -> torch.Tensor:
    """(N, C) class probabilities, (N,) objectness in [0, 1] → (N, C) p^(1 - w) * objectness^w."""
    if objectness is None or weight == 0.0:
        return probs
    obj = objectness.float().clamp(0.0, 1.0)[:, None]
    return probs.pow(1.0 - weight) * obj.pow(weight)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, cfg: ZeroShotConfig) -> dict:
    """Per-class NMS over every (proposal, class) pair.

    Args: boxes (N, 4) XYXY; scores (N, C).
    Returns: {"boxes": (K, 4), "scores": (K,), "labels": (K,) int64 class indices}, best first, K <=
        cfg.max_detections.
    """
    flat = scores.flatten()
    top = torch.topk(flat, min(cfg.max_candidates, flat.numel())).indices
    top = top[flat[top] > cfg.score_thresh]
    c = scores.shape[1]
    cand_boxes, cand_scores, labels = boxes[top // c], flat[top], top % c
    keep = batched_nms(cand_boxes.float(), cand_scores, labels, cfg.nms_thresh)[: cfg.max_detections]
    return {"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": labels[keep]}


def empty_detections() -> dict:
    return {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
    }


@torch.no_grad()
def detect_regions(
    teacher: Teacher,
    image: torch.Tensor,
    boxes: torch.Tensor,
    objectness: torch.Tensor | None,
    classes: torch.Tensor,
    cfg: ZeroShotConfig = ZeroShotConfig(),
) -> dict:
    """Zero-shot detections of one image from its class-agnostic proposals.

    Args:
        teacher: the open_clip teacher whose text tower made `classes`.
        image: (3, H, W) uint8 RGB.
        boxes: (N, 4) XYXY proposals in the image's pixels; unusable ones (empty, outside) are dropped.
        objectness: (N,) in [0, 1], or None.
        classes: (C, D) L2-normalised class embeddings of the same teacher.
    Returns:
        {"boxes": (K, 4) XYXY inside the image, "scores": (K,) in [0, 1], "labels": (K,) int64 indices
        into `classes`}, best first.
    """
    if classes.ndim != 2 or classes.shape[1] != teacher.dim:
        raise ValueError(f"class embeddings must be (C, {teacher.dim}), got {tuple(classes.shape)}")
    h, w = image.shape[1:]
    boxes = boxes.float().clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    ok = check_boxes(boxes, h, w)
    boxes = boxes[ok]
    if boxes.shape[0] == 0:
        return empty_detections()
    regions = teacher.encode_regions([image], [boxes], cfg.scales, cfg.geometry, cfg.batch_size).cpu()
    probs = class_probabilities(
        regions, classes.to(regions.device), logit_scale(teacher, cfg.max_logit_scale)
    )
    obj = objectness[ok.to(objectness.device)].cpu() if objectness is not None else None
    return select_detections(boxes.cpu(), combine_objectness(probs, obj, cfg.objectness_weight), cfg)


class ZeroShotDetector:
    """A teacher, a vocabulary and a proposal source: image in, detections out.

    detector = ZeroShotDetector(teacher, class_embeddings, selective_search_proposer())
    det = detector(image)   # (3, H, W) uint8 → {"boxes", "scores", "labels"}
    """

    def __init__(
        self,
        teacher: Teacher,
        classes: torch.Tensor,
        proposer: Proposer,
        cfg: ZeroShotConfig = ZeroShotConfig(),
    ):
        self.teacher, self.classes, self.proposer, self.cfg = teacher, classes, proposer, cfg

    def __call__(self, image: torch.Tensor) -> dict:
        boxes, objectness = self.proposer(image)
        return detect_regions(self.teacher, image, boxes, objectness, self.classes, self.cfg)


def selective_search_proposer(max_proposals: int = 300, max_side: int = 256) -> Proposer:
    """The training-free proposal source (see `distill.modeling.selective_search`); its scores are ranks, not
    objectness, so keep `objectness_weight` 0 with it."""
    from .selective_search import SelectiveSearchConfig, selective_search

    cfg = SelectiveSearchConfig(max_proposals=max_proposals, max_side=max_side)
    return lambda image: selective_search(image, cfg)
