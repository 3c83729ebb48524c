#!/usr/bin/env python
"""ViLD's ablation on the synthetic benchmark: ViLD-text, ViLD-image and ViLD trained with one schedule.

    python benchmarks/ablation.py [--output-dir output/ablation] [--quickstart-dir output/quickstart] [KEY VALUE ...]

Reuses the quickstart's data, class embeddings and region-embedding store (run `make quickstart` first, or
this script runs those stages), trains the three variants from scratch with the quickstart config's
schedule, evaluates box and mask AP on the validation set, prints the table of ViLD's ablation, then one
line of JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distill.integrations import quickstart
from distill.integrations.backend import BACKENDS

VARIANTS = {
    "ViLD-text": ["MODEL.DISTILL.METHOD", "vild_text"],
    "ViLD-image": ["MODEL.DISTILL.VILD.TEXT_LOSS_WEIGHT", "0.0"],
    "ViLD": [],
}


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="output/ablation")
    p.add_argument("--quickstart-dir", default="output/quickstart")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torchvision",
        help="the backend of the quickstart run in --quickstart-dir, and of these trainings",
    )
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    qs = Path(args.quickstart_dir)
    pipe = quickstart.Pipeline(qs, [], backend=args.backend)
    pipe.data()
    for stage, fn in (("text", pipe.text), ("proposals", pipe.proposals), ("regions", pipe.regions_stage)):
        marker = {
            "text": qs / "text" / "synthetic_all.npy",
            "proposals": qs / "proposals_train.json",
            "regions": qs / "regions" / "index.json",
        }[stage]
        if not marker.is_file():
            fn()
    rows = {}
    for name, extra in VARIANTS.items():
        out = Path(args.output_dir) / name
        cfg = pipe.cfg(name, extra + args.overrides + ["OUTPUT_DIR", str(out)])  # the last OUTPUT_DIR wins
        final = out / "model_final.pth"
        if not final.is_file():
            pipe.backend.train(cfg)
        model = pipe.backend.load_model(cfg, str(final))
        with torch.no_grad():
            rows[name] = pipe.backend.evaluate(cfg, model, "distill_synthetic_val")
    keys = [
        ("box_AP50_novel", "box AP50 novel"),
        ("box_AP50_base", "box AP50 base"),
        ("box_AP50", "box AP50 all"),
        ("mask_AP50_novel", "mask AP50 novel"),
        ("mask_AP_novel", "mask AP novel"),
    ]
    print("\n| method | " + " | ".join(k[1] for k in keys) + " |\n" + "|---" * (len(keys) + 1) + "|")
    for name, m in rows.items():
        print(f"| {name} | " + " | ".join("-" if m.get(k) is None else f"{m[k]:.1f}" for k, _ in keys) + " |")
    print(json.dumps({name: {k: m.get(k) for k, _ in keys} for name, m in rows.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
