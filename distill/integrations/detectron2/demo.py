"""Inference on images with any vocabulary for the detectron2 backend (the Backend protocol's
load_for_inference and predict, as the torchvision backend's demo.py). `cfg` may be a torchvision-backend config
(`distill.config.load_config`) or a detectron2 one; detections are dicts of tensors in original pixels:
boxes (N, 4) XYXY, scores (N,), labels (N,) vocabulary indices and, with masks, masks (N, H, W) float 0/1.
"""

from __future__ import annotations

import torch

from ...teacher.embeddings import ClassEmbeddings
from ..shared import building_with
from .builders import build_detector, to_detectron2_cfg
from .datasets import OpenVocabDatasetMapper
from .trainer import StrictCheckpointer


def load_for_inference(cfg, weights: str, vocabulary: ClassEmbeddings, novel: torch.Tensor | None = None):
    cfg = to_detectron2_cfg(cfg)
    with building_with(vocabulary):  # runs from anywhere: the training class embeddings are not read
        model = build_detector(cfg)
    StrictCheckpointer(model).load(weights)
    model.roi_heads.set_vocabulary(vocabulary, novel)
    model.eval()
    model.distill_cfg = cfg  # what `predict` reads images with
    return model


@torch.no_grad()
def predict(model, cfg, d: dict) -> dict:
    """One dataset-style dict ({file_name, height, width, image_id}) → detections in original pixels."""
    cfg = getattr(model, "distill_cfg", None) or to_detectron2_cfg(cfg)
    inst = model([OpenVocabDatasetMapper(cfg, False)(d)])[0]["instances"].to("cpu")
    out = {"boxes": inst.pred_boxes.tensor, "scores": inst.scores, "labels": inst.pred_classes}
    if inst.has("pred_masks"):
        out["masks"] = inst.pred_masks.float()
    return out
