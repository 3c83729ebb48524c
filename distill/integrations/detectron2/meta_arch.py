"""`OpenVocabRCNN`: detectron2's GeneralizedRCNN that also hands each image's distillation-method targets (from
`OpenVocabDatasetMapper`) to the RoI heads. Inference is GeneralizedRCNN's.

GeneralizedRCNN passes only images, features, proposals and ground truth to its RoI heads, so it cannot feed a
method's targets; `build_detector` builds this class where a config names GeneralizedRCNN with
OpenVocabROIHeads.
"""

from __future__ import annotations

from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage

from ...methods import METHOD_TARGETS
from ...modeling.ov_predictor import image_id_tensor


@META_ARCH_REGISTRY.register()
class OpenVocabRCNN(GeneralizedRCNN):
    def _method_targets(self, batched_inputs: list[dict]) -> list | None:
        if METHOD_TARGETS not in batched_inputs[0]:
            return None
        return [x[METHOD_TARGETS].to(self.device) for x in batched_inputs]

    def _step_inputs(self, batched_inputs: list[dict]) -> dict:
        """The records' images (0-255, the input frame, where the loader left them: a method that reads them
        moves them) and ids for the method's `StepContext`."""
        ids = image_id_tensor([x.get("image_id", i) for i, x in enumerate(batched_inputs)], self.device)
        images = [x["image"] for x in batched_inputs]
        return {"images": images, "image_format": self.input_format, "image_ids": ids}

    def forward(self, batched_inputs: list[dict]):
        """Training: dict of losses (RPN, the method's, loss_box_reg, loss_mask).
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
            images,
            features,
            proposals,
            gt_instances,
            method_targets=self._method_targets(batched_inputs),
            step_inputs=self._step_inputs(batched_inputs),
        )
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        return {**detector_losses, **proposal_losses}


META_ARCH_REGISTRY._do_register("ViLDRCNN", OpenVocabRCNN)  # the name in earlier configs
