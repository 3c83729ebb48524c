"""The demo's predictions.json (dataset-style: its own image ids 1..k with file names, its vocabulary as
categories) → a COCO results list in a ground truth's ids, matching images by file name and classes by name."""

from __future__ import annotations

from pathlib import PurePath

from ..utils.errors import DistillInputError


def looks_like_object(path) -> bool:
    """Whether a json file starts with "{" (a dataset-style file; a result list starts with "[")."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
    except OSError:
        return False  # the evaluator says why, naming the file
    return head.startswith(b"{")


def is_dataset_style(preds) -> bool:
    return isinstance(preds, dict) and {"images", "annotations", "categories"} <= set(preds)


def dataset_style_to_results(preds: dict, gt: dict, path: str = "<predictions>") -> list[dict]:
    """Each annotation of `preds` as a result on the ground truth's image and category of the same name;
    images the ground truth does not hold, or class names it has no category for, are one clear error."""
    try:
        return _dataset_style_to_results(preds, gt, path)
    except (KeyError, TypeError, AttributeError) as e:
        raise DistillInputError(
            f"not a dataset-style predictions file (an image, category or annotation without {e}; "
            "tools/demo.py writes one)",
            path,
        ) from None


def _dataset_style_to_results(preds: dict, gt: dict, path: str) -> list[dict]:
    by_name = {}
    for im in gt.get("images", []):
        by_name.setdefault(PurePath(im["file_name"]).name, []).append(im["id"])
    image_map, missing = {}, []
    for im in preds["images"]:
        ids = by_name.get(PurePath(str(im.get("file_name", ""))).name, [])
        if len(ids) != 1:
            missing.append(str(im.get("file_name")))
        else:
            image_map[im["id"]] = ids[0]
    if missing:
        raise DistillInputError(
            f"{len(missing)} predicted image(s) have no single ground-truth image of that file "
            f"name (e.g. {missing[0]}): predictions of another dataset?",
            path,
        )
    gt_cats = {c["name"]: c["id"] for c in gt.get("categories", [])}
    cat_map = {c["id"]: gt_cats.get(c["name"]) for c in preds["categories"]}
    used = {a["category_id"] for a in preds["annotations"]}
    unknown = sorted(c["name"] for c in preds["categories"] if c["id"] in used and cat_map[c["id"]] is None)
    if unknown:
        raise DistillInputError(
            f"class(es) {', '.join(unknown[:5])} of the predictions are not in the ground "
            "truth's categories (predicted with another vocabulary?)",
            path,
        )
    out = []
    for a in preds["annotations"]:
        r = {k: v for k, v in a.items() if k not in ("id", "image_id", "category_id")}
        out.append({**r, "image_id": image_map[a["image_id"]], "category_id": cat_map[a["category_id"]]})
    return out
