"""Official COCO / LVIS annotation files → open-vocabulary training and evaluation files.

OV-COCO: keep the 65 split categories (the other 15 are dropped from training and evaluation); training
keeps base annotations only; every image is kept. OV-LVIS: training drops rare annotations (images kept);
evaluation keeps everything. Categories of every output carry ``"split": "base" | "novel"``.
"""

from __future__ import annotations

from ..utils.errors import DistillInputError
from .datasets import validate_instances_json
from .ov_splits import ov_coco_categories, ov_lvis_split

# COCO 2017 spells a few names differently from older releases; both are accepted.
_COCO_NAME_ALIASES = {
    "tv": {"tvmonitor"},
    "couch": {"sofa"},
    "motorcycle": {"motorbike"},
    "airplane": {"aeroplane"},
}


def _check_coco_categories(data: dict, path: str) -> None:
    have = {c["id"]: c["name"] for c in data["categories"]}
    for c in ov_coco_categories():
        name = have.get(c["id"])
        if name is None:
            raise DistillInputError(
                f"COCO category id {c['id']} ({c['name']}) is missing: not a COCO file?", path
            )
        if name != c["name"] and name not in _COCO_NAME_ALIASES.get(c["name"], ()):
            raise DistillInputError(
                f"category id {c['id']} is {name!r}, expected {c['name']!r}: not a COCO file?", path
            )


def make_ov_coco(data: dict, train: bool, path: str = "<coco json>") -> dict:
    """OV-COCO file from an official instances json: 65 categories with `split`; base-only if `train`."""
    validate_instances_json(data, path)
    _check_coco_categories(data, path)
    split = {c["id"]: c["split"] for c in ov_coco_categories()}
    keep = {cid for cid, s in split.items() if s == "base" or not train}
    by_id = {c["id"]: c for c in data["categories"]}
    cats = [{**by_id[cid], "split": split[cid]} for cid in sorted(split)]
    anns = [a for a in data["annotations"] if a["category_id"] in keep]
    return {
        **{k: v for k, v in data.items() if k not in ("annotations", "categories")},
        "categories": cats,
        "annotations": anns,
    }


def make_ov_lvis(data: dict, train: bool, path: str = "<lvis json>") -> dict:
    """OV-LVIS file from an official LVIS v1 json: categories get `split`; rare annotations dropped if `train`."""
    validate_instances_json(data, path, lvis=True)
    split = ov_lvis_split(data["categories"])
    novel = set(split.novel)
    cats = [{**c, "split": "novel" if c["id"] in novel else "base"} for c in data["categories"]]
    anns = [a for a in data["annotations"] if not (train and a["category_id"] in novel)]
    return {
        **{k: v for k, v in data.items() if k not in ("annotations", "categories")},
        "categories": cats,
        "annotations": anns,
    }
