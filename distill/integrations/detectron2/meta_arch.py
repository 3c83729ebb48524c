"""`ViLDRCNN`: detectron2's GeneralizedRCNN that also hands each image's distillation proposals and teacher
region embeddings (from `ViLDDatasetMapper`) to the RoI heads. Inference is GeneralizedRCNN's.

GeneralizedRCNN passes only images, features, proposals and ground truth to its RoI heads, so it cannot feed
ViLD-image; `build_vild_model` builds this class where a config names GeneralizedRCNN with ViLDRoIHeads.
"""

from __future__ import annotations

import torch
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage

from ...data.region_store import teacher_embeddings


@META_ARCH_REGISTRY.register()
class ViLDRCNN(GeneralizedRCNN):
    def _distill_inputs(self, batched_inputs: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        if "distill_boxes" not in batched_inputs[0]:
            return None
        return [
            (
                x["distill_boxes"].to(self.device),
                teacher_embeddings(x["distill_embeddings"].to(self.device), x.get("distill_scales")),
            )
            for x in batched_inputs
        ]

    def forward(self, batched_inputs: list[dict]):
        """Training: dict of losses (RPN, loss_vild_text, loss_box_reg, loss_vild_image, loss_mask).
        Inference: GeneralizedRCNN's per-image {"instances"} in original-image pixels."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = (
            [x["instances"].to(self.device) for x in batched_inputs]
            if "instances" in batched_inputs[0]
            else None
        )
        features = self.backbone(images.tensor)
        if self.proposal_generator is not None:
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        else:
            proposals, proposal_losses = [x["proposals"].to(self.device) for x in batched_inputs], {}
        _, detector_losses = self.roi_heads(
            images, features, proposals, gt_instances, distill=self._distill_inputs(batched_inputs)
        )
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        return {**detector_losses, **proposal_losses}
