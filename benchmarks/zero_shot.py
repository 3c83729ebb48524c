#!/usr/bin/env python
"""Zero-shot detection by the teacher alone (ViLD's "CLIP on cropped regions") on the synthetic benchmark:
box AP50 novel / base / all of the validation split and seconds per image, for each proposal source.

    python benchmarks/zero_shot.py [--data output/quickstart/synthetic] \
        [--weights output/quickstart/vild_text/model_final.pth] [--proposals selective-search rpn] \
        [--teacher synthetic-tiny-teacher] [--limit N] [--output zero_shot.json]

The teacher scores every image's proposals against all categories (base and novel): no training of any
kind, so novel and base are on equal terms. `--proposals rpn` takes the class-agnostic proposals of a
trained detector's RPN (trained on base boxes only, as ViLD's), with its objectness in the score (geometric
mean); selective search needs no training at all. `--teacher ViT-B-32 --pretrained none` times a real teacher's
shapes (224-px crops; the proposals' cost does not depend on the image size, selective search works at 256 px). Seconds per image: proposals + crops + teacher + NMS, one
thread, CPU, mean ± std over images (image decoding excluded), wall clock and the process's CPU time (the
latter does not grow when other work shares the machine). Missing data is generated
(distill.data.synthetic, default config). Prints one markdown row per source (the methods table's columns:
method, AP50 novel, AP50 base, AP50 all, s/img), then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from distill.data.images import read_image_rgb
from distill.data.synthetic import generate
from distill.evaluation.detection import evaluate_detections
from distill.integrations.torchvision.meta_arch import detections_to_coco
from distill.integrations.zero_shot import PROPOSAL_SOURCES, ZeroShotSpec, build_zero_shot
from distill.utils.io import atomic_write_json, read_json

HEADER = (
    "| method | proposals, objectness weight | AP50 novel | AP50 base | AP50 all | s/img | CPU s/img |\n"
    "|---|---|---|---|---|---|---|"
)


def run_source(source: str, args, gt: dict, root: Path) -> dict:
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    names, ids = [c["name"] for c in cats], [c["id"] for c in cats]
    spec = ZeroShotSpec(
        names=names,
        teacher=args.teacher,
        pretrained=args.pretrained,
        proposals=source,
        weights=args.weights if source == "rpn" else None,
        top_k=args.top_k,
        objectness_weight=args.objectness_weight,
    )
    detector = build_zero_shot(spec)
    images = gt["images"][: args.limit] if args.limit else gt["images"]
    preds, seconds, cpu = [], [], []
    for im in images:
        image = read_image_rgb(str(root / "images" / "val" / Path(im["file_name"]).name))
        t0, c0 = time.perf_counter(), time.process_time()
        det = detector(image)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        preds += detections_to_coco(det, im["id"], ids)
    sub = {
        **gt,
        "images": images,
        "annotations": [a for a in gt["annotations"] if a["image_id"] in {i["id"] for i in images}],
    }
    m = evaluate_detections(sub, preds, "bbox", "coco", source="zero-shot predictions")
    return {
        "method": "CLIP on cropped regions (teacher only)",
        "proposals": source,
        "teacher": args.teacher,
        "pretrained": args.pretrained,
        "objectness_weight": detector.cfg.objectness_weight,
        "images": len(images),
        "AP50_novel": m.get("AP50_novel"),
        "AP50_base": m.get("AP50_base"),
        "AP50": m.get("AP50"),
        "AP": m.get("AP"),
        "s_per_img": statistics.mean(seconds),
        "s_per_img_std": statistics.pstdev(seconds),
        "cpu_s_per_img": statistics.mean(cpu),
        "cpu_s_per_img_std": statistics.pstdev(cpu),
    }


def row(r: dict) -> str:
    def pct(v):  # the evaluator reports percentages
        return "–" if v is None else f"{v:.1f}"

    return (
        f"| {r['method']} | {r['proposals']}, a={r['objectness_weight']:g} | {pct(r['AP50_novel'])} | {pct(r['AP50_base'])} | "
        f"{pct(r['AP50'])} | {r['s_per_img']:.3f} ± {r['s_per_img_std']:.3f} | "
        f"{r['cpu_s_per_img']:.3f} ± {r['cpu_s_per_img_std']:.3f} |"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="output/quickstart/synthetic", help="synthetic benchmark root")
    p.add_argument("--weights", default="output/quickstart/vild_text/model_final.pth", help="RPN checkpoint")
    p.add_argument("--proposals", nargs="+", choices=PROPOSAL_SOURCES, default=list(PROPOSAL_SOURCES))
    p.add_argument("--teacher", default="synthetic-tiny-teacher")
    p.add_argument(
        "--pretrained",
        default=None,
        help="of --teacher; 'none': random weights (the cost of a real teacher's shapes, no meaningful AP)",
    )
    p.add_argument("--top-k", type=int, default=300, help="proposals per image")
    p.add_argument(
        "--objectness-weight",
        type=float,
        default=None,
        help="a in p^(1-a) * objectness^a (default: per source)",
    )
    p.add_argument("--limit", type=int, default=0, help="first N validation images (0: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=None, help="also write the rows as json here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    if not (root / "annotations" / "instances_val.json").is_file():
        generate(root, progress=False)
    gt = read_json(root / "annotations" / "instances_val.json", what="ground truth")
    rows = []
    for source in args.proposals:
        if source == "rpn" and not Path(args.weights).is_file():
            print(f"skipping rpn: no checkpoint at {args.weights}", file=sys.stderr)
            continue
        rows.append(run_source(source, args, gt, root))
    print(HEADER)
    for r in rows:
        print(row(r))
    if args.output:
        atomic_write_json(args.output, {"rows": rows, "command": " ".join(sys.argv)})
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
