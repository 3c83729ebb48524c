#!/usr/bin/env python
"""Training-step time and peak memory of F-VLM against ViLD with the same head at the same image size, on this
machine's CPU (or --device cuda), each variant in its own process (peak memory is per process).

    python benchmarks/fvlm_step.py [--size 512] [--batch 2] [--steps 5] [--device cpu] [--json]

ViLD: the OV-COCO recipe's R50-FPN student (random weights), trainable from res3 on (FREEZE_AT 2), distilling
300 region-store boxes per image (random targets). F-VLM: the recipe's frozen CLIP RN50 tower (random weights)
under the same FPN, RPN and heads, no region-store boxes. F-ViT: the frozen ViT-B/16 tower. Same random images,
boxes and vocabulary size (48 base classes). Prints seconds per step, the ratio to ViLD's, and the peak
resident memory (CPU) or peak allocated memory (CUDA) of each, then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from workloads.train_steps import NUM_CLASSES, random_batch, time_steps

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "vild": ("configs/ov_coco/vild_r50_fpn_lsj.yaml", 512),
    "fvlm": ("configs/ov_coco/fvlm_r50.yaml", 1024),
    "fvit": ("configs/ov_coco/fvit_b16.yaml", 512),
}


def child(variant: str, size: int, batch: int, steps: int, device: str) -> dict:
    """One variant's (seconds per step, peak memory) in this process."""
    import torch
    import torch.nn.functional as F

    from distill.config import load_config
    from distill.integrations.torchvision.builders import build_detector
    from distill.integrations.torchvision.engine.solver import build_optimizer
    from distill.teacher.embeddings import ClassEmbeddings

    torch.manual_seed(0)
    config, dim = VARIANTS[variant]
    opts = [
        "MODEL.BACKBONE.WEIGHTS",
        "",
        "MODEL.DISTILL.TEACHER.PRETRAINED",
        "none",
        "MODEL.MASK_ON",
        "False",
    ]
    opts += ["SOLVER.IMS_PER_BATCH", str(batch), "MODEL.DEVICE", device]
    cfg = load_config(str(REPO / config), opts)
    names = [f"class {i}" for i in range(NUM_CLASSES)]
    vocab = ClassEmbeddings(F.normalize(torch.randn(NUM_CLASSES, dim), dim=1), names, {})
    model = build_detector(cfg, vocab).to(device).train()
    optimizer = build_optimizer(cfg, model)
    data = random_batch(size, batch, dim, variant == "vild", 0)
    seconds, peak = time_steps(model, optimizer, data, steps, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"s_per_step": seconds, "peak_bytes": peak, "trainable_params": trainable}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512, help="square training image side (default 512)")
    p.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one untimed (default 5)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="only the JSON line")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.size, a.batch, a.steps, a.device)))
        return 0
    results = {}
    for v in a.variants:
        cmd = [sys.executable, __file__, "--child", v, "--size", str(a.size), "--batch", str(a.batch)]
        cmd += ["--steps", str(a.steps), "--device", a.device]
        r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            return r.returncode
        results[v] = json.loads(r.stdout.strip().splitlines()[-1])
    base = results.get("vild")
    for r in results.values():
        if base:
            r["step_ratio_to_vild"] = r["s_per_step"] / base["s_per_step"]
            r["memory_ratio_to_vild"] = r["peak_bytes"] / base["peak_bytes"]
    if not a.json:
        print(f"training step, {a.batch} x {a.size} px, {a.device}:\n")
        print(
            "| variant | s / step | x ViLD | peak memory | x ViLD | trainable params |\n|---|---|---|---|---|---|"
        )
        for v, r in results.items():
            print(
                f"| {v} | {r['s_per_step']:.2f} | {r.get('step_ratio_to_vild', 1):.2f} | "
                f"{r['peak_bytes'] / 2**30:.2f} GiB | {r.get('memory_ratio_to_vild', 1):.2f} | "
                f"{r['trainable_params'] / 1e6:.1f} M |"
            )
    print(json.dumps({"size": a.size, "batch": a.batch, "device": a.device, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
