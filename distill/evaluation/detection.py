"""Open-vocabulary box / mask evaluation on pycocotools (COCO protocol) and the lvis API (LVIS protocol).

Overall numbers are exactly what COCOeval / LVISEval print (the streaming `DetectionEvaluator` computes
them; tests/evaluation checks the equality). Base and novel numbers come from the same precision array, restricted to each group's categories and averaged the way `summarize` averages
(mean over all entries > -1), so `AP_base` equals a COCOeval run with `catIds` set to the base ids.

Metrics are flat, on a 0-100 scale; a metric with nothing to average (no novel category) is None.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import numpy as np

from ..data.datasets import validate_instances_json
from ..data.ov_splits import CategorySplit
from ..utils.errors import DistillInputError, in_range
from ..utils.io import read_json
from .evaluator import PROTOCOLS, TASKS, DetectionEvaluator

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def numpy_float_alias():
    """Give numpy back `np.float` while the block runs (lvis 0.5.3 uses it; numpy >= 1.24 removed it).

    The alias is removed again afterwards, so no other code comes to rely on it.
    """
    had = "float" in np.__dict__
    if not had:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if not had:
            del np.float  # type: ignore[attr-defined]


def load_ground_truth(gt: str | os.PathLike | dict, protocol: str) -> tuple[dict, str]:
    """A checked ground-truth dict (and its path) from a path or a dict; LVIS protocol needs LVIS fields."""
    if isinstance(gt, dict):
        data, path = gt, "<ground truth>"
    else:
        path = str(gt)
        data = read_json(path, what="ground-truth file")
    validate_instances_json(data, path, lvis=protocol == "lvis")
    if not data["images"]:
        raise DistillInputError("ground truth has no images", path)
    return data, path


def validate_predictions(preds: Any, gt: dict, task: str, path: str) -> list[dict]:
    """Check a COCO-format result list against the ground truth; one clear error for the first problem."""
    if not isinstance(preds, list):
        raise DistillInputError("predictions must be a json list of detections", path)
    if not preds:
        raise DistillInputError("no predictions (empty list)", path)
    image_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    need = ("image_id", "category_id", "score", "bbox" if task == "bbox" else "segmentation")
    for i, p in enumerate(preds):
        if not isinstance(p, dict):
            raise DistillInputError(f"prediction {i} is not an object", path)
        missing = [k for k in need if k not in p]
        if missing:
            raise DistillInputError(
                f"prediction {i} is missing field(s) {', '.join(map(repr, missing))}", path
            )
        if p["image_id"] not in image_ids:
            n = sum(q.get("image_id") not in image_ids for q in preds if isinstance(q, dict))
            raise DistillInputError(
                f"prediction {i} names unknown image_id {p['image_id']!r} "
                f"({n} prediction(s) name images not in the ground truth)",
                path,
            )
        if p["category_id"] not in cat_ids:
            n = sum(q.get("category_id") not in cat_ids for q in preds if isinstance(q, dict))
            raise DistillInputError(
                f"prediction {i} names unknown category_id {p['category_id']!r} "
                f"({n} prediction(s) name categories not in the ground truth)",
                path,
            )
        if not in_range(p["score"], "finite"):
            raise DistillInputError(
                f"prediction {i} has a score that is not a finite number: {p['score']!r}", path
            )
        if task == "bbox":
            box = p["bbox"]
            if not (
                isinstance(box, (list, tuple)) and len(box) == 4 and all(in_range(v, "finite") for v in box)
            ):
                raise DistillInputError(
                    f"prediction {i} has a bbox that is not [x, y, w, h] of finite numbers", path
                )
            if box[2] < 0 or box[3] < 0:
                raise DistillInputError(
                    f"prediction {i} has a bbox of negative width or height {list(box)}: "
                    "boxes are [x, y, w, h] with w, h >= 0",
                    path,
                )
        if task == "segm" and not (isinstance(p["segmentation"], dict) and "counts" in p["segmentation"]):
            raise DistillInputError(f"prediction {i} has a segmentation that is not an RLE dict", path)
    return preds


def evaluate_detections(
    gt: str | os.PathLike | dict,
    predictions: str | os.PathLike | list,
    task: str = "bbox",
    protocol: str = "coco",
    split: CategorySplit | None = None,
    source: str = "<predictions>",
) -> dict:
    """Evaluate COCO-format results against a COCO or LVIS ground truth.

    Args:
        gt: path to (or dict of) the ground-truth json; LVIS protocol needs LVIS fields.
        predictions: path to (or list of) results: image_id, category_id, score, bbox [x, y, w, h] and, for
            "segm", an RLE `segmentation`.
        task: "bbox" or "segm". For "segm" the boxes are dropped first, so areas come from the masks.
        protocol: "coco" (COCOeval, 100 detections per image) or "lvis" (LVISEval, 300, federated).
        split: base / novel groups; by default the ground truth's own (see `split_from_categories`).
        source: what errors call a `predictions` list (the file it came from).
    Returns:
        flat dict: AP, AP50, AP75, APs, APm, APl (+ APr, APc, APf for LVIS), and AP*_base / AP*_novel.
    """
    if task not in TASKS:
        raise DistillInputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if protocol not in PROTOCOLS:
        raise DistillInputError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    gt_data, _ = load_ground_truth(gt, protocol)
    if isinstance(predictions, list):
        preds, ppath = predictions, source
    else:
        ppath = str(predictions)
        preds = read_json(ppath, what="predictions file")
    validate_predictions(preds, gt_data, task, ppath)
    ev = DetectionEvaluator(gt_data, (task,), protocol, split, distributed=False)
    ev.add_results(preds)
    return ev.evaluate()[task]


def format_ov_table(metrics: dict, prefixes: tuple[str, ...] = ("box_", "mask_")) -> str:
    """Markdown table of AP / AP50 for base, novel and all (plus APr/c/f when present), one row per task."""
    cols = [
        ("AP50_novel", "AP50 novel"),
        ("AP50_base", "AP50 base"),
        ("AP50", "AP50 all"),
        ("AP_novel", "AP novel"),
        ("AP_base", "AP base"),
        ("AP", "AP all"),
    ]
    if any(p + "APr" in metrics for p in prefixes):
        cols += [("APr", "APr"), ("APc", "APc"), ("APf", "APf")]
    rows = [p for p in prefixes if p + "AP" in metrics]
    cell = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["| task | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for p in rows:
        lines.append(f"| {p.rstrip('_')} | " + " | ".join(cell(metrics.get(p + c[0])) for c in cols) + " |")
    return "\n".join(lines)
