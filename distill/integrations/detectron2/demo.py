"""Inference on images with any vocabulary, drawn, for the detectron2 backend (the functions of the
torchvision backend's demo.py, so tools/demo.py can dispatch). `cfg` may be a torchvision-backend config
(`distill.config.load_config`) or a detectron2 one; detections are dicts of tensors in original pixels:
boxes (N, 4) XYXY, scores (N,), labels (N,) vocabulary indices and, with masks, masks (N, H, W) float 0/1.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ...data.datasets import synthetic_dataset
from ...teacher.embeddings import ClassEmbeddings
from ...utils.io import atomic_write_bytes
from ...utils.visualize import draw_detections
from .builders import build_vild_model, to_detectron2_cfg
from .datasets import ViLDDatasetMapper
from .trainer import StrictCheckpointer


def load_for_inference(cfg, weights: str, vocabulary: ClassEmbeddings, novel: torch.Tensor | None = None):
    cfg = to_detectron2_cfg(cfg)
    model = build_vild_model(cfg)
    StrictCheckpointer(model).load(weights)
    model.roi_heads.set_vocabulary(vocabulary, novel)
    model.eval()
    model.distill_cfg = cfg  # what `predict` reads images with
    return model


@torch.no_grad()
def predict(model, cfg, d: dict) -> dict:
    """One dataset-style dict ({file_name, height, width, image_id}) → detections in original pixels."""
    cfg = getattr(model, "distill_cfg", None) or to_detectron2_cfg(cfg)
    inst = model([ViLDDatasetMapper(cfg, False)(d)])[0]["instances"].to("cpu")
    out = {"boxes": inst.pred_boxes.tensor, "scores": inst.scores, "labels": inst.pred_classes}
    if inst.has("pred_masks"):
        out["masks"] = inst.pred_masks.float()
    return out


def render(image_rgb: np.ndarray, det: dict, names, novel=None, score_thresh: float = 0.3, scale: int = 3):
    keep = det["scores"] >= score_thresh
    masks = (det["masks"][keep] > 0.5).cpu().numpy() if "masks" in det else None
    return draw_detections(image_rgb, det["boxes"][keep].cpu().numpy(), det["labels"][keep].tolist(),
                           det["scores"][keep].tolist(), names, masks, novel, scale)


def draw_predictions_grid(cfg, weights: str, bench_root: str | Path, out_png: str | Path, n: int = 6) -> Path:
    """Detections of the test vocabulary on the first `n` validation images that hold a novel object."""
    dicts, meta = synthetic_dataset(bench_root, "val")
    vocab = ClassEmbeddings.load(cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS, expected_names=meta.thing_classes)
    novel = torch.zeros(len(meta.thing_classes), dtype=torch.bool)
    novel[meta.contiguous_ids("novel")] = True
    model = load_for_inference(cfg, weights, vocab, novel)
    picks = [d for d in dicts if any(novel[a["category_id"]] for a in d["annotations"])][:n]
    tiles = []
    for d in picks:
        rgb = cv2.imread(d["file_name"])[:, :, ::-1]
        tiles.append(render(np.ascontiguousarray(rgb), predict(model, cfg, d), meta.thing_classes, novel.tolist()))
    grid = np.concatenate(tiles, 1) if tiles else np.zeros((8, 8, 3), np.uint8)
    ok, buf = cv2.imencode(".png", grid[:, :, ::-1])
    atomic_write_bytes(out_png, buf.tobytes())
    return Path(out_png)
