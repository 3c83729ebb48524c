"""The ViLD detector on torchvision parts: ResNet-FPN backbone, torchvision's RPN, `OpenVocabROIHeads`.

Inputs are the core mapper's dicts (images already resized / flipped, boxes and distillation proposals
transformed with them); outputs are in original-image pixels.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from ...modeling.clip_backbone import VLM_KEY
from ...modeling.masks import BoxMasks, iter_full_masks


def normalize_and_pad(
    images, pixel_mean: torch.Tensor, pixel_std: torch.Tensor, size_divisible: int
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(3, h_i, w_i) 0-255 RGB images → ((B, 3, H, W) float32 normalised, zero past each image, H and W rounded
    up to `size_divisible`; [(h_i, w_i)]), on the device of `pixel_mean` (3, 1, 1)."""
    imgs = [(i.to(pixel_mean.device).float() - pixel_mean) / pixel_std for i in images]
    d = size_divisible
    hmax = -(-max(i.shape[1] for i in imgs) // d) * d
    wmax = -(-max(i.shape[2] for i in imgs) // d) * d
    out = imgs[0].new_zeros(len(imgs), 3, hmax, wmax)
    for o, i in zip(out, imgs):
        o[:, : i.shape[1], : i.shape[2]].copy_(i)
    return out, [tuple(i.shape[1:]) for i in imgs]


class OpenVocabDetector(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        rpn: nn.Module,
        roi_heads: nn.Module,
        pixel_mean,
        pixel_std,
        size_divisible: int = 32,
    ):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        self.size_divisible = size_divisible

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, batch: list[dict]) -> ImageList:
        """Normalise and zero-pad the (3, h, w) 0-255 RGB images into one (B, 3, H, W) batch."""
        out, sizes = normalize_and_pad(
            [b["image"] for b in batch], self.pixel_mean, self.pixel_std, self.size_divisible
        )
        return ImageList(out, sizes)

    def _targets(self, batch: list[dict]) -> list[dict]:
        targets = []
        for b in batch:
            t = {"boxes": b["boxes"].to(self.device), "labels": b["labels"].to(self.device) + 1}  # tv: 0 = bg
            if "masks" in b:
                t["masks"] = b["masks"].to(self.device)
            targets.append(t)
        return targets

    def forward(self, batch: list[dict]):
        """Training: dict of losses. Inference: per-image dicts of boxes (XYXY, original pixels), scores,
        labels (contiguous ids of the current vocabulary) and, with masks, BoxMasks (N, H, W), pasted on demand."""
        images = self.preprocess(batch)
        features = self.backbone(images.tensors)
        features = OrderedDict(features)
        vlm = features.pop(VLM_KEY, None)  # a frozen teacher tower's region embedder: for the RoI heads only
        targets = self._targets(batch) if self.training else None
        proposals, rpn_losses = self.rpn(images, features, targets)
        objectness = getattr(self.rpn, "last_scores", None) if self.training else None
        detections, roi_losses = self.roi_heads(
            features, proposals, images.image_sizes, targets, batch, vlm=vlm, objectness=objectness
        )
        if self.training:
            return {**rpn_losses, **roi_losses}
        return [self._to_original(d, b) for d, b in zip(detections, batch)]

    @staticmethod
    def _to_original(det: dict, b: dict) -> dict:
        sy, sx = b["scale"]
        boxes = det["boxes"] / torch.tensor([sx, sy, sx, sy], device=det["boxes"].device)
        out = {"boxes": boxes, "scores": det["scores"], "labels": det["labels"]}
        if "masks" in det:
            h, w = b["height"], b["width"]
            out["masks"] = BoxMasks(det["masks"], boxes, (h, w))  # pasted one at a time, into its box
        return out


def detections_to_coco(
    det: dict, image_id: int, category_ids: list[int], mask_threshold: float = 0.5
) -> list[dict]:
    """One image's detections → COCO result dicts (bbox XYWH, RLE masks when present)."""
    import numpy as np
    import pycocotools.mask as mask_utils

    boxes = det["boxes"].detach().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    scores = det["scores"].detach().cpu().tolist()
    labels = det["labels"].detach().cpu().tolist()
    out = [
        {
            "image_id": image_id,
            "category_id": category_ids[lab],
            "bbox": [round(v, 2) for v in b],
            "score": round(s, 5),
        }
        for b, s, lab in zip(xywh, scores, labels)
    ]
    if "masks" in det:
        for o, m in zip(out, iter_full_masks(det["masks"], mask_threshold)):
            rle = mask_utils.encode(np.asfortranarray(m))
            o["segmentation"] = {
                "size": [int(x) for x in rle["size"]],
                "counts": rle["counts"].decode("ascii"),
            }
    return out
