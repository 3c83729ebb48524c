"""ViLD RoI heads on torchvision: proposal sampling and box coding from torchvision's RoIHeads, everything
else (pooling, region embeddings, text classifier, losses, ensemble) from the core.

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

from ...data.region_store import teacher_embeddings
from ...modeling.heads import ensemble_scores
from ...modeling.poolers import MultiScaleRoIPooler
from ...modeling.vild import novel_mask_for, split_sampled_and_distill, vild_losses
from ...ops.nms import batched_nms

FPN_LEVELS = ("0", "1", "2", "3")  # P2-P5 of torchvision's BackboneWithFPN


def _to_core_labels(tv_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.where(tv_labels == 0, torch.full_like(tv_labels, num_classes), tv_labels - 1)


class ViLDRoIHeads(RoIHeads):
    """Box head → region embedding → text classifier (ViLD-text) and L1 to the teacher (ViLD-image);
    class-agnostic box regression and mask head.

    Args:
        box_pooler / mask_pooler: `MultiScaleRoIPooler` over P2-P5.
        box_head: pooled (N, C, 7, 7) → (N, fc_dim).
        embed_head: (N, fc_dim) → (N, D) normalised (the text branch; also the image branch unless
            `image_embed_head` is given, as in ViLD-ensemble's separate heads).
        classifier: `TextClassifier` holding the vocabulary.
        box_regressor: (N, fc_dim) → (N, 4).
        mask_head: (N, C, 14, 14) → (N, 1, 28, 28) or None.
    """

    def __init__(
        self,
        box_pooler: MultiScaleRoIPooler,
        box_head: nn.Module,
        embed_head: nn.Module,
        classifier: nn.Module,
        box_regressor: nn.Module,
        mask_pooler: MultiScaleRoIPooler | None,
        mask_head: nn.Module | None,
        *,
        image_embed_head: nn.Module | None = None,
        text_loss_weight: float = 1.0,
        image_loss_weight: float = 0.5,
        novel_logit_mode: str = "zero",
        ensemble: bool = False,
        base_text_weight: float = 2 / 3,
        novel_text_weight: float = 1 / 3,
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
        self.embed_head = embed_head
        self.image_embed_head = image_embed_head
        self.classifier = classifier
        self.box_regressor = box_regressor
        self.mask_pooler = mask_pooler
        self.vild_mask_head = mask_head
        self.smooth_l1_beta = smooth_l1_beta
        self.text_loss_weight = text_loss_weight
        self.image_loss_weight = image_loss_weight
        self.novel_logit_mode = novel_logit_mode
        self.ensemble = ensemble
        self.base_text_weight = base_text_weight
        self.novel_text_weight = novel_text_weight
        # (C,) True where a vocabulary class is novel: used by the ensemble and by novel_logit_mode
        self.register_buffer(
            "novel_mask", torch.zeros(classifier.num_classes, dtype=torch.bool), persistent=False
        )

    def has_mask(self) -> bool:
        return self.vild_mask_head is not None

    def set_vocabulary(self, vocabulary, novel_mask: torch.Tensor | None = None) -> None:
        """Score another vocabulary (e.g. base + novel at test time); `novel_mask` (C,) drives the ensemble."""
        self.classifier.set_vocabulary(vocabulary)
        self.novel_mask = novel_mask_for(self.classifier, novel_mask)

    def vocabulary_state(self) -> tuple:
        return self.classifier.state(), self.novel_mask

    def restore_vocabulary(self, state: tuple) -> None:
        self.classifier.restore(state[0])
        self.novel_mask = state[1]

    # ------------------------------------------------------------------ shared pieces
    def _levels(self, features: OrderedDict) -> list[torch.Tensor]:
        return [features[k] for k in FPN_LEVELS]

    def _box_features(self, feats: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        return self.box_head(self.box_pooler(feats, boxes))

    def _image_branch(self, x: torch.Tensor, text_emb: torch.Tensor | None) -> torch.Tensor:
        """(N, fc_dim) → (N, D) the embeddings distilled from the teacher (`text_emb` when already computed)."""
        if self.image_embed_head is not None:
            return self.image_embed_head(x)
        return self.embed_head(x) if text_emb is None else text_emb

    # ------------------------------------------------------------------ training
    def _losses(self, feats, proposals, targets, batch) -> dict[str, torch.Tensor]:
        proposals, matched_idxs, tv_labels, regression_targets = self.select_training_samples(
            proposals, targets
        )
        use_image = self.image_loss_weight > 0 and batch is not None and "distill_boxes" in batch[0]
        distill = (
            [b["distill_boxes"].to(proposals[0]) for b in batch]
            if use_image
            else [p.new_zeros(0, 4) for p in proposals]
        )
        x = self._box_features(feats, [torch.cat([p, d]) for p, d in zip(proposals, distill)])
        x_sampled, x_distill = split_sampled_and_distill(
            x, [len(p) for p in proposals], [len(d) for d in distill]
        )
        labels = _to_core_labels(torch.cat(tv_labels), self.classifier.num_classes)
        student = teacher = None
        if use_image:
            student = self._image_branch(x_distill, None)
            teacher = teacher_embeddings(  # int8 rows travel to the device as int8, then one op
                torch.cat([b["distill_embeddings"] for b in batch]).to(x_distill.device),
                torch.cat([b["distill_scales"] for b in batch]) if "distill_scales" in batch[0] else None,
            )
        losses = vild_losses(
            self.classifier(self.embed_head(x_sampled)),
            labels,
            self.novel_mask,
            self.novel_logit_mode,
            self.text_loss_weight,
            student,
            teacher,
            self.image_loss_weight,
        )
        box = self._box_loss(self.box_regressor(x_sampled), torch.cat(regression_targets), labels)
        losses = {"loss_vild_text": losses.pop("loss_vild_text"), "loss_box_reg": box, **losses}
        if self.has_mask():
            losses["loss_mask"] = self._mask_loss(feats, proposals, matched_idxs, tv_labels, targets)
        return losses

    def _box_loss(
        self, deltas: torch.Tensor, regression_targets: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Smooth L1 (beta 0: L1, detectron2's default) on foreground RoIs, normalised by all sampled RoIs."""
        fg = labels < self.classifier.num_classes
        loss = F.smooth_l1_loss(deltas[fg], regression_targets[fg], beta=self.smooth_l1_beta, reduction="sum")
        return loss / max(labels.numel(), 1)

    def _mask_loss(self, feats, proposals, matched_idxs, tv_labels, targets) -> torch.Tensor:
        pos = [torch.where(lab > 0)[0] for lab in tv_labels]
        pos_boxes = [p[i] for p, i in zip(proposals, pos)]
        pos_matched = [m[i] for m, i in zip(matched_idxs, pos)]
        if sum(b.shape[0] for b in pos_boxes) == 0:
            return sum(p.sum() for p in self.vild_mask_head.parameters()) * 0.0
        logits = self.vild_mask_head(self.mask_pooler(feats, pos_boxes))
        zeros = [torch.zeros_like(t["labels"]) for t in targets]  # one class-agnostic mask channel
        return maskrcnn_loss(logits, pos_boxes, [t["masks"] for t in targets], zeros, pos_matched)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _detect(self, feats, proposals, image_shapes) -> list[dict[str, torch.Tensor]]:
        x = self._box_features(feats, proposals)
        emb = self.embed_head(x)
        logits = self.classifier(emb)
        if self.ensemble:
            scores = ensemble_scores(
                logits,
                self._image_branch(x, emb),
                self.classifier.class_embeddings,
                self.novel_mask,
                self.classifier.temperature,
                self.base_text_weight,
                self.novel_text_weight,
            )
        else:
            scores = logits.softmax(-1)
        # (N, 4) class-agnostic; reshape, not [:, 0]: decode returns (0, 4) for an image without proposals
        boxes = self.box_coder.decode(self.box_regressor(x), proposals).reshape(-1, 4)
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
                    self.vild_mask_head(self.mask_pooler(feats, det_boxes)),
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

    def forward(self, features, proposals, image_shapes, targets=None, batch=None):
        """Training: (None, losses). Inference: (per-image dicts of boxes, scores, labels [, masks]), {})."""
        feats = self._levels(features)
        if self.training:
            return None, self._losses(feats, proposals, targets, batch)
        return self._detect(feats, proposals, image_shapes), {}
