"""COCO-2017- and LVIS-v1-shaped trees: the real files' layout, category lists, image sizes and annotation
kinds, with a handful of drawn images, so the recipes of configs/ov_coco and configs/ov_lvis run end to end
where the datasets cannot be downloaded.

    python -m distill.data.shaped OUT [--num-train 3] [--num-val 2]

writes, under OUT (a $DISTILL_DATASETS)::

    coco/train2017/000000000001.jpg ...   JPEGs at COCO sizes (640x480, 427x640, ...)
    coco/val2017/...
    coco/annotations/instances_{train,val}2017.json   the 80 COCO categories (real ids and names), boxes,
                                                      polygon masks, iscrowd RLE annotations, and a
                                                      training image without annotations
    lvis/lvis_v1_{train,val}.json         1,203 categories (frequency r / c / f = 337 / 461 / 405),
                                          neg_category_ids, not_exhaustive_category_ids, coco_url paths to
                                          the COCO images above

Objects are filled polygons on noise, so boxes and masks agree with the pixels. Deterministic per seed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from ..utils.errors import DistillInputError
from ..utils.io import atomic_write_bytes, atomic_write_json

# COCO 2017 instance categories: (id, name, supercategory)
COCO_CATEGORIES = [
    (1, "person", "person"),
    (2, "bicycle", "vehicle"),
    (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"),
    (6, "bus", "vehicle"),
    (7, "train", "vehicle"),
    (8, "truck", "vehicle"),
    (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"),
    (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"),
    (15, "bench", "outdoor"),
    (16, "bird", "animal"),
    (17, "cat", "animal"),
    (18, "dog", "animal"),
    (19, "horse", "animal"),
    (20, "sheep", "animal"),
    (21, "cow", "animal"),
    (22, "elephant", "animal"),
    (23, "bear", "animal"),
    (24, "zebra", "animal"),
    (25, "giraffe", "animal"),
    (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"),
    (31, "handbag", "accessory"),
    (32, "tie", "accessory"),
    (33, "suitcase", "accessory"),
    (34, "frisbee", "sports"),
    (35, "skis", "sports"),
    (36, "snowboard", "sports"),
    (37, "sports ball", "sports"),
    (38, "kite", "sports"),
    (39, "baseball bat", "sports"),
    (40, "baseball glove", "sports"),
    (41, "skateboard", "sports"),
    (42, "surfboard", "sports"),
    (43, "tennis racket", "sports"),
    (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"),
    (47, "cup", "kitchen"),
    (48, "fork", "kitchen"),
    (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"),
    (51, "bowl", "kitchen"),
    (52, "banana", "food"),
    (53, "apple", "food"),
    (54, "sandwich", "food"),
    (55, "orange", "food"),
    (56, "broccoli", "food"),
    (57, "carrot", "food"),
    (58, "hot dog", "food"),
    (59, "pizza", "food"),
    (60, "donut", "food"),
    (61, "cake", "food"),
    (62, "chair", "furniture"),
    (63, "couch", "furniture"),
    (64, "potted plant", "furniture"),
    (65, "bed", "furniture"),
    (67, "dining table", "furniture"),
    (70, "toilet", "furniture"),
    (72, "tv", "electronic"),
    (73, "laptop", "electronic"),
    (74, "mouse", "electronic"),
    (75, "remote", "electronic"),
    (76, "keyboard", "electronic"),
    (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"),
    (79, "oven", "appliance"),
    (80, "toaster", "appliance"),
    (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"),
    (84, "book", "indoor"),
    (85, "clock", "indoor"),
    (86, "vase", "indoor"),
    (87, "scissors", "indoor"),
    (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"),
    (90, "toothbrush", "indoor"),
]
# (width, height) of real COCO 2017 images, landscape and portrait
COCO_SIZES = [(640, 480), (427, 640), (640, 427), (500, 375), (480, 640), (640, 360)]
LVIS_FREQUENCIES = {"r": 337, "c": 461, "f": 405}
# objects per annotated image; one of each image's objects is a novel (COCO) / rare (LVIS) category
OBJECTS_PER_IMAGE = 4


def _polygon(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A random star-shaped polygon (K, 2) in pixels, inside the image."""
    k = int(rng.integers(5, 10))
    size = rng.uniform(0.12, 0.35) * min(w, h)
    cx, cy = rng.uniform(size, w - size), rng.uniform(size, h - size)
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = size * rng.uniform(0.5, 1.0, k)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).clip(0, [w - 1, h - 1])


def _draw_image(rng: np.random.Generator, w: int, h: int, polys: list[np.ndarray]) -> np.ndarray:
    img = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    for p in polys:
        cv2.fillPoly(img, [np.round(p).astype(np.int32)], [int(v) for v in rng.integers(0, 256, 3)])
    return img


def _annotation(poly: np.ndarray, w: int, h: int, crowd: bool) -> dict:
    """COCO annotation fields of one polygon: polygon segmentation, or an uncompressed RLE when crowd."""
    flat = [round(float(v), 2) for v in poly.reshape(-1)]
    rle = mask_utils.frPyObjects([flat], h, w)[0]
    x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
    ann = {
        "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
        "area": float(mask_utils.area(rle)),
        "iscrowd": int(crowd),
    }
    if crowd:  # COCO writes crowd regions as uncompressed RLE
        flat_mask = mask_utils.decode(rle).reshape(-1, order="F")
        edges = np.flatnonzero(np.diff(flat_mask)) + 1
        counts = np.diff(np.concatenate([[0], edges, [flat_mask.size]])).tolist()
        if flat_mask[0]:
            counts = [0] + counts
        ann["segmentation"] = {"counts": counts, "size": [h, w]}
    else:
        ann["segmentation"] = [flat]
    return ann


def _write_jpeg(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise DistillInputError("cannot encode image", path)
    atomic_write_bytes(path, buf.tobytes())


def lvis_categories() -> list[dict]:
    """1,203 LVIS-v1-shaped categories: ids 1..1203, frequencies r / c / f = 337 / 461 / 405 interleaved."""
    freqs = [f for f, n in LVIS_FREQUENCIES.items() for _ in range(n)]
    order = np.random.default_rng(1203).permutation(len(freqs))
    cats = []
    for cid, k in enumerate(order, 1):
        f = freqs[k]
        name = f"{ {'r': 'rare', 'c': 'common', 'f': 'frequent'}[f] }_object_{cid:04d}"
        cats.append(
            {
                "id": cid,
                "name": name,
                "synonyms": [name],
                "def": f"an LVIS-shaped category ({f})",
                "synset": f"{name}.n.01",
                "frequency": f,
                "image_count": 0,
                "instance_count": 0,
            }
        )
    return cats


def _coco_split(split: str, n: int, first_id: int, rng: np.random.Generator, root: Path) -> dict:
    """One COCO split: images written, annotations with one novel object per image; in training the last
    image has no annotations and the first one holds a crowd region."""
    from .ov_splits import ov_coco_split

    novel, base = ov_coco_split().novel, ov_coco_split().base
    others = [c[0] for c in COCO_CATEGORIES if c[0] not in novel and c[0] not in base]
    images, anns = [], []
    for i in range(n):
        image_id = first_id + i
        w, h = COCO_SIZES[(image_id - 1) % len(COCO_SIZES)]
        empty = split == "train" and i == n - 1
        polys = [] if empty else [_polygon(rng, w, h) for _ in range(OBJECTS_PER_IMAGE)]
        cats = [int(rng.choice(novel)), int(rng.choice(base)), int(rng.choice(base)), int(rng.choice(others))]
        file_name = f"{image_id:012d}.jpg"
        _write_jpeg(root / "coco" / f"{split}2017" / file_name, _draw_image(rng, w, h, polys))
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": w,
                "height": h,
                "license": 1,
                "coco_url": f"http://images.cocodataset.org/{split}2017/{file_name}",
                "date_captured": "2013-11-14 16:28:13",
            }
        )
        for j, (poly, cid) in enumerate(zip(polys, cats)):
            crowd = split == "train" and i == 0 and j == len(polys) - 1
            anns.append(
                {
                    "id": len(anns) + first_id * 100 + 1,
                    "image_id": image_id,
                    "category_id": cid,
                    **_annotation(poly, w, h, crowd),
                }
            )
    categories = [{"id": cid, "name": name, "supercategory": sup} for cid, name, sup in COCO_CATEGORIES]
    return {
        "info": {"description": "COCO 2017-shaped (distill.data.shaped)", "year": 2017},
        "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
        "images": images,
        "annotations": anns,
        "categories": categories,
    }


def _lvis_split(coco: dict, split: str, cats: list[dict], rng: np.random.Generator) -> dict:
    """LVIS annotations on the images of a COCO split: the same polygons, LVIS categories (one rare per image)."""
    by_freq = {f: [c["id"] for c in cats if c["frequency"] == f] for f in "rcf"}
    images, anns = [], []
    per_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        if not a["iscrowd"]:
            per_image.setdefault(a["image_id"], []).append(a)
    for im in coco["images"]:
        objs = per_image.get(im["id"], [])
        freqs = ["r", "f", "c", "f"][: len(objs)]
        ids = [int(rng.choice(by_freq[f])) for f in freqs]
        neg = sorted({int(v) for v in rng.choice(by_freq["f"], 3, replace=False)} - set(ids))
        images.append(
            {
                "id": im["id"],
                "width": im["width"],
                "height": im["height"],
                "coco_url": im["coco_url"],
                "flickr_url": "",
                "date_captured": im["date_captured"],
                "license": 1,
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": ids[-1:],
            }
        )
        for a, cid in zip(objs, ids):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": cid,
                    "bbox": a["bbox"],
                    "area": a["area"],
                    "segmentation": a["segmentation"],
                }
            )
    counts = {c["id"]: set() for c in cats}
    for a in anns:
        counts[a["category_id"]].add(a["image_id"])
    out_cats = [
        {
            **c,
            "image_count": len(counts[c["id"]]),
            "instance_count": sum(a["category_id"] == c["id"] for a in anns),
        }
        for c in cats
    ]
    return {
        "info": {"description": f"LVIS v1-shaped {split} (distill.data.shaped)", "version": "1.0"},
        "licenses": coco["licenses"],
        "images": images,
        "annotations": anns,
        "categories": out_cats,
    }


def write_shaped_tree(root: str | os.PathLike, num_train: int = 3, num_val: int = 2, seed: int = 0) -> Path:
    """Write coco/ and lvis/ under `root` (see the module docstring); returns `root`."""
    if num_train < 2 or num_val < 1:
        raise DistillInputError("a shaped tree needs at least 2 training images and 1 validation image")
    root = Path(root)
    rng = np.random.default_rng(seed)
    cats = lvis_categories()
    for split, n, first in (("train", num_train, 1), ("val", num_val, num_train + 1)):
        coco = _coco_split(split, n, first, rng, root)
        atomic_write_json(root / "coco" / "annotations" / f"instances_{split}2017.json", coco)
        atomic_write_json(root / "lvis" / f"lvis_v1_{split}.json", _lvis_split(coco, split, cats, rng))
    return root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write COCO-2017- and LVIS-v1-shaped trees (a $DISTILL_DATASETS)")
    p.add_argument("out")
    p.add_argument("--num-train", type=int, default=3)
    p.add_argument("--num-val", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        root = write_shaped_tree(args.out, args.num_train, args.num_val, args.seed)
    except DistillInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote COCO- and LVIS-shaped trees under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
