"""RPN proposals of a trained detector over a dataset, as the json list the region dump reads (the
detectron2 counterpart of the torchvision backend's proposals.py)."""

from __future__ import annotations

import torch
from detectron2.data import DatasetMapper
from detectron2.modeling.postprocessing import detector_postprocess

from ...teacher.regions import proposal_records
from ...utils.progress import job_progress
from .datasets import ResizeShortestEdge


@torch.no_grad()
def rpn_proposals(model, batch: list[dict], top_k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: (boxes (K, 4) XYXY in original pixels, objectness probabilities (K,)), best first."""
    images = model.preprocess_image(batch)
    proposals, _ = model.proposal_generator(images, model.backbone(images.tensor), None)
    out = []
    for p, item in zip(proposals, batch):
        p = detector_postprocess(p[:top_k], item["height"], item["width"])
        out.append((p.proposal_boxes.tensor, p.objectness_logits.sigmoid()))
    return out


def iter_dataset_proposals(
    model, dicts: list[dict], min_size: int, max_size: int, top_k: int = 300, progress: bool = True
):
    """Yields (image_id, boxes (K, 4) XYXY original pixels, scores (K,)) per image; nothing is kept."""

    model.eval()
    mapper = DatasetMapper(
        is_train=False,
        augmentations=[ResizeShortestEdge(min_size, max_size)],
        image_format=model.input_format,
    )
    for d in job_progress(dicts, progress, desc="proposals", unit="img"):
        ((boxes, scores),) = rpn_proposals(model, [mapper(d)], top_k)
        yield d["image_id"], boxes.cpu(), scores.cpu()


def dataset_proposals(
    model, dicts: list[dict], min_size: int, max_size: int, top_k: int = 300, progress: bool = True
) -> list[dict]:
    """Proposals for every image: [{image_id, bbox [x, y, w, h], score}] (COCO result style)."""
    return [
        r
        for image_id, boxes, scores in iter_dataset_proposals(
            model, dicts, min_size, max_size, top_k, progress
        )
        for r in proposal_records(image_id, boxes, scores)
    ]
