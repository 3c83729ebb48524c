#!/usr/bin/env python
"""The main job: the whole open-vocabulary pipeline on the synthetic benchmark, on CPU, stage by stage.

    python tools/quickstart.py [--output-dir output/quickstart] [--force]

Each stage writes its result under the output folder and is skipped on a rerun once finished.
Stages present so far: the synthetic benchmark (data) and its statistics. Later stages (teacher
embeddings, proposals, ViLD training, evaluation) plug into STAGES.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import _common  # noqa: F401  (puts the checkout on sys.path)

from distill.data import synthetic_dataset
from distill.data.synthetic import SyntheticConfig, generate
from distill.utils import cli_entry, dumps_json

QUICKSTART_DATA = SyntheticConfig(seed=0, num_train=500, num_val=100, image_size=128)


def stage_data(out: Path) -> dict:
    """Synthetic benchmark → out/synthetic (skipped when already there with the same config)."""
    root = generate(out / "synthetic", QUICKSTART_DATA)
    stats = {}
    for split in ("train", "val"):
        dicts, meta = synthetic_dataset(root, split)
        counts = Counter(meta.category_ids[a["category_id"]] for d in dicts for a in d["annotations"])
        novel = set(meta.split.novel)
        stats[split] = {"images": len(dicts), "boxes_base": sum(v for k, v in counts.items() if k not in novel),
                        "boxes_novel": sum(v for k, v in counts.items() if k in novel)}
    return {"root": str(root), "stats": stats, "num_base": len(meta.split.base), "num_novel": len(meta.split.novel)}


STAGES = [("data", stage_data)]


def print_table(results: dict) -> None:
    data = results["data"]
    print(f"\nsynthetic benchmark: {data['num_base']} base / {data['num_novel']} novel categories at {data['root']}")
    print("| split | images | base boxes | novel boxes |\n|---|---|---|---|")
    for split, s in data["stats"].items():
        print(f"| {split} | {s['images']} | {s['boxes_base']} | {s['boxes_novel']} |")


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="output/quickstart")
    p.add_argument("--force", action="store_true", help="rerun every stage from scratch")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    if args.force and out.exists():
        shutil.rmtree(out)
    results, t0 = {}, time.time()
    for name, fn in STAGES:
        t = time.time()
        results[name] = fn(out)
        print(f"[quickstart] stage {name}: done in {time.time() - t:.1f}s", flush=True)
    print_table(results)
    summary = {"wall_s": round(time.time() - t0, 1), **{f"{k}_images": v["images"]
                                                         for k, v in results["data"]["stats"].items()}}
    print(dumps_json(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
