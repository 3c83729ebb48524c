"""RPN proposals of a trained detector over a dataset, as the json list the region dump reads."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torchvision.models.detection.rpn import concat_box_prediction_layers

from ...modeling.clip_backbone import VLM_KEY
from ...teacher.regions import proposal_records
from ...utils.progress import job_progress
from .mapper import DatasetMapper, MapperConfig


@torch.no_grad()
def rpn_proposals(model, batch: list[dict], top_k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: (boxes (K, 4) XYXY in original pixels, objectness probabilities (K,)), best first."""
    images = model.preprocess(batch)
    features = OrderedDict(model.backbone(images.tensors))
    features.pop(VLM_KEY, None)
    feats = list(features.values())
    rpn = model.rpn
    objectness, deltas = rpn.head(feats)
    anchors = rpn.anchor_generator(images, feats)
    per_level = [o[0].numel() for o in objectness]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    props = rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
    boxes, scores = rpn.filter_proposals(props, objectness, images.image_sizes, per_level)
    out = []
    for b, s, item in zip(boxes, scores, batch):
        sy, sx = item["scale"]
        out.append((b[:top_k] / torch.tensor([sx, sy, sx, sy], device=b.device), s[:top_k]))
    return out


def iter_dataset_proposals(
    model,
    dicts: list[dict],
    min_size: int,
    max_size: int,
    top_k: int = 300,
    progress: bool = True,
    batch_size: int = 8,
):
    """Yields (image_id, boxes (K, 4) XYXY original pixels, scores (K,)) per image, `batch_size` images per
    forward pass (padded to one size, as in training); nothing is kept, so memory does not grow with the dataset."""

    model.eval()
    mapper = DatasetMapper(
        MapperConfig(min_sizes=(min_size,), max_size=max_size, is_train=False, mask_on=False)
    )
    with job_progress(None, progress, total=len(dicts), desc="proposals", unit="img") as bar:
        for i in range(0, len(dicts), batch_size):
            chunk = dicts[i : i + batch_size]
            for d, (boxes, scores) in zip(chunk, rpn_proposals(model, [mapper(d) for d in chunk], top_k)):
                yield d["image_id"], boxes.cpu(), scores.cpu()
            bar.update(len(chunk))


def dataset_proposals(
    model,
    dicts: list[dict],
    min_size: int,
    max_size: int,
    top_k: int = 300,
    progress: bool = True,
    batch_size: int = 8,
) -> list[dict]:
    """Proposals for every image: [{image_id, bbox [x, y, w, h], score}] (COCO result style)."""
    return [
        r
        for image_id, boxes, scores in iter_dataset_proposals(
            model, dicts, min_size, max_size, top_k, progress, batch_size
        )
        for r in proposal_records(image_id, boxes, scores)
    ]
