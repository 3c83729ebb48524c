#!/usr/bin/env python
"""Is a training run that was SIGKILLed and resumed bit-identical to an uninterrupted one? (torchvision backend)

    python benchmarks/resume_identity.py [--output-dir output/resume_identity] [--iters 12] [--period 4]
        [--threads 1] [--workers 0 1]

For each DATALOADER.NUM_WORKERS: trains the synthetic config's detector (a small one, on a small synthetic
benchmark, random class embeddings) uninterrupted; then the same run, killed with SIGKILL as soon as its second
periodic checkpoint is on disk, and resumed with --resume; then once more with the checkpoint's data position
and RNG states removed before the resume (what a resume did before they were saved: the data order re-seeded
with seed + start iteration). Prints the largest |difference| of any final weight against the uninterrupted
run, then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from distill.data.synthetic import SYNTHETIC_CATEGORIES, SyntheticConfig, generate
from distill.teacher import ClassEmbeddings
from distill.utils import cli_entry

REPO = Path(__file__).resolve().parents[1]
MODEL = [
    "MODEL.FPN.OUT_CHANNELS",
    "16",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "32",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "16",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "INPUT.MIN_SIZE_TRAIN",
    "(80, 96)",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.BASE_LR",
    "0.01",
    "DATASETS.TEST",
    "()",
]


def train(
    out: Path, root: Path, vocab: Path, args, workers: int, flags=(), kill_at: Path | None = None
) -> None:
    cmd = [
        sys.executable,
        str(REPO / "tools/train_net.py"),
        "--config-file",
        str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml"),
        "--backend",
        "torchvision",
        "--no-progress",
        *flags,
        *MODEL,
        "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
        str(vocab),
        "MODEL.DISTILL.METHOD",
        "vild_text",
        "DATASETS.ROOT",
        str(root.parent),
        "DATALOADER.NUM_WORKERS",
        str(workers),
        "SOLVER.MAX_ITER",
        str(args.iters),
        "SOLVER.CHECKPOINT_PERIOD",
        str(args.period),
        "OUTPUT_DIR",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    if kill_at is not None:
        while not kill_at.exists() and p.poll() is None:
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
    _, err = p.communicate()
    if kill_at is None and p.returncode:
        raise SystemExit(f"training failed:\n{err[-3000:]}")
    if kill_at is not None and (out / "model_final.pth").exists():
        raise SystemExit("the run finished before it was killed: raise --iters")


def max_diff(a: Path, b: Path) -> float:
    wa = torch.load(a, map_location="cpu", weights_only=True)["model"]
    wb = torch.load(b, map_location="cpu", weights_only=True)["model"]
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def strip_positions(out: Path) -> None:
    """Remove the data position and RNG states from the last checkpoint (the resume before they existed)."""
    path = out / (out / "last_checkpoint").read_text().strip()
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ckpt.pop("trainer", None)
    torch.save(ckpt, path)


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="output/resume_identity")
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--period", type=int, default=4, help="SOLVER.CHECKPOINT_PERIOD; the kill follows the 2nd")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DATALOADER.NUM_WORKERS values")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    root = generate(
        out / "synthetic", SyntheticConfig(seed=3, num_train=24, num_val=4, image_size=96), progress=False
    )
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    base = [i for i, c in enumerate(SYNTHETIC_CATEGORIES) if c["split"] == "base"]
    emb = F.normalize(torch.randn(len(names), 32, generator=torch.Generator().manual_seed(0)), dim=1)
    ClassEmbeddings(emb[base], [names[i] for i in base]).save(out / "base.npy")
    second = out / "{}" / f"model_{2 * args.period - 1:07d}.pth"
    rows = {}
    for w in args.workers:
        runs = {k: out / f"workers{w}_{k}" for k in ("whole", "resumed", "reseeded")}
        for d in runs.values():
            shutil.rmtree(d, ignore_errors=True)
        train(runs["whole"], root, out / "base.npy", args, w)
        for k in ("resumed", "reseeded"):
            train(runs[k], root, out / "base.npy", args, w, kill_at=Path(str(second).format(runs[k].name)))
            if k == "reseeded":
                strip_positions(runs[k])
            train(runs[k], root, out / "base.npy", args, w, ["--resume"])
        whole = runs["whole"] / "model_final.pth"
        rows[f"workers {w}: resumed (position and RNG states restored)"] = max_diff(
            whole, runs["resumed"] / "model_final.pth"
        )
        rows[f"workers {w}: resumed, data re-seeded with seed + start"] = max_diff(
            whole, runs["reseeded"] / "model_final.pth"
        )
    print(
        f"\n{args.iters} iterations, SIGKILL after the checkpoint of iteration {2 * args.period}, "
        f"OMP_NUM_THREADS {args.threads}\n\n| resume | max abs weight difference vs uninterrupted |\n|---|---|"
    )
    for k, v in rows.items():
        print(f"| {k} | {v:.3g} |")
    print(json.dumps({k: v for k, v in rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
