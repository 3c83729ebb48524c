#!/usr/bin/env python
"""CPU NMS: distill.ops.nms against torchvision.ops.nms on RPN-sized inputs (same boxes, same run).

    python benchmarks/nms.py [--repeats 200]

Prints one row per box count (ms per call for each, and the speedup), then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torchvision

from distill.ops import has_compiled_ops, nms


def rpn_like(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n boxes clustered around a few objects, as an RPN level's top-k are."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(8, 2, generator=g) * 128
    c = centres[torch.randint(0, 8, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 8
    wh = torch.rand(n, 2, generator=g) * 40 + 8
    return torch.cat([c - wh / 2, c + wh / 2], 1), torch.rand(n, generator=g)


def per_call_ms(fn, boxes, scores, repeats):
    fn(boxes, scores, 0.7)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(boxes, scores, 0.7)
    return (time.perf_counter() - t0) / repeats * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    if not has_compiled_ops():
        print("distill._C is not built: nothing to compare", file=sys.stderr)
        return 2
    rows = {}
    print(
        f"torch threads: {torch.get_num_threads()}\n\n| boxes | torchvision ms | distill ms | speedup |\n|---|---|---|---|"
    )
    for n in (100, 300, 600, 1000):
        boxes, scores = rpn_like(n, n)
        assert torch.equal(nms(boxes, scores, 0.7), torchvision.ops.nms(boxes, scores, 0.7))
        # interleaved, so both see the same machine load
        tv = min(per_call_ms(torchvision.ops.nms, boxes, scores, args.repeats) for _ in range(3))
        ours = min(per_call_ms(nms, boxes, scores, args.repeats) for _ in range(3))
        rows[n] = {
            "torchvision_ms": round(tv, 4),
            "distill_ms": round(ours, 4),
            "speedup": round(tv / ours, 2),
        }
        print(f"| {n} | {tv:.3f} | {ours:.3f} | {tv / ours:.1f}x |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
