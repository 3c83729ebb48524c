"""Benchmark: fused multi-level RoIAlign vs torchvision (and detectron2 when installed).

Same inputs for every method, one process, medians. Baselines:
  tv-matched  torchvision roi_align(aligned=True) per level with detectron2's level assignment, in
              Python, the way detectron2's ROIPooler (ROIAlignV2) does it: the like-for-like baseline.
  tv-stock    torchvision MultiScaleRoIAlign (aligned=False, its own level mapper): for reference.
  d2          detectron2 ROIPooler(pooler_type="ROIAlignV2"), when detectron2 is importable.
Prints a table, then one JSON line with the fused op's speedups over tv-matched.

    python benchmarks/roi_align.py [--device cuda] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import OrderedDict

import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from distill.ops import has_compiled_ops, multilevel_roi_align
from distill.ops._reference import assign_levels

STRIDES = [4, 8, 16, 32]
OUTPUT = (7, 7)


def make_inputs(device, images=2, size=512, channels=256, rois_per_image=512, seed=0):
    """P2-P5 features (B, C, size/s, size/s) and (K, 5) RoIs with log-uniform sizes 8..512 px."""
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(images, channels, size // s, size // s, generator=g) for s in STRIDES]
    num = images * rois_per_image
    wh = torch.exp(torch.empty(num, 2).uniform_(math.log(8), math.log(size), generator=g))
    xy = torch.rand(num, 2, generator=g) * (size - wh)
    index = torch.arange(images).repeat_interleave(rois_per_image)[:, None].float()
    rois = torch.cat([index, xy, xy + wh], dim=1)
    return [f.to(device) for f in features], rois.to(device)


def fused(features, rois, sampling_ratio):
    return multilevel_roi_align(features, rois, OUTPUT, STRIDES, sampling_ratio, True)


def tv_matched(features, rois, sampling_ratio):
    """detectron2 ROIPooler semantics on torchvision's roi_align, one call per level."""
    level = assign_levels(rois[:, 1:], 2, len(features), 224, 4)
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], *OUTPUT))
    for i, (f, s) in enumerate(zip(features, STRIDES)):
        idx = torch.nonzero(level == i).squeeze(1)
        out[idx] = roi_align(f, rois[idx], OUTPUT, 1.0 / s, sampling_ratio, True)
    return out


def make_tv_stock(sampling_ratio, image_size):
    pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], OUTPUT, sampling_ratio)

    def run(features, rois):
        boxes = [rois[rois[:, 0] == b, 1:] for b in range(features[0].shape[0])]
        named = OrderedDict(zip(["p2", "p3", "p4", "p5"], features))
        return pooler(named, boxes, [image_size] * features[0].shape[0])

    return lambda features, rois, _sr: run(features, rois)


def make_d2(sampling_ratio):
    try:
        from detectron2.modeling.poolers import ROIPooler
        from detectron2.structures import Boxes
    except ImportError:
        return None
    pooler = ROIPooler(OUTPUT, [1.0 / s for s in STRIDES], sampling_ratio, "ROIAlignV2")

    def run(features, rois, _sr):
        boxes = [Boxes(rois[rois[:, 0] == b, 1:]) for b in range(features[0].shape[0])]
        return pooler(features, boxes)

    return run


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps):
    """Median wall time of fn() in ms (warm-up excluded)."""
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(method, features, rois, sampling_ratio, device, reps):
    """(forward, backward, forward+backward) median ms; backward is timed alone on a fresh graph."""
    leaves = [f.detach().requires_grad_() for f in features]
    grad = torch.randn_like(method(features, rois, sampling_ratio))

    def forward():
        with torch.no_grad():
            method(features, rois, sampling_ratio)

    def forward_backward():
        out = method(leaves, rois, sampling_ratio)
        torch.autograd.grad(out, leaves, grad, allow_unused=True)

    def backward_only():
        out = method(leaves, rois, sampling_ratio)
        sync(device)
        start = time.perf_counter()
        torch.autograd.grad(out, leaves, grad, allow_unused=True)
        sync(device)
        return (time.perf_counter() - start) * 1e3

    backward_only()
    bwd = statistics.median(backward_only() for _ in range(reps))
    return timed(forward, device, reps), bwd, timed(forward_backward, device, reps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 5 CPU, 50 GPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    reps = args.reps or (50 if device.type == "cuda" else 5)
    features, rois = make_inputs(device)
    print(
        f"device={device} threads={torch.get_num_threads()} compiled_ops={has_compiled_ops()} "
        f"features={[tuple(f.shape) for f in features]} rois={tuple(rois.shape)} output={OUTPUT} reps={reps}"
    )
    print(f"{'sampling':>8} {'method':>10} {'fwd ms':>10} {'bwd ms':>10} {'fwd+bwd ms':>11}")
    results = {}
    for sampling_ratio in (0, 2):
        methods = {
            "fused": fused,
            "tv-matched": tv_matched,
            "tv-stock": make_tv_stock(sampling_ratio, (512, 512)),
        }
        d2 = make_d2(sampling_ratio)
        if d2 is not None:
            methods["d2"] = d2
        for name, method in methods.items():
            res = measure(method, features, rois, sampling_ratio, device, reps)
            results[(sampling_ratio, name)] = res
            print(f"{sampling_ratio:>8} {name:>10} {res[0]:>10.2f} {res[1]:>10.2f} {res[2]:>11.2f}")
    summary = {"device": str(device), "baseline": "tv-matched", "sampling_ratio": 0}
    for i, key in enumerate(("fwd_speedup", "bwd_speedup", "fwd_bwd_speedup")):
        summary[key] = round(results[(0, "tv-matched")][i] / results[(0, "fused")][i], 2)
    for sampling_ratio in (0, 2):
        for base in ("tv-matched", "d2"):
            if (sampling_ratio, base) in results:
                summary[f"vs_{base}_sr{sampling_ratio}"] = [
                    round(results[(sampling_ratio, base)][i] / results[(sampling_ratio, "fused")][i], 2)
                    for i in range(3)
                ]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
