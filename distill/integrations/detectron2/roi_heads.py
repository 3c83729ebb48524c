"""Open-vocabulary RoI heads on detectron2: proposal matching / sampling, box head, mask head and box coding
from detectron2's `StandardROIHeads`; the box predictor (region embeddings, text classifier, the distillation
method's losses and scores) from the core.

Labels need no conversion here: detectron2, like the core classifier, puts background last (label C).
The number of classes is the vocabulary's (MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS); ROI_HEADS.NUM_CLASSES is
not read.
"""

from __future__ import annotations

import logging

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads, build_box_head
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from ...methods import build_method
from ...modeling.clip_backbone import VLM_KEY
from ...modeling.heads import TextClassifier
from ...modeling.ov_predictor import OpenVocabBoxPredictor, StepContext, split_sampled_and_extra
from ...teacher.embeddings import ClassEmbeddings
from ...utils.errors import DistillInputError
from ..shared import load_train_vocabulary
from .poolers import FusedROIPooler

logger = logging.getLogger(__name__)


def build_pooler(cfg, head_cfg, scales: tuple[float, ...]) -> nn.Module:
    """detectron2's ROIPooler, or the fused op (MODEL.ROI_HEADS.FUSED_POOLER) for ROIAlign / ROIAlignV2."""
    args = (head_cfg.POOLER_RESOLUTION, scales, head_cfg.POOLER_SAMPLING_RATIO, head_cfg.POOLER_TYPE)
    if cfg.MODEL.ROI_HEADS.FUSED_POOLER and head_cfg.POOLER_TYPE in ("ROIAlignV2", "ROIAlign"):
        return FusedROIPooler(*args)
    return ROIPooler(*args)


def _put_scalars(**values: float) -> None:
    get_event_storage().put_scalars(**{f"roi_heads/{k}": v for k, v in values.items()})


class OpenVocabOutputLayers(OpenVocabBoxPredictor):
    """The core's `OpenVocabBoxPredictor` with detectron2's `FastRCNNOutputLayers` interface (`losses`,
    `inference`, `predict_probs`, `predict_boxes`): box coding, detectron2's box-regression loss and
    classification statistics; the method's losses and scores come from the core.

    Args:
        input_shape: the box head's output shape.
        vocabulary: (C, D) class embeddings of the training vocabulary.
        method: the distillation method (MODEL.DISTILL.METHOD).
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec | int,
        vocabulary: ClassEmbeddings | torch.Tensor,
        method: nn.Module,
        *,
        box2box_transform: Box2BoxTransform,
        temperature: float = 0.01,
        bg_init_std: float = 0.01,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
        box_reg_loss_weight: float = 1.0,
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
    ):
        if isinstance(input_shape, int):
            input_shape = ShapeSpec(channels=input_shape)
        in_dim = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        super().__init__(in_dim, vocabulary, method, temperature, bg_init_std)
        self.box2box_transform = box2box_transform
        self.box_reg_loss_type, self.smooth_l1_beta = box_reg_loss_type, smooth_l1_beta
        self.box_reg_loss_weight = box_reg_loss_weight
        self.test_score_thresh, self.test_nms_thresh = test_score_thresh, test_nms_thresh
        self.test_topk_per_image = test_topk_per_image

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec, vocabulary: ClassEmbeddings | None = None) -> dict:
        d, bh = cfg.MODEL.DISTILL, cfg.MODEL.ROI_BOX_HEAD
        return {
            "input_shape": input_shape,
            "vocabulary": load_train_vocabulary(cfg) if vocabulary is None else vocabulary,
            "method": build_method(cfg),
            "box2box_transform": Box2BoxTransform(weights=bh.BBOX_REG_WEIGHTS),
            "temperature": d.TEMPERATURE,
            "bg_init_std": d.BG_INIT_STD,
            "box_reg_loss_type": bh.BBOX_REG_LOSS_TYPE,
            "smooth_l1_beta": bh.SMOOTH_L1_BETA,
            "box_reg_loss_weight": bh.BBOX_REG_LOSS_WEIGHT,
            "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    # ------------------------------------------------------------------ training
    def training_losses(
        self,
        x: torch.Tensor,
        proposals: list[Instances],
        x_extra: torch.Tensor | None,
        targets: list | None,
        context: StepContext | None = None,
    ) -> dict[str, torch.Tensor]:
        """The method's losses on the sampled RoIs' features `x` (R, F) and its extra RoIs' `x_extra` (M, F),
        and detectron2's class-agnostic box loss."""
        gt_classes = cat([p.gt_classes for p in proposals], dim=0) if proposals else x.new_zeros(0).long()
        losses, deltas, logits = super().losses(x, gt_classes, x_extra, targets, context)
        self._log_classification_stats(logits.detach(), gt_classes)
        if proposals:
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0
            )
        else:
            proposal_boxes = gt_boxes = deltas.new_zeros(0, 4)
        box = self.box_reg_loss_weight * self._box_reg_loss(proposal_boxes, gt_boxes, deltas, gt_classes)
        return {**losses, "loss_box_reg": box}

    def _box_reg_loss(self, proposal_boxes, gt_boxes, deltas, gt_classes) -> torch.Tensor:
        """Class-agnostic regression on foreground RoIs, normalised by all sampled RoIs (detectron2's)."""
        fg = (gt_classes >= 0) & (gt_classes < self.num_classes)
        loss = _dense_box_regression_loss(
            [proposal_boxes[fg]],
            self.box2box_transform,
            [deltas[fg].unsqueeze(0)],
            [gt_boxes[fg]],
            ...,
            self.box_reg_loss_type,
            self.smooth_l1_beta,
        )
        return loss / max(gt_classes.numel(), 1.0)

    def _log_classification_stats(self, logits: torch.Tensor, gt_classes: torch.Tensor) -> None:
        if gt_classes.numel() == 0:
            return
        pred = logits.argmax(1)
        bg = logits.shape[1] - 1
        fg = gt_classes < bg
        stats = {
            "cls_accuracy": (pred == gt_classes).float().mean().item(),
            "fg_fraction": fg.float().mean().item(),
        }
        if fg.any():
            stats["fg_cls_accuracy"] = (pred[fg] == gt_classes[fg]).float().mean().item()
            stats["false_negative"] = (pred[fg] == bg).float().mean().item()
        _put_scalars(**stats)

    # ------------------------------------------------------------------ inference
    def predict_probs(self, predictions, proposals: list[Instances]) -> tuple[torch.Tensor, ...]:
        """Per image (R_i, C + 1) class scores, background last (the method's)."""
        return predictions[0].split([len(p) for p in proposals], dim=0)

    def predict_boxes(self, predictions, proposals: list[Instances]) -> tuple[torch.Tensor, ...]:
        """Per image (R_i, 4) decoded class-agnostic boxes."""
        if not proposals:
            return ()
        deltas = predictions[1]
        boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        return self.box2box_transform.apply_deltas(deltas, boxes).split([len(p) for p in proposals], dim=0)

    def inference(self, predictions, proposals: list[Instances]):
        """`predictions`: (scores (N, C + 1), deltas (N, 4)) from `predict`."""
        return fast_rcnn_inference(
            self.predict_boxes(predictions, proposals),
            self.predict_probs(predictions, proposals),
            [p.image_size for p in proposals],
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )


@ROI_HEADS_REGISTRY.register()
class OpenVocabROIHeads(StandardROIHeads):
    """`StandardROIHeads` with the open-vocabulary predictor (`OpenVocabOutputLayers`): the method's losses on
    the sampled RoIs and on the extra RoIs it asks for (e.g. ViLD's region-store boxes, pooled in the same
    pooler call, no box or class loss); class-agnostic box regression and masks."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        if cfg.MODEL.KEYPOINT_ON:
            raise DistillInputError("OpenVocabROIHeads has no keypoint head: set MODEL.KEYPOINT_ON False")
        return super().from_config(cfg, input_shape)

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        bh = cfg.MODEL.ROI_BOX_HEAD
        if not bh.CLS_AGNOSTIC_BBOX_REG:
            raise DistillInputError(
                "open-vocabulary detection needs class-agnostic box regression (novel classes): set "
                "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True"
            )
        if bh.TRAIN_ON_PRED_BOXES:
            raise DistillInputError(
                "OpenVocabROIHeads does not support MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES"
            )
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise DistillInputError(f"ROI_HEADS.IN_FEATURES must have equal channel counts, got {channels}")
        scales = tuple(1.0 / input_shape[k].stride for k in in_features)
        res = bh.POOLER_RESOLUTION
        box_head = build_box_head(cfg, ShapeSpec(channels=channels.pop(), height=res, width=res))
        vocabulary = load_train_vocabulary(cfg)
        return {
            "box_in_features": in_features,
            "box_pooler": build_pooler(cfg, bh, scales),
            "box_head": box_head,
            "box_predictor": OpenVocabOutputLayers(cfg, box_head.output_shape, vocabulary),
            "num_classes": len(vocabulary),
        }

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        ret = super()._init_mask_head(cfg, input_shape)
        if not ret:
            return ret
        if not cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK:
            raise DistillInputError(
                "open-vocabulary detection needs a class-agnostic mask head (novel classes): set "
                "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True"
            )
        if ret["mask_pooler"] is not None:
            scales = tuple(1.0 / input_shape[k].stride for k in ret["mask_in_features"])
            ret["mask_pooler"] = build_pooler(cfg, cfg.MODEL.ROI_MASK_HEAD, scales)
        return ret

    # ------------------------------------------------------------------ vocabulary
    @property
    def classifier(self) -> TextClassifier:
        return self.box_predictor.classifier

    @property
    def novel_mask(self) -> torch.Tensor:
        return self.box_predictor.novel_mask

    def set_vocabulary(
        self, vocabulary: ClassEmbeddings | torch.Tensor, novel_mask: torch.Tensor | None = None
    ):
        """Score another vocabulary (e.g. base + novel at test time); `novel_mask` (C,) marks its novel classes."""
        self.box_predictor.set_vocabulary(vocabulary, novel_mask)
        self.num_classes = self.box_predictor.num_classes

    def vocabulary_state(self) -> tuple:
        return self.box_predictor.vocabulary_state()

    def restore_vocabulary(self, state: tuple) -> None:
        self.box_predictor.restore_vocabulary(state)
        self.num_classes = self.box_predictor.num_classes

    # ------------------------------------------------------------------ forward
    def forward(self, images, features, proposals, targets=None, method_targets=None, step_inputs=None):
        """`method_targets`: per image, what the method attached to the record (on the device), or None;
        `step_inputs`: the `StepContext` fields images, image_format and image_ids, or None."""
        del images
        if not self.training:
            pred_instances = self._forward_box(features, proposals)
            return self.forward_with_given_boxes(features, pred_instances), {}
        if not targets:
            raise ValueError("'targets' argument is required during training")
        context = StepContext(
            targets=method_targets,
            proposals=[q.proposal_boxes.tensor.detach() for q in proposals],
            objectness=[q.objectness_logits.detach().sigmoid() for q in proposals],
            gt_boxes=[t.gt_boxes.tensor for t in targets],
            **(step_inputs or {}),
        )
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses = self._forward_box(features, proposals, context)
        losses.update(self._forward_mask(features, proposals))
        return proposals, losses

    def _forward_box(self, features, proposals, context: StepContext | None = None):
        feats = [features[f] for f in self.box_in_features]
        p = self.box_predictor
        if not self.training:
            x = self.box_head(self.box_pooler(feats, [q.proposal_boxes for q in proposals]))
            rois = [q.proposal_boxes.tensor for q in proposals]
            return p.inference(p.predict(x, rois, features.get(VLM_KEY)), proposals)[0]
        context = context or StepContext()
        extra = p.step_rois(context)
        boxes = [q.proposal_boxes for q in proposals]
        if extra is not None:
            boxes = [Boxes.cat([b, Boxes(e.to(b.tensor))]) for b, e in zip(boxes, extra)]
        x = self.box_head(self.box_pooler(feats, boxes))
        x_extra = None
        if extra is not None:
            x, x_extra = split_sampled_and_extra(x, [len(q) for q in proposals], [len(e) for e in extra])
            _put_scalars(num_extra_rois=x_extra.shape[0] / max(len(extra), 1))
        return p.training_losses(x, proposals, x_extra, context.targets, context)


ROI_HEADS_REGISTRY._do_register("ViLDRoIHeads", OpenVocabROIHeads)  # the name in earlier configs
