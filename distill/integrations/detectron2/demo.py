"""Inference on images with any vocabulary, drawn, for the detectron2 backend (the functions of the
torchvision backend's demo.py, so tools/demo.py can dispatch). `cfg` may be a torchvision-backend config
(`distill.config.load_config`) or a detectron2 one; detections are dicts of tensors in original pixels:
boxes (N, 4) XYXY, scores (N,), labels (N,) vocabulary indices and, with masks, masks (N, H, W) float 0/1.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...teacher.embeddings import ClassEmbeddings
from ..drawing import draw_predictions_grid as _draw_grid
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


def draw_predictions_grid(cfg, weights: str, bench_root: str | Path, out_png: str | Path, n: int = 6) -> Path:
    """Detections of the test vocabulary on the first `n` validation images that hold a novel object."""
    return _draw_grid(load_for_inference, predict, cfg, weights, bench_root, out_png, n)
