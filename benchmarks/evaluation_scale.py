#!/usr/bin/env python
"""Evaluation at LVIS scale: wall time and peak memory of distill's streaming evaluator, of lvis-api (LVIS
loads) / pycocotools (COCO load), and of faster-coco-eval alone, on the same loads in one run; checks that
the numbers are equal.

    flock /work/locks/heavy python benchmarks/evaluation_scale.py --output eval_scale.json [--scale 0.05]

Loads (workloads/eval_loads.py): LVIS-shaped (1,203 categories, r / c / f 337 / 461 / 405, negative and
not-exhaustive ids, ~12 objects and 300 detections per image) boxes at 1k, 4k, 20k images and masks (RLE) at
1k, 4k; COCO-shaped (80 categories, 100 detections) boxes at 5k. Every measurement runs in its own child
process under an address-space limit (--mem-limit-gb), so a baseline that does not fit fails alone and is
recorded as failed. Time: from the ground-truth dict and detections in memory to the final metrics (for
the baselines: index, loadRes, evaluate, accumulate, summarize; for distill: building the evaluator, feeding
it image by image, evaluate; generating the detections is not timed). Peak memory: the child's ru_maxrss.
The baselines are given the whole result list (their API); distill is fed one image at a time, as the
trainers feed it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

LOADS = {  # name: (shape, images, task)
    "lvis-box-1k": ("lvis", 1000, "bbox"),
    "lvis-box-4k": ("lvis", 4000, "bbox"),
    "lvis-box-20k": ("lvis", 20000, "bbox"),
    "lvis-mask-1k": ("lvis", 1000, "segm"),
    "lvis-mask-4k": ("lvis", 4000, "segm"),
    "coco-box-5k": ("coco", 5000, "bbox"),
}
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
SEED = 0


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _started() -> float:
    """Mark the start of the timed part (the parent reads it when it has to stop a child)."""
    print(f"START {time.time()}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _current_rss_gb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def _dets(gt, masks):
    import numpy as np
    from workloads.eval_loads import image_detections, iter_images

    cat_ids = np.array([c["id"] for c in gt["categories"]])
    nd = 300 if "frequency" in gt["categories"][0] else 100
    for im, anns in iter_images(gt):
        yield im["id"], image_detections(cat_ids, im, anns, nd, seed=SEED, masks=masks)


def run_distill(gt, shape, task) -> dict:
    from distill.evaluation import DetectionEvaluator

    t0 = _started()
    ev = DetectionEvaluator(gt, (task,), shape, distributed=False)
    spent, growth, n = time.perf_counter() - t0, [], len(gt["images"])
    for j, (i, d) in enumerate(_dets(gt, task == "segm")):
        t = time.perf_counter()
        ev.add_image(i, d["category_ids"], d["scores"], d["boxes"], d["masks"])
        spent += time.perf_counter() - t
        if (j + 1) % max(1, n // 4) == 0:
            growth.append(round(_current_rss_gb(), 3))
    t = time.perf_counter()
    m = ev.evaluate()[task]
    spent += time.perf_counter() - t
    rows = ev._acc[task].rows()
    kept = int(sum(v.nbytes for v in rows.values()))
    return {
        "seconds": spent,
        "metrics": {k: m.get(k) for k in KEYS},
        "rss_at_quarters_gb": growth,
        "kept_rows": int(len(rows["score"])),
        "kept_row_bytes": kept,
    }


def _results(gt, task):
    res = [r for i, d in _dets(gt, task == "segm") for r in _results_of(d, i, task)]
    return res


def _results_of(d, i, task):
    from workloads.eval_loads import results_of

    out = results_of(d, i)
    if task == "segm":
        for r in out:
            r.pop("bbox")
    return out


def run_reference(gt, shape, task) -> dict:
    import contextlib
    import io
    import logging

    from distill.evaluation import numpy_float_alias

    res = _results(gt, task)
    t0 = _started()
    if shape == "lvis":
        from lvis import LVIS, LVISEval, LVISResults

        g = LVIS.__new__(LVIS)
        g.logger, g.dataset = logging.getLogger("lvis"), gt
        g._create_index()
        ev = LVISEval(g, LVISResults(g, res), task)
        del res
        with numpy_float_alias():
            ev.run()
        m = {k: ev.get_results()[k] for k in KEYS}
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            g = COCO()
            g.dataset = gt
            g.createIndex()
            ev = COCOeval(g, g.loadRes(res), task)
            del res
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        m = dict(zip(KEYS, ev.stats[:6]))
    return {"seconds": time.perf_counter() - t0, "metrics": _scale(m)}


def run_faster(gt, shape, task) -> dict:
    from faster_coco_eval import COCO, COCOeval_faster

    res = _results(gt, task)
    t0 = _started()
    g = COCO()
    g.dataset = gt
    g.createIndex()
    ev = COCOeval_faster(g, g.loadRes(res), task, lvis_style=shape == "lvis", print_function=lambda *a: None)
    del res
    if shape == "lvis":
        ev.params.maxDets = [300]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    s = ev.stats_as_dict
    names = {
        "AP": "AP_all",
        "AP50": "AP_50",
        "AP75": "AP_75",
        "APs": "AP_small",
        "APm": "AP_medium",
        "APl": "AP_large",
        "APr": "APr",
        "APc": "APc",
        "APf": "APf",
    }
    return {
        "seconds": time.perf_counter() - t0,
        "metrics": _scale({k: s[v] for k, v in names.items() if v in s}),
    }


def _scale(m: dict) -> dict:
    return {k: (None if v is None or v < 0 else float(v) * 100) for k, v in m.items()}


METHODS = {"distill": run_distill, "reference": run_reference, "faster-coco-eval": run_faster}


def child(spec: dict) -> None:
    limit = int(spec["mem_limit_gb"] * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from workloads.eval_loads import make_ground_truth

    shape, n, task = spec["shape"], spec["images"], spec["task"]
    gt = make_ground_truth(n, shape, seed=SEED)
    before = _rss_gb()
    out = METHODS[spec["method"]](gt, shape, task)
    out.update(peak_rss_gb=_rss_gb(), rss_after_ground_truth_gb=before)
    print(json.dumps(out))


def measure(method: str, load: str, scale: float, limit_gb: float, timeout: int) -> dict:
    """One child; its peak RSS is also sampled from outside, so a child that times out still reports it."""
    import psutil

    shape, n, task = LOADS[load]
    spec = dict(method=method, shape=shape, images=max(10, int(n * scale)), task=task, mem_limit_gb=limit_gb)
    t0, seen = time.perf_counter(), 0
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = psutil.Process(proc.pid)
    while proc.poll() is None and time.perf_counter() - t0 < timeout:
        try:
            seen = max(seen, watch.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
        return {
            "failed": f"timed out after {timeout} s (RSS had reached {seen / 2**30:.1f} GB)",
            "seconds": time.perf_counter() - t0,
            "peak_rss_seen_gb": seen / 2**30,
            **spec,
        }
    out, err = proc.communicate()
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if proc.returncode != 0 or not last.startswith("{"):
        tail = (err.strip().splitlines() or ["no output"])[-1][:160]
        return {
            "failed": f"exit {proc.returncode} (RSS had reached {seen / 2**30:.1f} GB): {tail}",
            "seconds": time.perf_counter() - t0,
            "peak_rss_seen_gb": seen / 2**30,
            **spec,
        }
    return {**json.loads(last), **spec}


def max_diff(a: dict, b: dict) -> float | None:
    common = [k for k in KEYS if k in a and k in b and a[k] is not None and b[k] is not None]
    if any((a.get(k) is None) != (b.get(k) is None) for k in KEYS if k in a and k in b):
        return float("inf")
    return max((abs(a[k] - b[k]) for k in common), default=None)


def table(rows: list[dict]) -> str:
    ref_name = {"lvis": "lvis-api", "coco": "pycocotools"}
    lines = [
        "| load | images | method | time (s) | peak RSS (GB) | speed-up vs reference | memory / reference "
        "| max |AP diff| vs reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["load"], r["method"]): r for r in rows}
    for r in rows:
        ref = by.get((r["load"], "reference"))
        name = ref_name[r["shape"]] if r["method"] == "reference" else r["method"]
        if "failed" in r:
            lines.append(
                f"| {r['load']} | {r['images']} | {name} | failed after {r['seconds']:.0f} s: {r['failed']} "
                "| | | | |"
            )
            continue
        ok_ref = ref is not None and "failed" not in ref
        speed, mem, diff = "-", "-", None
        if ok_ref:
            speed = f"{ref['seconds'] / r['seconds']:.1f}x"
            mem = f"{r['peak_rss_gb'] / ref['peak_rss_gb']:.2f}"
            diff = max_diff(r["metrics"], ref["metrics"])
        elif ref is not None and ref.get(
            "timed_seconds_before_stop"
        ):  # bounds: the reference had not finished
            speed = f">= {ref['timed_seconds_before_stop'] / r['seconds']:.1f}x"
            mem = f"<= {r['peak_rss_gb'] / ref['peak_rss_seen_gb']:.2f}"
        lines.append(
            f"| {r['load']} | {r['images']} | {name} | {r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | {speed} "
            f"| {mem} | {'-' if diff is None else f'{diff:.1e}'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--loads", nargs="+", default=list(LOADS), choices=list(LOADS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--scale", type=float, default=1.0, help="fraction of each load's images (quick runs)")
    p.add_argument("--mem-limit-gb", type=float, default=14.0, help="address-space limit of each child")
    p.add_argument(
        "--timeout",
        type=int,
        default=3600,
        help="seconds per child (its wall time, data generation included)",
    )
    p.add_argument("--output", help="json of every measurement")
    p.add_argument("--table-from", nargs="+", help="print the table of saved --output files and exit")
    args = p.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.table_from:
        print(table([r for f in args.table_from for r in json.loads(open(f).read())]))
        return 0
    rows = []
    for load in args.loads:
        for method in args.methods:
            r = dict(measure(method, load, args.scale, args.mem_limit_gb, args.timeout), load=load)
            rows.append(r)
            print(
                f"{load} {method}: "
                + (r["failed"] if "failed" in r else f"{r['seconds']:.1f} s, {r['peak_rss_gb']:.2f} GB"),
                flush=True,
            )
            if args.output:
                from distill.utils import atomic_write_json

                atomic_write_json(args.output, rows, indent=1)
    print(table(rows))
    bad = [
        r
        for r in rows
        if r["method"] == "distill"
        and "failed" not in r
        and any(
            q["load"] == r["load"]
            and q["method"] == "reference"
            and "failed" not in q
            and (max_diff(r["metrics"], q["metrics"]) or 0) > 1e-6
            for q in rows
        )
    ]
    if bad:
        print(f"NOT EQUAL to the reference on {[r['load'] for r in bad]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
