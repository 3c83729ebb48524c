"""Two gloo processes each evaluate half the images; they exchange compact rows and get the single-process
numbers, and the results file holds every detection once."""

import json
import multiprocessing as mp

import numpy as np
import torch.distributed as dist

from benchmarks.workloads.eval_loads import image_detections, iter_images, make_ground_truth, results_of
from distill.evaluation import DetectionEvaluator


def _load():
    gt = make_ground_truth(16, "lvis", seed=5)
    cat_ids = np.array([c["id"] for c in gt["categories"]])
    return gt, [
        (im["id"], image_detections(cat_ids, im, anns, 300, seed=5, masks=True))
        for im, anns in iter_images(gt)
    ]


def _worker(rank, world, tmp):
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world)
    try:
        gt, dets = _load()
        ev = DetectionEvaluator(gt, ("bbox", "segm"), "lvis", results_file=f"{tmp}/results.json")
        mine = dets[rank::world]
        ev.process([{"image_id": i} for i, _ in mine], [results_of(d, i) for i, d in mine])
        sent = ev.state()
        m = ev.evaluate()
        with open(f"{tmp}/rank{rank}.json", "w") as f:
            json.dump({"metrics": m, "sent_rows": int(len(sent["rows"]["bbox"]["score"]))}, f)
    finally:
        dist.destroy_process_group()


def _str_counts(dets):
    for _, d in dets:
        for m in d["masks"]:
            m["counts"] = m["counts"].decode()


def test_two_gloo_processes_equal_one(tmp_path):
    ctx = mp.get_context("fork")  # the children start with this process's imports (spawn re-imports torch)
    procs = [ctx.Process(target=_worker, args=(r, 2, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    gt, dets = _load()
    _str_counts(dets)
    one = DetectionEvaluator(gt, ("bbox", "segm"), "lvis")
    one.process([{"image_id": i} for i, _ in dets], [results_of(d, i) for i, d in dets])
    want = json.loads(json.dumps(one.evaluate()))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["metrics"] == want for r in ranks)
    assert 0 < ranks[0]["sent_rows"] < 300 * 8  # compact rows of its own images, not every detection
    written = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["image_id"] for r in written) == sorted(
        r["image_id"] for i, d in dets for r in results_of(d, i)
    )
