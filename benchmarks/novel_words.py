#!/usr/bin/env python
"""Box AP50 of the methods benchmark's novel classes in two groups: those whose name shares a word with a base
class ("striped heart": "striped star", "dotted heart") and those that share none ("pentagon", "octagon",
"kite", "bolt"). A text classifier can reach the first group by composing words it was trained on; only
distillation from the teacher's images reaches the second. Per finished cell of benchmarks/methods.py.

    python benchmarks/novel_words.py --output-dir benchmarks/results/methods [--json]

Reads each cell's detections (DIR/seed{S}/{row}/train/inference/<dataset>/coco_instances_results.json; a cell
kept without its files is skipped) and the world's LVIS-format validation json; caches each cell's result in
DIR/seed{S}/{row}/novel_words.json. Prints mean ± std over seeds per row.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from distill.utils import DistillInputError, atomic_write_json, cli_entry, dumps_json, read_json
from distill.utils.cli import ToolParser, parse_args

EVAL_DATASET = "distill_synthetic_lvis_val"  # benchmarks/methods.py's
GROUPS = ("novel_shared", "novel_unshared")


def word_groups(categories: list[dict]) -> dict[str, tuple[int, ...]]:
    """Novel category ids whose name shares a word with some base class name, and those that share none."""
    base_words = {w for c in categories if c["split"] == "base" for w in c["name"].split()}
    novel = [c for c in categories if c["split"] == "novel"]
    return {
        "novel_shared": tuple(c["id"] for c in novel if set(c["name"].split()) & base_words),
        "novel_unshared": tuple(c["id"] for c in novel if not set(c["name"].split()) & base_words),
    }


def cell_result(cell: Path, gt: Path, groups: dict) -> dict | None:
    """{group: box AP50} of one cell (cached in cell/novel_words.json), None without its detections."""
    cache = cell / "novel_words.json"
    if cache.is_file():
        return read_json(cache, what="novel_words.json")
    dets = cell / "train" / "inference" / EVAL_DATASET / "coco_instances_results.json"
    if not dets.is_file():
        return None
    from distill.data.ov_splits import CategorySplit
    from distill.evaluation.detection import evaluate_detections

    preds = read_json(dets, what="detections")
    if preds:
        # the evaluator reports two groups, named base / novel: here the two novel groups
        split = CategorySplit(groups["novel_shared"], groups["novel_unshared"], "name words")
        m = evaluate_detections(gt, preds, "bbox", "lvis", split, str(dets))
        out = {"novel_shared": m["AP50_base"], "novel_unshared": m["AP50_novel"], "novel": None}
    else:  # a detector that found nothing: nothing recalled
        out = {"novel_shared": 0.0, "novel_unshared": 0.0, "novel": None}
    rec = read_json(cell / "metrics.json", what="benchmark cell")
    out["novel"] = rec["metrics"].get("box_AP50_novel")
    atomic_write_json(cache, out, indent=1)
    return out


def collect(root: Path) -> dict:
    gt = root / "world" / "annotations" / "lvis_val.json"
    if not gt.is_file():
        raise DistillInputError("--output-dir has no world (world/annotations/lvis_val.json)", root)
    groups = word_groups(read_json(gt, what="validation json")["categories"])
    rows: dict[str, dict[str, dict]] = {}
    for metrics in sorted(root.glob("seed*/*/metrics.json")):
        cell = metrics.parent
        res = cell_result(cell, gt, groups)
        if res is None:
            continue
        seed = cell.parent.name.removeprefix("seed")
        for k, v in res.items():
            rows.setdefault(cell.name, {}).setdefault(k, {})[seed] = v
    stats = {}
    for row, cols in rows.items():
        stats[row] = {}
        for k, per in cols.items():
            vals = [v for v in per.values() if v is not None]
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            stats[row][k] = {"mean": statistics.fmean(vals) if vals else None, "std": std, "per_seed": per}
    return {"groups": {k: len(v) for k, v in groups.items()}, "rows": stats}


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(prog="novel_words.py", description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", required=True, help="a benchmarks/methods.py folder")
    p.add_argument("--json", action="store_true", help="the table as one JSON line")
    args = parse_args(p, sys.argv[1:] if argv is None else argv)
    root = Path(args.output_dir)
    if not root.is_dir():
        raise DistillInputError("--output-dir not found", root)
    table = collect(root)
    if args.json:
        print(dumps_json(table))
        return 0
    g = table["groups"]
    print(f"box AP50 of the novel classes sharing a word with a base class ({g['novel_shared']}) and not "
          f"({g['novel_unshared']}), mean ± std over seeds\n")  # fmt: skip
    print(
        "| row | seeds | novel (all) | novel, shared words | novel, no shared word |\n|---|---|---|---|---|"
    )
    for row, cols in sorted(table["rows"].items()):
        cells = [cols[k] for k in ("novel", *GROUPS)]
        text = [f"{c['mean']:.1f} ± {c['std']:.1f}" if c["mean"] is not None else "-" for c in cells]
        print(f"| {row} | {len(cols['novel_shared']['per_seed'])} | " + " | ".join(text) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
