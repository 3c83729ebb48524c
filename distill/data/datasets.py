"""COCO / LVIS json → Detectron2-format dataset dicts, without importing detectron2.

A dataset dict::

    {"file_name": str, "height": int, "width": int, "image_id": int,
     "annotations": [{"bbox": [x, y, w, h], "bbox_mode": BOX_MODE_XYWH_ABS,
                      "category_id": contiguous id in [0, C), "segmentation": polygons | RLE dict,
                      "iscrowd": 0 | 1}, ...],
     # when present in the json:
     "sem_seg_file_name": str, "neg_category_ids": [...], "not_exhaustive_category_ids": [...]}

Contiguous ids follow the sorted dataset category ids, as detectron2 does; `DatasetMetadata` holds the
mapping and the open-vocabulary split.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.errors import DistillInputError
from ..utils.io import read_json
from .ov_splits import CategorySplit, split_from_categories

logger = logging.getLogger(__name__)

# Value of detectron2.structures.BoxMode.XYWH_ABS (an IntEnum), so dicts are usable there as they are.
BOX_MODE_XYWH_ABS = 1


@dataclass
class DatasetMetadata:
    """What a model and an evaluator need to know about a dataset's categories."""

    json_file: str
    image_root: str
    evaluator_type: str  # "coco" or "lvis"
    category_ids: list[int]  # dataset ids, sorted; index = contiguous id
    thing_classes: list[str]
    split: CategorySplit | None = None
    sem_seg_root: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def thing_dataset_id_to_contiguous_id(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.category_ids)}

    def contiguous_ids(self, group: str) -> list[int]:
        """Contiguous ids of the "base" or "novel" categories (all categories are base without a split)."""
        if self.split is None:
            return list(range(len(self.category_ids))) if group == "base" else []
        wanted = set(getattr(self.split, group))
        return [i for i, cid in enumerate(self.category_ids) if cid in wanted]


def _require(obj: dict, keys: tuple[str, ...], what: str, path: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        ident = f" (id {obj['id']})" if "id" in obj else ""
        raise DistillInputError(f"{what}{ident} is missing field(s) {', '.join(map(repr, missing))}", path)


def validate_instances_json(data: Any, path: str, lvis: bool = False) -> None:
    """Check the fields the loaders and evaluators read; one clear error for the first problem."""
    if not isinstance(data, dict):
        raise DistillInputError("expected a json object with images, annotations and categories", path)
    _require(data, ("images", "annotations", "categories"), "annotation file", path)
    for k in ("images", "annotations", "categories"):
        if not isinstance(data[k], list):
            raise DistillInputError(f"'{k}' must be a list", path)
    for c in data["categories"]:
        _require(c, ("id", "name") + (("frequency",) if lvis else ()), "category", path)
    image_keys = ("id", "height", "width") + (
        ("neg_category_ids", "not_exhaustive_category_ids") if lvis else ()
    )
    for im in data["images"]:
        _require(im, image_keys, "image", path)
        if "file_name" not in im and "coco_url" not in im:
            raise DistillInputError(f"image {im['id']} has neither 'file_name' nor 'coco_url'", path)
    image_ids = {im["id"] for im in data["images"]}
    cat_ids = {c["id"] for c in data["categories"]}
    for a in data["annotations"]:
        _require(
            a, ("id", "image_id", "category_id", "bbox") + (("area",) if lvis else ()), "annotation", path
        )
        if a["image_id"] not in image_ids:
            raise DistillInputError(f"annotation {a['id']} names unknown image_id {a['image_id']}", path)
        if a["category_id"] not in cat_ids:
            raise DistillInputError(
                f"annotation {a['id']} names unknown category_id {a['category_id']}", path
            )
        if not (isinstance(a["bbox"], list) and len(a["bbox"]) == 4):
            raise DistillInputError(f"annotation {a['id']} has a bbox that is not [x, y, w, h]", path)


def _image_file(im: dict, image_root: str, lvis: bool) -> str:
    if "file_name" in im and not (lvis and "coco_url" in im):
        return os.path.join(image_root, im["file_name"])
    # LVIS v1 names images by their COCO url: .../train2017/000000391895.jpg
    split_folder, name = im["coco_url"].split("/")[-2:]
    return os.path.join(image_root, split_folder, name)


def _load(json_file, image_root, sem_seg_root, lvis: bool) -> tuple[list[dict], DatasetMetadata]:
    json_file = str(json_file)
    data = read_json(json_file, what="annotation file")
    validate_instances_json(data, json_file, lvis=lvis)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    meta = DatasetMetadata(
        json_file=json_file,
        image_root=str(image_root),
        evaluator_type="lvis" if lvis else "coco",
        category_ids=[c["id"] for c in cats],
        thing_classes=[c["name"] for c in cats],
        split=split_from_categories(cats),
        sem_seg_root=None if sem_seg_root is None else str(sem_seg_root),
    )
    to_contiguous = meta.thing_dataset_id_to_contiguous_id
    anns_by_image: dict[int, list[dict]] = {im["id"]: [] for im in data["images"]}
    skipped = 0
    for a in data["annotations"]:
        x, y, w, h = (float(v) for v in a["bbox"])
        if w <= 0 or h <= 0:
            skipped += 1
            continue
        obj = {
            "bbox": [x, y, w, h],
            "bbox_mode": BOX_MODE_XYWH_ABS,
            "category_id": to_contiguous[a["category_id"]],
            "iscrowd": int(a.get("iscrowd", 0)),
        }
        if "segmentation" in a:
            obj["segmentation"] = a["segmentation"]
        anns_by_image[a["image_id"]].append(obj)
    if skipped:
        logger.warning("%s: skipped %d annotation(s) with an empty box", json_file, skipped)
    dicts = []
    for im in sorted(data["images"], key=lambda im: im["id"]):
        rec = {
            "file_name": _image_file(im, str(image_root), lvis),
            "height": int(im["height"]),
            "width": int(im["width"]),
            "image_id": im["id"],
            "annotations": anns_by_image[im["id"]],
        }
        if sem_seg_root is not None:
            sem_name = im.get("sem_seg_file_name", Path(im.get("file_name", "")).with_suffix(".png").name)
            rec["sem_seg_file_name"] = os.path.join(str(sem_seg_root), sem_name)
        if lvis:
            rec["neg_category_ids"] = list(im["neg_category_ids"])
            rec["not_exhaustive_category_ids"] = list(im["not_exhaustive_category_ids"])
        dicts.append(rec)
    return dicts, meta


def load_coco_json(
    json_file: str | os.PathLike, image_root: str | os.PathLike, sem_seg_root: str | os.PathLike | None = None
) -> tuple[list[dict], DatasetMetadata]:
    """COCO instances json → (dataset dicts, metadata)."""
    return _load(json_file, image_root, sem_seg_root, lvis=False)


def load_lvis_json(
    json_file: str | os.PathLike, image_root: str | os.PathLike, sem_seg_root: str | os.PathLike | None = None
) -> tuple[list[dict], DatasetMetadata]:
    """LVIS json → (dataset dicts with `neg_category_ids` / `not_exhaustive_category_ids`, metadata)."""
    return _load(json_file, image_root, sem_seg_root, lvis=True)


def remap_to_vocabulary(dicts: list[dict], meta: DatasetMetadata, names: list[str]) -> list[dict]:
    """Dataset contiguous ids → indices of the training vocabulary (by class name)."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for d in dicts:
        anns = []
        for a in d["annotations"]:
            name = meta.thing_classes[a["category_id"]]
            if name not in index:
                raise DistillInputError(
                    f"training annotations hold class {name!r}, which the training vocabulary "
                    "lacks (is the training file base-only?)"
                )
            anns.append({**a, "category_id": index[name]})
        out.append({**d, "annotations": anns})
    return out


def filter_empty(dicts: list[dict]) -> list[dict]:
    """Drop images without non-crowd annotations (detectron2's DATALOADER.FILTER_EMPTY_ANNOTATIONS)."""
    return [d for d in dicts if any(not a.get("iscrowd", 0) for a in d["annotations"])]


def synthetic_dataset(
    root: str | os.PathLike, split: str, fmt: str = "coco"
) -> tuple[list[dict], DatasetMetadata]:
    """Dataset dicts of the synthetic benchmark at `root` ("train" / "val"; "coco" or "lvis" json)."""
    from .synthetic import load_meta

    if split not in ("train", "val") or fmt not in ("coco", "lvis"):
        raise DistillInputError(f"unknown synthetic split/format {split!r}/{fmt!r}")
    root = Path(root)
    files = load_meta(root)["splits"][split]
    key = "instances" if fmt == "coco" else "lvis"
    loader = load_coco_json if fmt == "coco" else load_lvis_json
    if fmt == "lvis":
        # LVIS dicts derive file names from coco_url ("synthetic/<split>/<name>") under the images folder
        return loader(root / files[key], root / "images", root / files["sem_seg_root"])
    return loader(root / files[key], root / files["image_root"], root / files["sem_seg_root"])
