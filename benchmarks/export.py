#!/usr/bin/env python
"""Eager PyTorch against the exported ONNX graph on onnxruntime (CPU), per image, in one process.

    flock /work/locks/heavy python benchmarks/export.py [--repeats 10] [--threads 2]

Two detectors, random weights (latency does not depend on training): the quickstart's student
(configs/synthetic/vild_r18_fpn_quick.yaml, R18-FPN at 128 px, 15 classes) and an R50-FPN at 800x1333 (the COCO
test size, 65 classes, 512-d embeddings, 1000 proposals). Both sides get the same resized image and do the
same work: normalisation, backbone, RPN, RoI heads with NMS, 28x28 masks (eager: the model's forward up to the
RoI heads' detections, without pasting masks into the image). Prints a table (median ms per image, mean ± std,
eager / onnxruntime) and one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distill.config import load_config
from distill.integrations.onnx_model import OnnxModel
from distill.integrations.torchvision.builders import build_detector
from distill.integrations.torchvision.export import export_model
from distill.model_zoo import get_config_file
from distill.teacher import ClassEmbeddings

CASES = {
    "quickstart R18-FPN 128x128": (
        get_config_file("synthetic/vild_r18_fpn_quick.yaml"),
        [],
        15,
        128,
        (128, 128),
    ),
    "R50-FPN 800x1333": (
        get_config_file("synthetic/Base-ViLD-R18-FPN.yaml"),
        [
            "MODEL.RESNETS.DEPTH",
            "50",
            "MODEL.RESNETS.NORM",
            "FrozenBN",
            "MODEL.FPN.OUT_CHANNELS",
            "256",
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            "1024",
            "MODEL.ROI_MASK_HEAD.CONV_DIM",
            "256",
            "MODEL.ANCHOR_GENERATOR.SIZES",
            "[[32], [64], [128], [256], [512]]",
            "MODEL.RPN.PRE_NMS_TOPK_TEST",
            "1000",
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            "1000",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.05",
            "INPUT.MIN_SIZE_TEST",
            "800",
            "INPUT.MAX_SIZE_TEST",
            "1333",
        ],
        65,
        512,
        (800, 1333),
    ),
}


@torch.no_grad()
def eager_detect(model, image: torch.Tensor):
    """The model's inference up to the RoI heads' detections (boxes, scores, labels, 28x28 masks)."""
    images = model.preprocess([{"image": image}])
    features = OrderedDict(model.backbone(images.tensors))
    proposals, _ = model.rpn(images, features)
    return model.roi_heads(features, proposals, images.image_sizes)[0][0]


def timed(fn, repeats: int) -> list[float]:
    fn()
    fn()  # warm-up: first-call allocations, onnxruntime's arena
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def run_case(name, config, opts, classes, dim, size, repeats, workdir, threads):
    torch.manual_seed(0)
    cfg = load_config(str(config), opts)
    vocab = ClassEmbeddings(
        F.normalize(torch.randn(classes, dim), dim=1), [f"class{i}" for i in range(classes)]
    )
    model = build_detector(cfg, vocab).eval()
    h, w = size
    canvas = (-(-h // 32) * 32, -(-w // 32) * 32)
    out = Path(workdir) / name.split()[0]
    export_model("detect", model, vocab, out, size_rule={"kind": "none"}, canvas=canvas, provenance={})
    onnx = OnnxModel(out, threads=threads)
    g = torch.Generator().manual_seed(1)
    image = (torch.rand(3, h, w, generator=g) * 255).round()
    padded = np.zeros((1, 3, *canvas), np.float32)
    padded[0, :, :h, :w] = image.numpy()
    sizes = np.array([[h, w]], np.int64)
    eager = timed(lambda: eager_detect(model, image), repeats)
    ort = timed(lambda: onnx.run(padded, sizes), repeats)
    n_eager = int(eager_detect(model, image)["scores"].numel())
    n_ort = int(onnx.run(padded, sizes)["scores"].size)
    return {"case": name, "eager_ms": eager, "onnxruntime_ms": ort, "detections": [n_eager, n_ort]}


def fmt(ms: list[float]) -> str:
    return f"{statistics.median(ms):.1f} ({statistics.mean(ms):.1f} ± {statistics.stdev(ms):.1f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            rows.append(run_case(name, *CASES[name], args.repeats, tmp, args.threads))
    print(
        f"\ntorch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads each, "
        f"{args.repeats} timed runs after 2 warm-up runs, ms per image: median (mean ± std)\n"
    )
    print("| model | eager PyTorch | onnxruntime | eager / onnxruntime | detections (eager, onnx) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        ratio = statistics.median(r["eager_ms"]) / statistics.median(r["onnxruntime_ms"])
        r["ratio"] = round(ratio, 2)
        print(
            f"| {r['case']} | {fmt(r['eager_ms'])} | {fmt(r['onnxruntime_ms'])} | {ratio:.2f} | "
            f"{r['detections'][0]}, {r['detections'][1]} |"
        )
    print(
        json.dumps(
            {
                r["case"]: {
                    "eager_ms": round(statistics.median(r["eager_ms"]), 2),
                    "onnxruntime_ms": round(statistics.median(r["onnxruntime_ms"]), 2),
                    "ratio": r["ratio"],
                }
                for r in rows
            }
            | {"threads": args.threads}
        )
    )


if __name__ == "__main__":
    main()
