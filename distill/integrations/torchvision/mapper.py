"""Dataset dict → model input: read, resize (shortest edge), flip; boxes, masks and the distillation
proposals follow the image's transform (ViLD: proposals get the same flip / resize as the image).

Output of `DatasetMapper.__call__`::

    {"image": (3, h, w) float32 RGB 0-255, "image_id", "height", "width" (original size),
     "scale": (sy, sx) resized / original, "flipped": bool,
     "boxes": (N, 4) XYXY in resized pixels, "labels": (N,) contiguous ids, "masks": (N, h, w) uint8,
     METHOD_TARGETS: what the distillation method attaches (e.g. ViLD's `RegionTargets`)}  # training
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F

from ...data.images import read_image_rgb
from ...methods import METHOD_TARGETS
from ...methods.targets import clip_boxes as _clip
from ...utils.errors import DistillInputError


@dataclass
class MapperConfig:
    min_sizes: Sequence[int] = (800,)  # training: one picked at random per image; test: the last
    max_size: int = 1333
    is_train: bool = True
    flip_prob: float = 0.5
    mask_on: bool = True
    # large-scale jitter (training): (square side, min scale, max scale), replacing min_sizes / max_size
    lsj: tuple[int, float, float] | None = None


def resized_hw(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Shortest edge to `short`, longest edge at most `max_size` (detectron2's ResizeShortestEdge); a side
    is at least 1 pixel (a 1x4000 sliver would otherwise resize to nothing). `short` 0: no resize, as there."""
    if short <= 0:
        return h, w
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def decode_segmentation(segm, h: int, w: int) -> np.ndarray:
    """COCO polygons, uncompressed or compressed RLE → (h, w) uint8."""
    if isinstance(segm, list):
        if not segm:
            return np.zeros((h, w), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, h, w)
    elif isinstance(segm, dict):
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise DistillInputError(f"unsupported segmentation of type {type(segm).__name__}")
    return mask_utils.decode(rle)


def _flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


class DatasetMapper:
    def __init__(self, cfg: MapperConfig, targets=None, seed: int | None = None):
        """targets: the method's `TargetSource` (training records only), or None."""
        self.cfg = cfg
        self.targets = targets
        self.rng = random.Random(seed)

    def __call__(self, d: dict) -> dict:
        img = read_image_rgb(d["file_name"])
        h0, w0 = img.shape[1:]
        if (h0, w0) != (d["height"], d["width"]):
            raise DistillInputError(
                f"image is {w0}x{h0} but the annotations say {d['width']}x{d['height']}", d["file_name"]
            )
        lsj = self.cfg.lsj if self.cfg.is_train else None
        if lsj:
            size, lo, hi = lsj
            scale = self.rng.uniform(lo, hi) * size / max(h0, w0)
            h, w = max(1, int(round(h0 * scale))), max(1, int(round(w0 * scale)))
        else:
            short = self.rng.choice(list(self.cfg.min_sizes)) if self.cfg.is_train else self.cfg.min_sizes[-1]
            h, w = resized_hw(h0, w0, short, self.cfg.max_size)
        sy, sx = h / h0, w / w0
        image = img.float()[None]
        if (h, w) != (h0, w0):
            image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)
        image = image[0]
        # LSJ: a random size x size window of the resized image (the whole image when it is smaller)
        oy = self.rng.randint(0, max(0, h - lsj[0])) if lsj else 0
        ox = self.rng.randint(0, max(0, w - lsj[0])) if lsj else 0
        if lsj:
            h, w = min(h, lsj[0]), min(w, lsj[0])
            image = image[:, oy : oy + h, ox : ox + w]
        flip = self.cfg.is_train and self.rng.random() < self.cfg.flip_prob
        if flip:
            image = image.flip(-1)
        out = {
            "image": image,
            "image_id": d["image_id"],
            "height": h0,
            "width": w0,
            "scale": (sy, sx),
            "flipped": flip,
            "file_name": d["file_name"],
        }
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        scale = torch.tensor([sx, sy, sx, sy])
        boxes = torch.tensor(
            [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in anns
            ],
            dtype=torch.float32,
        ).view(-1, 4)
        offset = torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
        boxes = boxes * scale
        keep = torch.ones(len(anns), dtype=torch.bool)
        if lsj:  # cropped: clip, and drop the objects the window cut away
            boxes = _clip(boxes - offset, h, w)
            keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
            boxes = boxes[keep]
            anns = [a for a, k in zip(anns, keep.tolist()) if k]
        if flip:
            boxes = _flip_boxes(boxes, w)
        out["boxes"] = boxes
        out["labels"] = torch.tensor([a["category_id"] for a in anns], dtype=torch.long)
        if self.cfg.mask_on and anns:
            if any("segmentation" not in a for a in anns):
                raise DistillInputError(
                    "mask training needs a segmentation on every annotation", d["file_name"]
                )
            m = torch.from_numpy(np.stack([decode_segmentation(a["segmentation"], h0, w0) for a in anns]))
            hr, wr = int(round(h0 * sy)), int(round(w0 * sx))
            m = F.interpolate(m[None].float(), size=(hr, wr), mode="nearest")[0].to(torch.uint8)
            m = m[:, oy : oy + h, ox : ox + w]
            out["masks"] = m.flip(-1) if flip else m
        elif self.cfg.mask_on:
            out["masks"] = torch.zeros(0, h, w, dtype=torch.uint8)
        if self.targets is not None and self.cfg.is_train:

            def transform(b: torch.Tensor) -> torch.Tensor:  # original pixels → this record's input image
                b = b * scale - offset
                return _flip_boxes(b, w) if flip else b

            out[METHOD_TARGETS] = self.targets(d["image_id"], transform, (h, w))
        return out
