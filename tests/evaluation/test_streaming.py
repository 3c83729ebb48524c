"""The streaming evaluator equals COCOeval / LVISEval: metrics and the whole precision array, boxes and masks,
on LVIS- and COCO-shaped loads with score ties, crowds, negatives and not-exhaustive categories."""

import contextlib
import copy
import io
import json
import logging

import numpy as np
import pytest
from lvis import LVIS, LVISEval, LVISResults
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchmarks.workloads.eval_loads import image_detections, iter_images, make_ground_truth, results_of
from distill.data.ov_splits import CategorySplit
from distill.evaluation import DetectionEvaluator, numpy_float_alias
from distill.evaluation.matching import greedy_match
from distill.utils import DistillInputError

N_IMAGES = 24


def load(shape, masks, nd=None, n_images=N_IMAGES):
    gt = make_ground_truth(n_images, shape, seed=7)
    cat_ids = np.array([c["id"] for c in gt["categories"]])
    nd = nd or (300 if shape == "lvis" else 100)
    return gt, [
        (im["id"], image_detections(cat_ids, im, anns, nd, seed=7, masks=masks))
        for im, anns in iter_images(gt)
    ]


def reference(gt, dets, shape, task, cat_ids=None):
    res = [r for i, d in dets for r in results_of(d, i)]
    if task == "segm":
        for r in res:
            r.pop("bbox")
    if shape == "lvis":
        g = LVIS.__new__(LVIS)
        g.logger, g.dataset = logging.getLogger("lvis"), copy.deepcopy(gt)
        g._create_index()
        ev = LVISEval(g, LVISResults(g, res), task)
        with numpy_float_alias():
            ev.run()
        return ev.get_results(), ev.eval["precision"]
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = copy.deepcopy(gt)
        g.createIndex()
        ev = COCOeval(g, g.loadRes(res), task)
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), ev.stats[:6])), ev.eval["precision"][..., -1]


def ours(gt, dets, shape, task, order=None, **kw):
    ev = DetectionEvaluator(gt, (task,), shape, **kw)
    for j in order if order is not None else range(len(dets)):
        i, d = dets[j]
        ev.add_image(i, d["category_ids"], d["scores"], d["boxes"], d["masks"])
    return ev, ev.evaluate()[task]


@pytest.mark.parametrize(
    "shape, task", [("lvis", "bbox"), ("lvis", "segm"), ("coco", "bbox"), ("coco", "segm")]
)
def test_equals_reference_evaluator(shape, task):
    gt, dets = load(shape, task == "segm")
    split = (
        None
        if shape == "lvis"
        else CategorySplit(base=tuple(range(1, 61)), novel=tuple(range(61, 81)), source="t")
    )
    ev, m = ours(gt, dets, shape, task, split=split)
    ref, precision = reference(gt, dets, shape, task)
    from distill.evaluation.streaming import accumulate

    assert np.array_equal(accumulate(ev._acc[task].rows(), ev._gt[task].num_gt), precision)
    for k, v in ref.items():
        if k in m:
            assert (m[k] is None) == (v < 0), k
            assert m[k] is None or m[k] == pytest.approx(v * 100, abs=1e-9), k
    assert 5 < m["AP"] < 95
    if shape == "lvis":
        assert m["AP_novel"] == pytest.approx(m["APr"], abs=1e-9) or m["APr"] is None
    else:
        base, _ = reference(gt, dets, shape, task, cat_ids=split.base)
        novel, _ = reference(gt, dets, shape, task, cat_ids=split.novel)
        assert m["AP_base"] == pytest.approx(base["AP"] * 100, abs=1e-9)
        assert m["AP50_novel"] == pytest.approx(novel["AP50"] * 100, abs=1e-9)


@pytest.mark.parametrize("shape", ["lvis", "coco"])
def test_detection_limits_equal_reference(shape):
    """LVIS keeps the 300 best of an image; COCO the 100 best of each image and category."""
    gt, dets = load(shape, False, nd=450, n_images=10)
    if shape == "coco":  # crowd two categories, so that each has more than 100 detections in an image
        for _, d in dets:
            d["category_ids"][: len(d["category_ids"]) // 2] = d["category_ids"][0]
            d["category_ids"][len(d["category_ids"]) // 2 :] = d["category_ids"][1]
    ev, m = ours(gt, dets, shape, "bbox")
    ref, precision = reference(gt, dets, shape, "bbox")
    from distill.evaluation.streaming import accumulate

    assert np.array_equal(accumulate(ev._acc["bbox"].rows(), ev._gt["bbox"].num_gt), precision)
    assert m["AP"] == pytest.approx(ref["AP"] * 100, abs=1e-9)


def test_order_chunking_and_merge_do_not_change_numbers():
    gt, dets = load("lvis", False)
    _, m = ours(gt, dets, "lvis", "bbox")
    _, shuffled = ours(
        gt, dets, "lvis", "bbox", order=np.random.default_rng(0).permutation(len(dets)), chunk_groups=1
    )
    assert shuffled == m
    a, b = (DetectionEvaluator(gt, ("bbox",), "lvis", distributed=False) for _ in range(2))
    for j, (i, d) in enumerate(dets):
        (a if j % 2 else b).add_image(i, d["category_ids"], d["scores"], d["boxes"])
    a.merge(b.state())
    assert a.evaluate()["bbox"] == m
    with pytest.raises(DistillInputError, match="two ranks"):
        a.merge(b.state())


def test_bad_detections_are_clear_errors():
    gt, dets = load("coco", False)
    ev = DetectionEvaluator(gt, ("bbox",), "coco")
    i, d = dets[0]
    with pytest.raises(DistillInputError, match="unknown image_id 999999"):
        ev.add_image(999999, d["category_ids"], d["scores"], d["boxes"])
    with pytest.raises(DistillInputError, match="unknown category_id 4242"):
        ev.add_image(i, [4242], [0.5], [[0, 0, 1, 1]])
    ev.add_image(dets[1][0], d["category_ids"], d["scores"], d["boxes"])
    with pytest.raises(DistillInputError, match="twice"):
        ev.add_image(dets[1][0], d["category_ids"], d["scores"], d["boxes"])
    with pytest.raises(DistillInputError, match="boxes"):
        ev.add_image(dets[2][0], [1, 2], [0.5, 0.4], [[0, 0, 1, 1]])
    c = d["category_ids"][:1]
    with pytest.raises(DistillInputError, match="1 detection score"):
        ev.add_image(dets[3][0], c, [float("nan")], [[0, 0, 1, 1]])
    with pytest.raises(DistillInputError, match="NaN or inf"):
        ev.add_image(dets[4][0], c, [0.5], [[0, 0, float("inf"), 1]])
    with pytest.raises(DistillInputError, match="not numbers"):
        ev.add_image(dets[5][0], c, ["high"], [[0, 0, 1, 1]])


def _loop_match(iou, gt_ig, crowd, thr, lvis):
    """evaluateImg's loop, for one group and one area range, gt already sorted ignored-last."""
    d_num, g_num = iou.shape
    out = -np.ones((len(thr), d_num), dtype=int)
    for ti, t in enumerate(thr):
        taken = np.zeros(g_num, bool)
        for d in range(d_num):
            best, m = min(t, 1 - 1e-10), -1
            for g in range(g_num):
                if taken[g] and (lvis or not crowd[g]):
                    continue
                if m > -1 and not gt_ig[m] and gt_ig[g]:
                    break
                if iou[d, g] < best:
                    continue
                best, m = iou[d, g], g
            if m > -1:
                out[ti, d], taken[m] = m, True
    return out


@pytest.mark.parametrize("lvis", [False, True])
def test_greedy_match_equals_the_reference_loop(lvis):
    rng = np.random.default_rng(3)
    thr = np.linspace(0.5, 0.95, 10)
    for _ in range(200):
        d, g = rng.integers(1, 9), rng.integers(1, 6)
        iou = rng.choice([0.0, 0.3, 0.5, 0.55, 0.7, 0.7, 0.9, 1.0], size=(d, g))  # ties on purpose
        ig = rng.random(g) < 0.3
        crowd = (rng.random(g) < 0.3) & ig & (not lvis)
        srt = np.argsort(ig, kind="mergesort")
        iou, ig, crowd = iou[:, srt], ig[srt], crowd[srt]
        got = greedy_match(iou[None], ig[None, None], crowd[None], np.minimum(thr, 1 - 1e-10))[0, 0]
        assert np.array_equal(got, _loop_match(iou, ig, crowd, thr, lvis))


def test_results_file_is_streamed_and_complete(tmp_path):
    gt, dets = load("coco", False)
    path = tmp_path / "out" / "results.json"
    ev = DetectionEvaluator(gt, ("bbox",), "coco", results_file=path)
    res = [results_of(d, i) for i, d in dets]
    ev.process([{"image_id": i} for i, _ in dets], res)
    assert not path.exists()
    m = ev.evaluate()["bbox"]
    written = json.loads(path.read_text())
    assert len(written) == sum(map(len, res)) and written[0] == json.loads(json.dumps(res[0][0]))
    assert not list(path.parent.glob("*.partial"))
    _, direct = ours(gt, dets, "coco", "bbox")
    assert m == direct


def test_images_without_detections():
    gt, dets = load("coco", False)
    ev = DetectionEvaluator(gt, ("bbox",), "coco", distributed=False)
    empty = np.zeros((0,), np.int64)
    for i, _ in dets:  # a model that detects nothing (an untrained one, or a score threshold too high)
        ev.add_image(i, empty, np.zeros((0,), np.float32), np.zeros((0, 4), np.float32))
    assert ev.evaluate()["bbox"]["AP"] in (0.0, -1.0, -100.0)
