#!/usr/bin/env python
"""Peak memory and time of tools/demo.py on one large photograph (default 6000 x 4000, 24 megapixels).

    python benchmarks/demo_memory.py [--width 6000 --height 4000] [--detections 100] [--output-dir DIR]

A detector of the synthetic config with random weights (no training needed) is saved, a large image is made
by tiling a synthetic picture, and the demo runs in a child process with the score threshold at 0, so every
one of `--detections` boxes has a mask to paste, draw and encode. Prints a markdown row, then one json line:
peak RSS of the child (ru_maxrss) and its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml")


def make_inputs(d: Path, width: int, height: int) -> tuple[Path, Path, Path]:
    import cv2
    import numpy as np
    import torch
    import torch.nn.functional as F

    from distill.config import load_config
    from distill.data.synthetic import SYNTHETIC_CATEGORIES
    from distill.integrations.torchvision.builders import build_detector
    from distill.teacher import ClassEmbeddings

    torch.manual_seed(0)
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    vocab = ClassEmbeddings(F.normalize(torch.randn(len(names), 64), dim=1), names)
    vocab.save(d / "all.npy")
    model = build_detector(load_config(CONFIG), vocab)
    torch.save({"model": model.state_dict()}, d / "model.pth")
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    img = np.tile(tile, (height // 64 + 1, width // 64 + 1, 1))[:height, :width]
    cv2.rectangle(img, (width // 4, height // 4), (width // 2, height // 2), (255, 0, 0), -1)
    cv2.imwrite(str(d / "photo.jpg"), img)
    return d / "all.npy", d / "model.pth", d / "photo.jpg"


def segmenter(d: Path) -> Path:
    """An untrained segmenter of the synthetic semseg config (its teacher's dim), saved as the trainer does."""
    import torch
    import torch.nn.functional as F

    from distill.integrations.torchvision.sem_seg import load_semseg_config
    from distill.integrations.torchvision.sem_seg.model import build_sem_seg_model, save_segmenter
    from distill.teacher import ClassEmbeddings, create_teacher

    cfg = load_semseg_config(["MODEL.WEIGHTS", ""])
    t = cfg.MODEL.DISTILL.TEACHER
    dim = create_teacher(t.ARCH, t.PRETRAINED or None).dim
    torch.manual_seed(0)
    vocab = ClassEmbeddings(F.normalize(torch.randn(3, dim), dim=1), ["a", "b", "c"])
    save_segmenter(build_sem_seg_model(cfg, vocab, [1, 2, 3]), d / "segmenter.pth", cfg)
    return d / "segmenter.pth"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=6000, help="image width in pixels")
    p.add_argument("--height", type=int, default=4000, help="image height in pixels")
    p.add_argument("--detections", type=int, default=100, help="TEST.DETECTIONS_PER_IMAGE (all get a mask)")
    p.add_argument(
        "--output-dir", default=None, help="keep the inputs and outputs here (default: a temp dir)"
    )
    p.add_argument(
        "--task",
        choices=("detect", "semseg"),
        default="detect",
        help="semseg: an untrained segmenter of the synthetic semseg config instead",
    )
    args = p.parse_args(argv)
    d = Path(args.output_dir or tempfile.mkdtemp(prefix="demo_memory."))
    d.mkdir(parents=True, exist_ok=True)
    vocab, weights, photo = make_inputs(d, args.width, args.height)
    if args.task == "semseg":
        cmd = [
            sys.executable,
            str(REPO / "tools/demo.py"),
            "--task",
            "semseg",
            "--weights",
            str(segmenter(d)),
            "--input",
            str(photo),
            "--output",
            str(d / "out"),
        ]
    else:
        cmd = [
            sys.executable,
            str(REPO / "tools/demo.py"),
            "--config-file",
            CONFIG,
            "--backend",
            "torchvision",
            "--weights",
            str(weights),
            "--input",
            str(photo),
            "--output",
            str(d / "out"),
            "--score-thresh",
            "0",
            "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
            str(vocab),
            "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
            str(vocab),
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.0",
            "TEST.DETECTIONS_PER_IMAGE",
            str(args.detections),
        ]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        return r.returncode
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    n = (
        len(json.loads((d / "out" / "predictions.json").read_text())["annotations"])
        if args.task == "detect"
        else 0
    )
    mp = args.width * args.height / 1e6
    print("| task | image | detections (with masks) | peak RSS (MB) | wall (s) |\n|---|---|---|---|---|")
    print(f"| {args.task} | {args.width}x{args.height} ({mp:.0f} MP) | {n} | {peak_mb:.0f} | {wall:.1f} |")
    print(
        json.dumps(
            {
                "task": args.task,
                "width": args.width,
                "height": args.height,
                "detections": n,
                "peak_rss_mb": round(peak_mb),
                "wall_s": round(wall, 1),
                "threads": os.environ.get("OMP_NUM_THREADS", "default"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
