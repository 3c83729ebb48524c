"""The ground truth a streaming evaluator matches against, held as flat per-annotation arrays.

Annotations are ordered by image (sorted ids, as COCOeval / LVISEval walk them) and, within an image, kept
in file order, which is the order the reference evaluators break IoU ties in.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pycocotools.mask as mask_utils

from ..utils.errors import DistillInputError

# pycocotools / lvis Params, written the same way so the floats are the same
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]], dtype=np.float64)
AREA_NAMES = ("all", "small", "medium", "large")
MAX_DETS = {"coco": 100, "lvis": 300}  # COCO: per image and category; LVIS: per image


def out_of_range(area: np.ndarray) -> np.ndarray:
    """(N,) areas → (N, A) bool, outside each area range (bounds inclusive, as COCOeval)."""
    area = np.asarray(area, dtype=np.float64)[:, None]
    return (area < AREA_RANGES[None, :, 0]) | (area > AREA_RANGES[None, :, 1])


class GroundTruth:
    """Per-annotation arrays of a COCO / LVIS ground truth (a validated json dict).

    Attributes: cat_ids (K,) sorted; img_ids (I,) sorted; per annotation (M,) `cat` index into cat_ids,
    `box` (M, 4) xywh, `area`, `ignore` (M, A) per area range, `crowd`, `id_nonzero`; `start[i]:start[i+1]`
    the annotations of image i; `num_gt` (K, A) non-ignored ground truth per category and area range.
    LVIS adds per image `allowed` (categories present or negative) and `not_exhaustive` index arrays.
    """

    def __init__(self, gt: dict, protocol: str, task: str):
        self.protocol, self.task = protocol, task
        self.cat_ids = np.array(sorted({int(c["id"]) for c in gt["categories"]}), dtype=np.int64)
        images = sorted(gt["images"], key=lambda im: im["id"])
        self.img_ids = np.array([im["id"] for im in images], dtype=np.int64)
        if len(np.unique(self.img_ids)) != len(self.img_ids):
            raise DistillInputError("ground truth names an image id twice")
        self.img_pos = {int(i): p for p, i in enumerate(self.img_ids)}
        self.hw = [(int(im.get("height", 0)), int(im.get("width", 0))) for im in images]
        anns = gt["annotations"]
        img = np.array([self.img_pos.get(a["image_id"], -1) for a in anns], dtype=np.int64)
        if (img < 0).any():
            raise DistillInputError(
                f"annotation of unknown image {anns[int(np.argmax(img < 0))]['image_id']!r}"
            )
        order = np.argsort(img, kind="stable")
        self.anns = [anns[i] for i in order]  # references, for masks
        self.start = np.searchsorted(img[order], np.arange(len(images) + 1))
        self.cat = self.cat_index([a["category_id"] for a in self.anns], what="annotation")
        self.box = np.array([a["bbox"] for a in self.anns], dtype=np.float64).reshape(-1, 4)
        self.area = np.array([a["area"] for a in self.anns], dtype=np.float64)
        if protocol == "coco":  # COCOeval: ignore = iscrowd
            self.crowd = np.array([bool(a.get("iscrowd", 0)) for a in self.anns], dtype=bool)
            flagged = self.crowd
        else:  # LVISEval: its own "ignore" field, no crowd
            self.crowd = np.zeros(len(self.anns), dtype=bool)
            flagged = np.array([bool(a.get("ignore", 0)) for a in self.anns], dtype=bool)
        self.ignore = flagged[:, None] | out_of_range(self.area)
        self.id_nonzero = np.array([a.get("id", 1) != 0 for a in self.anns], dtype=bool)
        self.num_gt = np.zeros((len(self.cat_ids), len(AREA_RANGES)), dtype=np.int64)
        np.add.at(self.num_gt, self.cat, ~self.ignore)
        if protocol == "lvis":
            self._lvis_lists(images)

    def _lvis_lists(self, images: Sequence[dict]) -> None:
        self.allowed, self.not_exhaustive = [], []
        for p, im in enumerate(images):
            present = self.cat[self.start[p] : self.start[p + 1]]
            neg = self.cat_index(im.get("neg_category_ids", []), what="neg_category_ids", strict=False)
            self.allowed.append(np.union1d(present, neg))
            self.not_exhaustive.append(
                self.cat_index(
                    im.get("not_exhaustive_category_ids", []),
                    what="not_exhaustive_category_ids",
                    strict=False,
                )
            )

    def cat_index(self, ids, what: str = "prediction", strict: bool = True) -> np.ndarray:
        """Dataset category ids → indices into cat_ids; unknown ids are an error (or dropped, strict=False)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        k = np.searchsorted(self.cat_ids, ids).clip(0, max(len(self.cat_ids) - 1, 0))
        known = self.cat_ids[k] == ids if len(self.cat_ids) else np.zeros(len(ids), bool)
        if not known.all():
            if strict:
                raise DistillInputError(f"{what} names unknown category_id {int(ids[~known][0])}")
            k = k[known]
        return k

    def geometry(self, rows: np.ndarray, image: int) -> list | np.ndarray:
        """Boxes (n, 4) or RLEs of the annotations at `rows` (the RLEs made here, once per use)."""
        if self.task == "bbox":
            return self.box[rows]
        h, w = self.hw[image]
        out = []
        for r in rows:
            seg = self.anns[r]["segmentation"]
            if isinstance(seg, list):
                out.append(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
            elif isinstance(seg.get("counts"), list):
                out.append(mask_utils.frPyObjects(seg, h, w))
            else:
                out.append(seg)
        return out
