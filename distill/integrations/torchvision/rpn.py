"""torchvision's RPN with `distill.ops.batched_nms` (the compiled CPU NMS), otherwise unchanged but for keeping the
last proposals' objectness (`last_scores`) that torchvision's forward drops."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import boxes as box_ops

from ...ops.nms import batched_nms


class RPN(RegionProposalNetwork):
    def top_candidates(self, objectness: Tensor, num_anchors_per_level: list[int]) -> Tensor:
        """(B, A) objectness → (B, K) indices of the pre-NMS top-k anchors of each level (the export's and
        `filter_proposals`' one rule)."""
        return self._get_top_n_idx(objectness, num_anchors_per_level)

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's filter_proposals (top-k per level, clip, small / low-score removal, NMS per level,
        post-NMS top-k) with the NMS of distill.ops. proposals (B, A, 4), objectness (B * A, 1)."""
        num_images = proposals.shape[0]
        device = proposals.device
        objectness = objectness.detach().reshape(num_images, -1)
        levels = torch.cat(
            [
                torch.full((n,), idx, dtype=torch.int64, device=device)
                for idx, n in enumerate(num_anchors_per_level)
            ],
            0,
        )
        levels = levels.reshape(1, -1).expand_as(objectness)
        top_n_idx = self.top_candidates(objectness, num_anchors_per_level)
        batch_idx = torch.arange(num_images, device=device)[:, None]
        objectness = objectness[batch_idx, top_n_idx]
        levels = levels[batch_idx, top_n_idx]
        proposals = proposals[batch_idx, top_n_idx]
        objectness_prob = torch.sigmoid(objectness)
        final_boxes, final_scores = [], []
        for boxes, scores, lvl, img_shape in zip(proposals, objectness_prob, levels, image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes, img_shape)
            keep = box_ops.remove_small_boxes(boxes, self.min_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        # torchvision's forward drops the scores; a method's StepContext reads them (this step's only)
        self.last_scores = final_scores
        return final_boxes, final_scores
