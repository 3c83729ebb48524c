"""ViLD RoI heads on detectron2: proposal matching / sampling, box head, mask head and box coding from
detectron2's `StandardROIHeads`; region embeddings, text classifier, losses and ensemble from the core.

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

from ...modeling.heads import ClassAgnosticBoxRegressor, RegionEmbeddingHead, TextClassifier, ensemble_scores
from ...modeling.vild import novel_mask_for, split_sampled_and_distill, vild_losses
from ...teacher.embeddings import ClassEmbeddings
from ...utils.errors import DistillInputError
from ..shared import load_train_vocabulary
from .poolers import FusedROIPooler

logger = logging.getLogger(__name__)


def build_pooler(cfg, head_cfg, scales: tuple[float, ...]) -> nn.Module:
    """detectron2's ROIPooler, or the fused op (MODEL.DISTILL.FUSED_POOLER) for ROIAlign / ROIAlignV2."""
    args = (head_cfg.POOLER_RESOLUTION, scales, head_cfg.POOLER_SAMPLING_RATIO, head_cfg.POOLER_TYPE)
    if cfg.MODEL.DISTILL.FUSED_POOLER and head_cfg.POOLER_TYPE in ("ROIAlignV2", "ROIAlign"):
        return FusedROIPooler(*args)
    return ROIPooler(*args)


def _put_scalars(**values: float) -> None:
    get_event_storage().put_scalars(**{f"vild/{k}": v for k, v in values.items()})


class ViLDPredictor(nn.Module):
    """Box-head features → (text logits (N, C + 1) background last, class-agnostic deltas (N, 4), image-branch
    embeddings (N, D) or None). The `FastRCNNOutputLayers` interface: `losses`, `inference`, `predict_probs`,
    `predict_boxes`.

    Args:
        input_shape: the box head's output shape.
        vocabulary: (C, D) class embeddings of the training vocabulary.
        ensemble: ViLD-ensemble: a separate image-branch embedding head, distilled from the teacher, and the
            geometric-mean scores at inference.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec | int,
        vocabulary: ClassEmbeddings | torch.Tensor,
        *,
        box2box_transform: Box2BoxTransform,
        temperature: float = 0.01,
        bg_init_std: float = 0.01,
        text_loss_weight: float = 1.0,
        novel_logit_mode: str = "zero",
        ensemble: bool = False,
        base_text_weight: float = 2 / 3,
        novel_text_weight: float = 1 / 3,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
        box_reg_loss_weight: float = 1.0,
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
    ):
        super().__init__()
        if isinstance(input_shape, int):
            input_shape = ShapeSpec(channels=input_shape)
        in_dim = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        emb = vocabulary.embeddings if isinstance(vocabulary, ClassEmbeddings) else vocabulary
        self.embed_head = RegionEmbeddingHead(in_dim, emb.shape[1])
        self.image_embed_head = RegionEmbeddingHead(in_dim, emb.shape[1]) if ensemble else None
        names = vocabulary.class_names if isinstance(vocabulary, ClassEmbeddings) else None
        self.classifier = TextClassifier(emb, temperature, bg_init_std, class_names=names)
        self.box_regressor = ClassAgnosticBoxRegressor(in_dim)
        self.box2box_transform = box2box_transform
        self.text_loss_weight, self.novel_logit_mode = text_loss_weight, novel_logit_mode
        self.ensemble, self.base_text_weight, self.novel_text_weight = (
            ensemble,
            base_text_weight,
            novel_text_weight,
        )
        self.box_reg_loss_type, self.smooth_l1_beta = box_reg_loss_type, smooth_l1_beta
        self.box_reg_loss_weight = box_reg_loss_weight
        self.test_score_thresh, self.test_nms_thresh = test_score_thresh, test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        # (C,) True where a vocabulary class is novel: used by the ensemble and by novel_logit_mode
        self.register_buffer("novel_mask", torch.zeros(len(emb), dtype=torch.bool), persistent=False)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec, vocabulary: ClassEmbeddings | None = None) -> dict:
        d, bh = cfg.MODEL.DISTILL, cfg.MODEL.ROI_BOX_HEAD
        return {
            "input_shape": input_shape,
            "vocabulary": load_train_vocabulary(cfg) if vocabulary is None else vocabulary,
            "box2box_transform": Box2BoxTransform(weights=bh.BBOX_REG_WEIGHTS),
            "temperature": d.TEMPERATURE,
            "bg_init_std": d.BG_INIT_STD,
            "text_loss_weight": d.TEXT_LOSS_WEIGHT,
            "novel_logit_mode": d.NOVEL_LOGIT_MODE,
            "ensemble": d.ENSEMBLE.ENABLED,
            "base_text_weight": d.ENSEMBLE.BASE_TEXT_WEIGHT,
            "novel_text_weight": d.ENSEMBLE.NOVEL_TEXT_WEIGHT,
            "box_reg_loss_type": bh.BBOX_REG_LOSS_TYPE,
            "smooth_l1_beta": bh.SMOOTH_L1_BETA,
            "box_reg_loss_weight": bh.BBOX_REG_LOSS_WEIGHT,
            "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    def set_vocabulary(
        self, vocabulary: ClassEmbeddings | torch.Tensor, novel_mask: torch.Tensor | None = None
    ):
        self.classifier.set_vocabulary(vocabulary)
        self.novel_mask = novel_mask_for(self.classifier, novel_mask)

    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) box-head features → (N, D) the embeddings distilled from the teacher (ViLD-image)."""
        return (self.embed_head if self.image_embed_head is None else self.image_embed_head)(x)

    def forward(self, x: torch.Tensor):
        x = x.flatten(1)
        emb = self.embed_head(x)
        image = None
        if self.ensemble and not self.training:
            image = emb if self.image_embed_head is None else self.image_embed_head(x)
        return self.classifier(emb), self.box_regressor(x), image

    # ------------------------------------------------------------------ training
    def losses(
        self, predictions, proposals: list[Instances], image: tuple | None = None
    ) -> dict[str, torch.Tensor]:
        """`image`: (student (M, D), teacher (M, D), weight) of the distillation RoIs, or None."""
        logits, deltas, _ = predictions
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0) if proposals else logits.new_zeros(0).long()
        )
        self._log_classification_stats(logits.detach(), gt_classes)
        vl = vild_losses(
            logits, gt_classes, self.novel_mask, self.novel_logit_mode, self.text_loss_weight, *(image or ())
        )
        losses = {"loss_vild_text": vl.pop("loss_vild_text")}
        if proposals:
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0
            )
        else:
            proposal_boxes = gt_boxes = deltas.new_zeros(0, 4)
        losses["loss_box_reg"] = self.box_reg_loss_weight * self._box_reg_loss(
            proposal_boxes, gt_boxes, deltas, gt_classes
        )
        return {**losses, **vl}

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
        """Per image (R_i, C + 1) class scores, background last (softmax, or ViLD-ensemble's geometric mean)."""
        logits, _, image = predictions
        if self.ensemble:
            scores = ensemble_scores(
                logits,
                image,
                self.classifier.class_embeddings,
                self.novel_mask,
                self.classifier.temperature,
                self.base_text_weight,
                self.novel_text_weight,
            )
        else:
            scores = logits.softmax(-1)
        return scores.split([len(p) for p in proposals], dim=0)

    def predict_boxes(self, predictions, proposals: list[Instances]) -> tuple[torch.Tensor, ...]:
        """Per image (R_i, 4) decoded class-agnostic boxes."""
        if not proposals:
            return ()
        deltas = predictions[1]
        boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        return self.box2box_transform.apply_deltas(deltas, boxes).split([len(p) for p in proposals], dim=0)

    def inference(self, predictions, proposals: list[Instances]):
        return fast_rcnn_inference(
            self.predict_boxes(predictions, proposals),
            self.predict_probs(predictions, proposals),
            [p.image_size for p in proposals],
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )


@ROI_HEADS_REGISTRY.register()
class ViLDRoIHeads(StandardROIHeads):
    """`StandardROIHeads` with the ViLD predictor: ViLD-text on the sampled RoIs, ViLD-image (L1 to the teacher's
    region embeddings) on the distillation RoIs, which are pooled in the same pooler call and get no box or class
    loss; class-agnostic box regression and masks."""

    @configurable
    def __init__(self, *, image_loss_weight: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.image_loss_weight = image_loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        if cfg.MODEL.KEYPOINT_ON:
            raise DistillInputError("ViLDRoIHeads has no keypoint head: set MODEL.KEYPOINT_ON False")
        ret = super().from_config(cfg, input_shape)
        ret["image_loss_weight"] = cfg.MODEL.DISTILL.IMAGE_LOSS_WEIGHT
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        bh = cfg.MODEL.ROI_BOX_HEAD
        if not bh.CLS_AGNOSTIC_BBOX_REG:
            raise DistillInputError(
                "ViLD needs class-agnostic box regression (novel classes): set "
                "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True"
            )
        if bh.TRAIN_ON_PRED_BOXES:
            raise DistillInputError("ViLDRoIHeads does not support MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES")
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
            "box_predictor": ViLDPredictor(cfg, box_head.output_shape, vocabulary),
            "num_classes": len(vocabulary),
        }

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        ret = super()._init_mask_head(cfg, input_shape)
        if not ret:
            return ret
        if not cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK:
            raise DistillInputError(
                "ViLD needs a class-agnostic mask head (novel classes): set "
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
        """Score another vocabulary (e.g. base + novel at test time); `novel_mask` (C,) drives the ensemble."""
        self.box_predictor.set_vocabulary(vocabulary, novel_mask)
        self.num_classes = self.box_predictor.num_classes

    def vocabulary_state(self) -> tuple:
        return self.classifier.state(), self.novel_mask

    def restore_vocabulary(self, state: tuple) -> None:
        self.classifier.restore(state[0])
        self.box_predictor.novel_mask = state[1]
        self.num_classes = self.classifier.num_classes

    # ------------------------------------------------------------------ forward
    def forward(self, images, features, proposals, targets=None, distill=None):
        """`distill`: per image (boxes (M_i, 4) XYXY in the input image, teacher embeddings (M_i, D)), or None."""
        del images
        if not self.training:
            pred_instances = self._forward_box(features, proposals)
            return self.forward_with_given_boxes(features, pred_instances), {}
        if not targets:
            raise ValueError("'targets' argument is required during training")
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses = self._forward_box(features, proposals, distill)
        losses.update(self._forward_mask(features, proposals))
        return proposals, losses

    def _forward_box(self, features, proposals, distill=None):
        feats = [features[f] for f in self.box_in_features]
        if not self.training:
            x = self.box_head(self.box_pooler(feats, [p.proposal_boxes for p in proposals]))
            return self.box_predictor.inference(self.box_predictor(x), proposals)[0]
        use_image = self.image_loss_weight > 0 and distill is not None
        boxes = [p.proposal_boxes for p in proposals]
        if use_image:
            boxes = [Boxes.cat([b, Boxes(db.to(b.tensor))]) for b, (db, _) in zip(boxes, distill)]
        x = self.box_head(self.box_pooler(feats, boxes))
        if not use_image:
            return self.box_predictor.losses(self.box_predictor(x), proposals)
        x_sampled, x_distill = split_sampled_and_distill(
            x, [len(p) for p in proposals], [len(db) for db, _ in distill]
        )
        student = self.box_predictor.image_embeddings(x_distill)
        teacher = torch.cat([de for _, de in distill])
        losses = self.box_predictor.losses(
            self.box_predictor(x_sampled), proposals, (student, teacher, self.image_loss_weight)
        )
        _put_scalars(num_distill_rois=student.shape[0] / max(len(distill), 1))
        return losses
