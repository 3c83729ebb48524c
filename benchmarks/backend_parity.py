#!/usr/bin/env python
"""The quickstart's detector schedule on both backends and several seeds: novel / base box AP50 side by side.

    python benchmarks/backend_parity.py [--seeds 0 1] [--output-dir output/parity] [quickstart options]

Each (backend, seed) is one `tools/quickstart.py` run (its own proposal network, region embeddings and ViLD
training; cached, so an interrupted benchmark resumes) with SEED set; the segmentation stage is left out.
Prints one row per run, the mean per backend, then one line of JSON. Needs detectron2 (INSTALL.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from distill.integrations.backend import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("box_AP50_novel", "box_AP50_base", "mask_AP50_novel")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--output-dir", default="output/parity")
    args, extra = p.parse_known_args(argv)
    rows = {}
    for backend in BACKENDS:
        for seed in args.seeds:
            out = Path(args.output_dir) / f"{backend}_seed{seed}"
            cmd = [
                sys.executable,
                str(ROOT / "tools/quickstart.py"),
                "--backend",
                backend,
                "--output-dir",
                str(out),
                "--no-progress",
                "--skip-semseg",
                *extra,
                "SEED",
                str(seed),
            ]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            ev = json.loads((out / "stages.json").read_text())["eval"]["vild"]
            rows[(backend, seed)] = {k: ev[k] for k in KEYS}
    print("\n| backend | seed | " + " | ".join(KEYS) + " |\n" + "|---" * (len(KEYS) + 2) + "|")
    for (backend, seed), m in rows.items():
        print(f"| {backend} | {seed} | " + " | ".join(f"{m[k]:.1f}" for k in KEYS) + " |")
    means = {
        b: {k: statistics.mean(m[k] for (bb, _), m in rows.items() if bb == b) for k in KEYS}
        for b in BACKENDS
    }
    for b, m in means.items():
        print(f"| {b} | mean | " + " | ".join(f"{m[k]:.1f}" for k in KEYS) + " |")
    gap = means["detectron2"]["box_AP50_novel"] - means["torchvision"]["box_AP50_novel"]
    print(
        json.dumps(
            {
                "runs": {f"{b}_seed{s}": m for (b, s), m in rows.items()},
                "mean": means,
                "novel_box_AP50_gap_d2_minus_tv": round(gap, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
