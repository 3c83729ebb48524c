"""Deterministic LVIS- and COCO-shaped evaluation loads: ground-truth dicts and per-image detections.

For the evaluation benchmark and the evaluator's parity tests. LVIS: 1,203 categories with r / c / f
337 / 461 / 405, negative and not-exhaustive category ids per image; COCO: 80 categories, some crowd boxes.
Detections are jittered copies of the ground truth (some with the wrong class) plus false positives, with
scores on a coarse grid so that score ties occur. Image i's detections depend only on (seed, i), so separate
processes produce the same load without sharing a file.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

H, W = 480, 640


def _polygon(box: np.ndarray) -> list[float]:
    """An octagon inside an xywh box (a mask that is not its box)."""
    x, y, w, h = box
    fx = np.array([0.3, 0.7, 1.0, 1.0, 0.7, 0.3, 0.0, 0.0])
    fy = np.array([0.0, 0.0, 0.3, 0.7, 1.0, 1.0, 0.7, 0.3])
    return np.stack([x + fx * w, y + fy * h], 1).reshape(-1).round(2).tolist()


def _boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    side = np.exp(rng.uniform(np.log(8), np.log(300), (n, 2)))  # small, medium and large objects
    w, h = np.minimum(side[:, 0], W - 1), np.minimum(side[:, 1], H - 1)
    x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
    return np.stack([x, y, w, h], 1).round(2)


def make_ground_truth(num_images: int, shape: str = "lvis", objects: int = 12, seed: int = 0) -> dict:
    """A COCO / LVIS-format ground-truth dict (polygon segmentations, areas from the polygons)."""
    rng = np.random.default_rng([seed, 0])
    if shape == "lvis":
        freq = ["r"] * 337 + ["c"] * 461 + ["f"] * 405
        cats = [{"id": i + 1, "name": f"c{i + 1}", "frequency": f} for i, f in enumerate(freq)]
        weight = np.array([{"r": 1.0, "c": 10.0, "f": 100.0}[f] for f in freq])
    else:
        cats = [{"id": i + 1, "name": f"c{i + 1}"} for i in range(80)]
        weight = np.ones(80)
    weight /= weight.sum()
    ids = np.array([c["id"] for c in cats])
    images, anns = [], []
    for i in range(1, num_images + 1):
        n = max(1, int(rng.poisson(objects)))
        present = rng.choice(ids, size=min(n, 1 + n // 3), replace=False, p=weight)
        cat = rng.choice(present, size=n)
        im = {"id": i, "file_name": f"{i:012d}.jpg", "height": H, "width": W}
        if shape == "lvis":
            others = np.setdiff1d(ids, present)
            im["neg_category_ids"] = rng.choice(others, size=8, replace=False).tolist()
            im["not_exhaustive_category_ids"] = [int(c) for c in present if rng.random() < 0.15]
        images.append(im)
        for box, c in zip(_boxes(rng, n), cat):
            poly = _polygon(box)
            rle = mask_utils.frPyObjects([poly], H, W)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": box.tolist(),
                    "segmentation": [poly],
                    "area": float(mask_utils.area(rle)[0]),
                    "iscrowd": int(shape == "coco" and rng.random() < 0.01),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}


def image_detections(
    cat_ids: np.ndarray, image: dict, anns: list[dict], num_dets: int, seed: int = 0, masks: bool = False
) -> dict:
    """Detections of one image (its gt dict and annotations; all category ids): category_ids (N,), scores (N,),
    boxes (N, 4) xywh, masks (N RLEs or None)."""
    rng = np.random.default_rng([seed, 1, image["id"]])
    boxes, cats = [], []
    for a in anns:
        for _ in range(3):
            j = rng.normal(0, 0.08, 4) * np.array(a["bbox"])[[2, 3, 2, 3]]
            boxes.append(np.array(a["bbox"]) + j)
            cats.append(a["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids)))
    boxes, cats = boxes[:num_dets], cats[:num_dets]
    rest = num_dets - len(boxes)
    out_boxes = np.concatenate([np.array(boxes).reshape(-1, 4), _boxes(rng, rest)])
    out_boxes[:, 2:] = np.maximum(out_boxes[:, 2:], 1.0)
    pool = np.concatenate([cat_ids, np.array(image.get("neg_category_ids", []), dtype=np.int64).repeat(20)])
    out_cats = np.concatenate([np.array(cats, dtype=np.int64), rng.choice(pool, size=rest)])
    scores = rng.integers(1, 1000, size=num_dets) / 1000.0  # ties on purpose
    out = {"category_ids": out_cats, "scores": scores, "boxes": out_boxes.round(2), "masks": None}
    if masks:
        out["masks"] = [mask_utils.frPyObjects([_polygon(b)], H, W)[0] for b in out["boxes"]]
    return out


def iter_images(gt: dict):
    """(image dict, its annotations) in image order."""
    by_image: dict = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        by_image[a["image_id"]].append(a)
    for im in gt["images"]:
        yield im, by_image[im["id"]]


def results_of(det: dict, image_id: int) -> list[dict]:
    """One image's detections as COCO-format result dicts (what lvis-api / pycocotools read)."""
    out = [
        {"image_id": image_id, "category_id": int(c), "score": float(s), "bbox": b.tolist()}
        for c, s, b in zip(det["category_ids"], det["scores"], det["boxes"])
    ]
    if det["masks"] is not None:
        for r, m in zip(out, det["masks"]):
            r["segmentation"] = m
    return out
