"""The open-vocabulary semantic head on detectron2: `OpenVocabSemSegHead` (SEM_SEG_HEADS_REGISTRY) wraps the
core `OpenVocabSemSegPredictor`; `OpenVocabSemanticSegmentor` (META_ARCH_REGISTRY) is detectron2's
SemanticSegmentor that also hands each image's dense teacher targets ("pixel_targets": (D, h, w), e.g. from
`distill.teacher.dense_targets.DenseTargetCache`) and the unpadded image sizes to the head.

    cfg.MODEL.META_ARCHITECTURE = "OpenVocabSemanticSegmentor"   # or "SemanticSegmentor": CE only
    cfg.MODEL.SEM_SEG_HEAD.NAME = "OpenVocabSemSegHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]

Settings come from MODEL.DISTILL (vocabulary file, temperature, pixel loss) and MODEL.DISTILL.SEM_SEG (the
same keys the torchvision backend reads); of MODEL.SEM_SEG_HEAD only NAME and IN_FEATURES are used. The
synthetic yaml starts from the ViLD student (MODEL.WEIGHTS, loaded by detectron2's checkpointer: a checkpoint
of this backend) with its ResNet frozen (FREEZE_AT 5).
"""

from __future__ import annotations

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY, SemanticSegmentor
from detectron2.structures import ImageList
from torch import nn

from ...modeling.sem_seg import OpenVocabSemSegPredictor
from ...utils.errors import DistillInputError
from ..shared import build_sem_seg_predictor, load_train_vocabulary


@SEM_SEG_HEADS_REGISTRY.register()
class OpenVocabSemSegHead(nn.Module):
    """forward(features, targets=None, pixel_targets=None, image_sizes=None): training → (None, losses);
    inference → ((B, K, H, W) logits, {}), K = C + 1 with the background last."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_features: list[str],
        predictor: OpenVocabSemSegPredictor,
    ):
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise DistillInputError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES names {missing}, which the backbone lacks "
                f"(it has {sorted(input_shape)})"
            )
        self.in_features = list(in_features)
        self.predictor = predictor

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        vocab = load_train_vocabulary(cfg)
        feats = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
        shapes = [input_shape[f] for f in feats if f in input_shape]
        predictor = None  # a missing feature is __init__'s clear error
        if len(shapes) == len(feats):
            predictor = build_sem_seg_predictor(
                cfg, vocab, [x.channels for x in shapes], [x.stride for x in shapes]
            )
        return {"input_shape": input_shape, "in_features": feats, "predictor": predictor}

    @property
    def ignore_value(self) -> int:  # SemanticSegmentor pads the targets with it
        return self.predictor.ignore_value

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        targets: torch.Tensor | None = None,
        pixel_targets: list[torch.Tensor] | None = None,
        image_sizes: list[tuple[int, int]] | None = None,
    ):
        x = [features[f] for f in self.in_features]
        if image_sizes is None:  # plain SemanticSegmentor: the padded size (only the distillation needs it)
            image_sizes = [
                tuple(int(v) * self.predictor.embed_head.in_strides[0] for v in x[0].shape[-2:])
            ] * x[0].shape[0]
        return self.predictor(x, image_sizes, targets if self.training else None, pixel_targets)


@META_ARCH_REGISTRY.register()
class OpenVocabSemanticSegmentor(SemanticSegmentor):
    """SemanticSegmentor + dense teacher targets: batched inputs may carry "pixel_targets" (D, h, w) for the
    unpadded, resized image (flipped with it); inference is SemanticSegmentor's."""

    def forward(self, batched_inputs: list[dict]):
        if not self.training or "pixel_targets" not in batched_inputs[0]:
            return super().forward(batched_inputs)
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(
            images, self.backbone.size_divisibility, padding_constraints=self.backbone.padding_constraints
        )
        features = self.backbone(images.tensor)
        targets = ImageList.from_tensors(
            [x["sem_seg"].to(self.device) for x in batched_inputs],
            self.backbone.size_divisibility,
            self.sem_seg_head.ignore_value,
            self.backbone.padding_constraints,
        ).tensor
        _, losses = self.sem_seg_head(
            features, targets, [x["pixel_targets"] for x in batched_inputs], images.image_sizes
        )
        return losses
