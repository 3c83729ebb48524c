import contextlib
import copy
import io
import json

import numpy as np
import pytest
from lvis import LVIS, LVISEval, LVISResults
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from distill.data.synthetic import BASE_CATEGORY_IDS, NOVEL_CATEGORY_IDS
from distill.evaluation import evaluate_detections, numpy_float_alias
from distill.utils import DistillInputError
from tests.conftest import load


def noisy_predictions(gt: dict, seed: int = 0) -> list[dict]:
    """Jittered copies of the ground truth, some with the wrong class, plus random false positives."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    preds = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(2):
            j = rng.normal(0, 1.5, 4)
            cid = a["category_id"] if rng.random() < 0.75 else int(rng.choice(cat_ids))
            preds.append(
                {
                    "image_id": a["image_id"],
                    "category_id": cid,
                    "score": float(rng.random()),
                    "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])],
                    "segmentation": a["segmentation"],
                }
            )
    for im in gt["images"]:
        preds.append(
            {
                "image_id": im["id"],
                "category_id": int(rng.choice(cat_ids)),
                "score": float(rng.random()),
                "bbox": [5.0, 5.0, 20.0, 20.0],
                "segmentation": gt["annotations"][0]["segmentation"],
            }
        )
    return preds


@pytest.fixture(scope="module")
def coco_case(synthetic_root):
    gt = load(synthetic_root / "annotations/instances_val.json")
    return synthetic_root / "annotations/instances_val.json", gt, noisy_predictions(gt)


def _cocoeval(gt_path, preds, task, cat_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(str(gt_path))
        d = g.loadRes(copy.deepcopy(preds))
        ev = COCOeval(g, d, task)
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_coco_overall_and_split_match_pycocotools(coco_case, task):
    gt_path, gt, preds = coco_case
    m = evaluate_detections(gt_path, preds, task=task)
    direct_preds = preds if task == "bbox" else [{k: v for k, v in p.items() if k != "bbox"} for p in preds]
    stats = _cocoeval(gt_path, direct_preds, task)
    for i, k in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        if stats[i] < 0:  # nothing to average (no objects of that size): None, not -100
            assert m[k] is None, k
        else:
            assert m[k] == pytest.approx(stats[i] * 100, abs=1e-9), k
    for group, ids in (("base", BASE_CATEGORY_IDS), ("novel", NOVEL_CATEGORY_IDS)):
        s = _cocoeval(gt_path, direct_preds, task, cat_ids=ids)
        assert m[f"AP_{group}"] == pytest.approx(s[0] * 100, abs=1e-9)
        assert m[f"AP50_{group}"] == pytest.approx(s[1] * 100, abs=1e-9)
        assert m[f"AP75_{group}"] == pytest.approx(s[2] * 100, abs=1e-9)
    assert 0 < m["AP"] < 100


def test_perfect_predictions_score_100(coco_case):
    gt_path, gt, _ = coco_case
    preds = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt["annotations"]
    ]
    m = evaluate_detections(gt_path, preds)
    assert m["AP"] == pytest.approx(100) and m["AP50_novel"] == pytest.approx(100)


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_lvis_matches_lvis_eval(synthetic_root, task):
    gt_path = synthetic_root / "annotations/lvis_val.json"
    gt = load(gt_path)
    preds = noisy_predictions(gt, seed=1)
    m = evaluate_detections(gt_path, preds, task=task, protocol="lvis")
    direct = copy.deepcopy(preds)
    if task == "segm":
        for p in direct:
            p.pop("bbox")
    lvis_gt = LVIS(str(gt_path))
    ev = LVISEval(lvis_gt, LVISResults(lvis_gt, direct, max_dets=300), task)
    with numpy_float_alias():
        ev.run()
    res = ev.get_results()
    for k in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
        assert m[k] == pytest.approx(res[k] * 100, abs=1e-9), k
    # synthetic novel categories are exactly LVIS "rare"
    assert m["AP_novel"] == pytest.approx(m["APr"], abs=1e-9)


def test_numpy_float_alias_is_scoped():
    had = "float" in np.__dict__
    with numpy_float_alias():
        assert np.float is float
    assert ("float" in np.__dict__) == had


def test_lvis_eval_needs_the_alias_on_numpy2(synthetic_root):
    if "float" in np.__dict__:
        pytest.skip("this numpy still has np.float")
    gt_path = synthetic_root / "annotations/lvis_val.json"
    lvis_gt = LVIS(str(gt_path))
    ev = LVISEval(lvis_gt, LVISResults(lvis_gt, noisy_predictions(load(gt_path))), "bbox")
    with pytest.raises(AttributeError):
        ev.run()


def test_bad_predictions(coco_case, tmp_path):
    gt_path, gt, preds = coco_case
    with pytest.raises(DistillInputError, match="empty"):
        evaluate_detections(gt_path, [])
    with pytest.raises(DistillInputError, match="unknown image_id 424242"):
        evaluate_detections(gt_path, [dict(preds[0], image_id=424242)] + preds)
    with pytest.raises(DistillInputError, match="unknown category_id 999"):
        evaluate_detections(gt_path, preds + [dict(preds[0], category_id=999)])
    with pytest.raises(DistillInputError, match="missing field"):
        evaluate_detections(gt_path, [{"image_id": preds[0]["image_id"], "bbox": [0, 0, 1, 1]}])
    with pytest.raises(DistillInputError, match="RLE"):
        evaluate_detections(gt_path, [dict(preds[0], segmentation=[[0, 0, 1, 1, 2, 2]])], task="segm")
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DistillInputError, match="json list"):
        evaluate_detections(gt_path, p)
    with pytest.raises(DistillInputError, match="unknown task"):
        evaluate_detections(gt_path, preds, task="keypoints")
