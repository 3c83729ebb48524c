#!/usr/bin/env python
"""The OV-COCO / OV-LVIS recipes (workloads/recipes.py, GETTING_STARTED.md) at real shapes on this machine: per
stage, seconds per unit (image, class, region or training iteration), peak memory and bytes written per image.

    python benchmarks/recipe_rehearsal.py [--dataset ov_coco ov_lvis] [--backend torchvision] [--num-train 2]
        [--regions-per-image 300] [--iterations 2] [--work DIR]

Shapes: COCO- / LVIS-shaped trees (distill.data.shaped, images 640x480 / 427x640 / 640x427), ViT-B-32 with
random weights at 224 px (one prompt template; the recipe's 63 cost 63x the text stage), R50-FPN with random
weights at the configs' 1024 px with large-scale jitter, 300 proposals per training image. Every stage runs
as its own process, so a stage's seconds per unit include its start-up (imports, model construction) shared
over its units: an upper bound. Training rows report the trainer's own time per iteration; the regions row
is per region encoded (boxes the dump skips, such as the sub-pixel ones of a random proposal network, are not
counted).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from workloads.recipes import Rehearsal, recipe, run_stage

from distill.data.shaped import write_shaped_tree

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"ov_coco": 65, "ov_lvis": 1203}


def _iteration_seconds(metrics_json: Path) -> float | None:
    """The trainer's time per iteration (torchvision: time_per_iter; detectron2: time) of the last record."""
    if not metrics_json.is_file():
        return None
    last = [json.loads(line) for line in metrics_json.read_text().splitlines() if line.strip()][-1]
    return last.get("time_per_iter", last.get("time"))


def rehearse(dataset: str, backend: str, root: Path, work: Path, args) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "configs").exists():
        os.symlink(REPO / "configs", work / "configs")
    demo = str(root / "coco" / "val2017" / f"{args.num_train + 1:012d}.jpg")
    stages = recipe(dataset, backend, str(root), Rehearsal(args.iterations, args.regions_per_image, demo))
    units = {
        "text": CLASSES[dataset],
        "proposals": args.num_train,
        "regions": args.num_train,
        "evaluate": args.num_val,
        "demo": 1,
        "prepare": args.num_train + args.num_val,
        "train_proposal_net": args.iterations,
        "train_vild": args.iterations,
    }
    rows = []
    for st in stages:
        r = run_stage(st, str(REPO), str(work), str(root))
        if r.returncode:
            raise SystemExit(f"{dataset} {backend} stage {st.name} failed:\n{r.stderr}")
        n = units[st.name]
        if st.name == "regions":
            n = json.loads((work / st.outputs[0] / "index.json").read_text())["num_regions"]  # the store
        per = r.seconds / max(n, 1)
        if st.name.startswith("train"):
            sub = "vild_text" if st.name == "train_proposal_net" else "vild"
            per = _iteration_seconds(work / "output" / dataset / sub / "metrics.json") or per
        images = (
            units[st.name] if st.per == "image" else (args.num_train if st.name.startswith("train") else 1)
        )
        unit = "region" if st.name == "regions" else st.per
        rows.append(
            {
                "dataset": dataset,
                "backend": backend,
                "stage": st.name,
                "unit": unit,
                "s_per_unit": per,
                "wall_s": r.seconds,
                "peak_rss_gb": r.peak_rss_bytes / 2**30,
                "bytes_per_image": r.bytes_written / max(images, 1) if st.per != "class" else r.bytes_written,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", nargs="+", default=["ov_coco", "ov_lvis"], choices=sorted(CLASSES))
    p.add_argument("--backend", nargs="+", default=["torchvision"], choices=["torchvision", "detectron2"])
    p.add_argument("--num-train", type=int, default=2)
    p.add_argument("--num-val", type=int, default=2)
    p.add_argument("--regions-per-image", type=int, default=300)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="recipe_rehearsal_"))
    root = write_shaped_tree(work / "datasets", args.num_train, args.num_val)
    rows = []
    for dataset in args.dataset:
        for backend in args.backend:
            rows += rehearse(dataset, backend, root, work / f"{dataset}_{backend}", args)
    print(
        f"\nthreads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs; "
        f"{args.num_train} training / {args.num_val} validation images; {args.regions_per_image} regions per "
        f"image; {args.iterations} iterations per training\n"
    )
    print(
        "| dataset | backend | stage | s per unit | unit | wall s | peak RSS GB | bytes written per image |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        written = f"{r['bytes_per_image'] / 1e6:.2f} MB" + (" (total)" if r["unit"] == "class" else "")
        print(
            f"| {r['dataset']} | {r['backend']} | {r['stage']} | {r['s_per_unit']:.2f} | {r['unit']} | "
            f"{r['wall_s']:.0f} | {r['peak_rss_gb']:.2f} | {written} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
