#!/usr/bin/env python
"""Training-step time of the quickstart's detector on this machine, with and without this project's speedups
(same model init, same batches, one process, one after the other).

    python benchmarks/train_step.py [--quickstart-dir output/quickstart] [--steps 30] [KEY VALUE ...]

Variants: as configured (no data-loader worker, distill.ops NMS in the RPN); with one data-loader worker;
with torchvision's NMS. Prints seconds per step and the ratio to the configured one, then one line of JSON.
Needs the quickstart's data and text stages (runs them if missing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

from distill.integrations import quickstart


def time_steps(cfg, num_workers: int, steps: int, warmup: int = 5) -> float:
    import torch

    from distill.integrations.torchvision import trainer as T

    torch.manual_seed(0)
    model, vocab = T.build_model_for(cfg, "cpu")
    dicts = T.load_train_set(cfg, vocab)
    optimizer = T.build_optimizer(cfg, model)
    stream = T._TrainStream(dicts, T._mapper_cfg(cfg, True), "", 0, 0, 1)
    loader = iter(
        torch.utils.data.DataLoader(
            stream,
            batch_size=cfg.SOLVER.IMS_PER_BATCH,
            collate_fn=list,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
        )
    )
    model.train()
    for k in range(warmup + steps):
        if k == warmup:
            t0 = time.perf_counter()
        losses = model(next(loader))
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        T.clip_gradients(cfg, model)
        optimizer.step()
    return (time.perf_counter() - t0) / steps


def main() -> int:
    import torchvision

    from distill.integrations.torchvision import rpn

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quickstart-dir", default="output/quickstart")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    args = p.parse_args()
    qs = Path(args.quickstart_dir)
    pipe = quickstart.Pipeline(qs, [], progress=False)
    pipe.data()
    if not (qs / "text" / "synthetic_all.npy").is_file():
        pipe.text()
    cfg = pipe.cfg("train_step_benchmark", ["MODEL.DISTILL.METHOD", "vild_text", *args.overrides])
    configured = cfg.DATALOADER.NUM_WORKERS
    rows = {"as configured": time_steps(cfg, configured, args.steps)}
    rows["one data-loader worker"] = time_steps(cfg, 1, args.steps)
    with mock.patch.object(rpn, "batched_nms", torchvision.ops.batched_nms):
        rows["torchvision NMS"] = time_steps(cfg, configured, args.steps)
    base = rows["as configured"]
    print(
        f"\nquickstart detector, batch {cfg.SOLVER.IMS_PER_BATCH}, {args.steps} steps after 5 warm-up steps, "
        f"DATALOADER.NUM_WORKERS {configured}\n\n| variant | s / step | ratio |\n|---|---|---|"
    )
    for name, s in rows.items():
        print(f"| {name} | {s:.3f} | {s / base:.2f} |")
    print(json.dumps({name: round(s, 4) for name, s in rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
