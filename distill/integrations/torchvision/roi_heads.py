"""Open-vocabulary RoI heads on torchvision: proposal sampling and box coding from torchvision's RoIHeads,
everything else (pooling, the box predictor with the distillation method's losses and scores) from the core.

Labels: torchvision counts background as 0 and classes from 1; the core classifier puts background last.
`_to_core_labels` converts at this boundary only.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, maskrcnn_loss
from torchvision.ops import boxes as box_ops

from ...methods import METHOD_TARGETS
from ...modeling.ov_predictor import (
    OpenVocabBoxPredictor,
    StepContext,
    image_id_tensor,
    split_sampled_and_extra,
)
from ...modeling.poolers import MultiScaleRoIPooler
from ...ops.nms import batched_nms

FPN_LEVELS = ("0", "1", "2", "3")  # P2-P5 of torchvision's BackboneWithFPN


def _to_core_labels(tv_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.where(tv_labels == 0, torch.full_like(tv_labels, num_classes), tv_labels - 1)


class OpenVocabROIHeads(RoIHeads):
    """Box head → `OpenVocabBoxPredictor` (region embeddings, text classifier, the method's losses and scores,
    class-agnostic box deltas); class-agnostic mask head. The method's extra RoIs (e.g. ViLD's region-store
    boxes) are pooled in the same call as the sampled RoIs and get no box or class loss.

    Args:
        box_pooler / mask_pooler: `MultiScaleRoIPooler` over P2-P5.
        box_head: pooled (N, C, 7, 7) → (N, F).
        box_predictor: `OpenVocabBoxPredictor` over F.
        mask_head: (N, C, 14, 14) → (N, 1, 28, 28) or None.
    """

    def __init__(
        self,
        box_pooler: MultiScaleRoIPooler,
        box_head: nn.Module,
        box_predictor: OpenVocabBoxPredictor,
        mask_pooler: MultiScaleRoIPooler | None,
        mask_head: nn.Module | None,
        *,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        smooth_l1_beta: float = 0.0,
    ):
        super().__init__(
            None,
            box_head,
            None,
            fg_iou_thresh,
            bg_iou_thresh,
            batch_size_per_image,
            positive_fraction,
            bbox_reg_weights,
            score_thresh,
            nms_thresh,
            detections_per_img,
        )
        self.box_pooler = box_pooler
        self.box_predictor = box_predictor
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.smooth_l1_beta = smooth_l1_beta

    def has_mask(self) -> bool:
        return self.mask_head is not None

    @property
    def classifier(self):
        return self.box_predictor.classifier

    @property
    def novel_mask(self) -> torch.Tensor:
        return self.box_predictor.novel_mask

    def set_vocabulary(self, vocabulary, novel_mask: torch.Tensor | None = None) -> None:
        """Score another vocabulary (e.g. base + novel at test time); `novel_mask` (C,) marks its novel classes."""
        self.box_predictor.set_vocabulary(vocabulary, novel_mask)

    def vocabulary_state(self) -> tuple:
        return self.box_predictor.vocabulary_state()

    def restore_vocabulary(self, state: tuple) -> None:
        self.box_predictor.restore_vocabulary(state)

    # ------------------------------------------------------------------ shared pieces
    def _levels(self, features: OrderedDict) -> list[torch.Tensor]:
        return [features[k] for k in FPN_LEVELS]

    def _box_features(self, feats: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        return self.box_head(self.box_pooler(feats, boxes))

    # ------------------------------------------------------------------ training
    def _losses(self, feats, proposals, targets, batch, objectness=None) -> dict[str, torch.Tensor]:
        device = proposals[0].device
        method_targets = None
        if batch is not None and METHOD_TARGETS in batch[0]:
            method_targets = [b[METHOD_TARGETS].to(device) for b in batch]
        context = StepContext(
            targets=method_targets,
            proposals=[p.detach() for p in proposals],
            objectness=None if objectness is None else [o.detach() for o in objectness],
            gt_boxes=[t["boxes"] for t in targets],
            images=None
            if batch is None
            else [b["image"] for b in batch],  # RGB, moved by a method that reads them
            image_ids=None
            if batch is None
            else image_id_tensor([b.get("image_id", i) for i, b in enumerate(batch)], device),
        )
        proposals, matched_idxs, tv_labels, regression_targets = self.select_training_samples(
            proposals, targets
        )
        extra = self.box_predictor.step_rois(context)
        boxes = proposals if extra is None else [torch.cat([p, e.to(p)]) for p, e in zip(proposals, extra)]
        x = self._box_features(feats, boxes)
        x_extra = None
        if extra is not None:
            x, x_extra = split_sampled_and_extra(x, [len(p) for p in proposals], [len(e) for e in extra])
        labels = _to_core_labels(torch.cat(tv_labels), self.box_predictor.num_classes)
        losses, deltas, _ = self.box_predictor.losses(x, labels, x_extra, method_targets, context)
        box = self._box_loss(deltas, torch.cat(regression_targets), labels)
        losses = {**losses, "loss_box_reg": box}
        if self.has_mask():
            losses["loss_mask"] = self._mask_loss(feats, proposals, matched_idxs, tv_labels, targets)
        return losses

    def _box_loss(
        self, deltas: torch.Tensor, regression_targets: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Smooth L1 (beta 0: L1, detectron2's default) on foreground RoIs, normalised by all sampled RoIs."""
        fg = labels < self.box_predictor.num_classes
        loss = F.smooth_l1_loss(deltas[fg], regression_targets[fg], beta=self.smooth_l1_beta, reduction="sum")
        return loss / max(labels.numel(), 1)

    def _mask_loss(self, feats, proposals, matched_idxs, tv_labels, targets) -> torch.Tensor:
        pos = [torch.where(lab > 0)[0] for lab in tv_labels]
        pos_boxes = [p[i] for p, i in zip(proposals, pos)]
        pos_matched = [m[i] for m, i in zip(matched_idxs, pos)]
        if sum(b.shape[0] for b in pos_boxes) == 0:
            return sum(p.sum() for p in self.mask_head.parameters()) * 0.0
        logits = self.mask_head(self.mask_pooler(feats, pos_boxes))
        zeros = [torch.zeros_like(t["labels"]) for t in targets]  # one class-agnostic mask channel
        return maskrcnn_loss(logits, pos_boxes, [t["masks"] for t in targets], zeros, pos_matched)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _detect(self, feats, proposals, image_shapes, vlm=None) -> list[dict[str, torch.Tensor]]:
        scores, deltas = self.box_predictor.predict(self._box_features(feats, proposals), proposals, vlm)
        # (N, 4) class-agnostic; reshape, not [:, 0]: decode returns (0, 4) for an image without proposals
        boxes = self.box_coder.decode(deltas, proposals).reshape(-1, 4)
        results = []
        for b, s, shape in zip(
            boxes.split([p.shape[0] for p in proposals]),
            scores.split([p.shape[0] for p in proposals]),
            image_shapes,
        ):
            results.append(self._select(box_ops.clip_boxes_to_image(b, shape), s[:, :-1]))
        if self.has_mask():
            det_boxes = [r["boxes"] for r in results]
            if sum(b.shape[0] for b in det_boxes):
                probs = maskrcnn_inference(
                    self.mask_head(self.mask_pooler(feats, det_boxes)),
                    [torch.zeros(b.shape[0], dtype=torch.long, device=b.device) for b in det_boxes],
                )
            else:
                probs = [b.new_zeros(0, 1, 28, 28) for b in det_boxes]
            for r, m in zip(results, probs):
                r["masks"] = m
        return results

    def _select(self, boxes: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-class thresholding and NMS over class-agnostic boxes; labels are core ids in [0, C)."""
        n, c = scores.shape
        labels = torch.arange(c, device=scores.device).expand(n, c).reshape(-1)
        boxes = boxes[:, None].expand(n, c, 4).reshape(-1, 4)
        scores = scores.reshape(-1)
        keep = torch.where(scores > self.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}

    def forward(self, features, proposals, image_shapes, targets=None, batch=None, vlm=None, objectness=None):
        """Training: (None, losses). Inference: (per-image dicts of boxes, scores, labels [, masks]), {}).
        `vlm`: the backbone's region embedder (`RoIOutputs.vlm`) for methods that score with it, or None;
        `objectness`: per image (P_i,) the RPN's scores of `proposals` (training, for the method's context)."""
        feats = self._levels(features)
        if self.training:
            return None, self._losses(feats, proposals, targets, batch, objectness)
        return self._detect(feats, proposals, image_shapes, vlm), {}
