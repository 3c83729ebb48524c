#!/usr/bin/env python
"""Hand prompts vs CoOp, DetPro and CLIP-Adapter on a benchmark that can rank them (3 seeds, mean ± std).

    python benchmarks/prompt_transfer.py prepare [--output-dir output/prompt_transfer]   # shared stages
    python benchmarks/prompt_transfer.py learn                  # learned prompts per seed, table (a)
    python benchmarks/prompt_transfer.py cell --row detpro --seed 0   # one ViLD run of table (b)
    python benchmarks/prompt_transfer.py report                 # tables (a) and (b), then one line of JSON

Benchmark: the synthetic generator with the quickstart's training split (500 images, seed 0) and a
500-image validation split (5x the quickstart's 100, so 5x the novel instances). Shared by every row: the
proposal network (ViLD-text on base classes, hand prompts, --proposal-iters), its proposals and the
teacher's region store. Per row and seed s: the learned prompts trained with seed s (tools/train_prompts.py's
code), then ViLD fine-tuned from the proposal network with those class embeddings (--vild-iters, SEED s) and
evaluated on the validation split with the same row's embeddings of all classes.
(a) the teacher's zero-shot top-1 on the validation split's ground-truth crops (all 15 classes scored).
(b) ViLD's box AP50, novel and base. Every cell caches its result; each `cell` is one process, so each run can
take the machine's shared lock on its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from distill.data.synthetic import SyntheticConfig, generate
from distill.utils import DistillInputError, atomic_write_json, cli_entry, dumps_json, read_json

DATA = SyntheticConfig(seed=0, num_train=500, num_val=500, image_size=128)
TEACHER = "synthetic-tiny-teacher"
CONFIG = "synthetic/vild_r18_fpn_quick.yaml"
ROWS = {
    "hand": "hand prompts (ViLD's 63)",
    "coop": "CoOp",
    "detpro": "DetPro",
    "clip-adapter": "CLIP-Adapter",
}
PROPOSALS_PER_IMAGE = 32


def _cfg(out: Path, output: str, row: str, seed: int, extra: list[str]):
    from distill.model_zoo import get_config_file

    return _backend().load_config(
        get_config_file(CONFIG),
        [
            "DATASETS.ROOT",
            str(out),
            "MODEL.DISTILL.VILD.REGION_STORE",
            str(out / "regions"),
            "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
            str(_emb_path(out, row, seed, "base")),
            "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
            str(_emb_path(out, row, seed, "all")),
            "OUTPUT_DIR",
            str(out / output),
            *extra,
        ],
    )


def _backend():
    from distill.integrations.backend import get_backend

    return get_backend("torchvision")


def _data(out: Path):
    root = generate(out / "synthetic", DATA, progress=False)
    _backend().register_datasets(out)  # out/synthetic as distill_synthetic_{train,val}
    return root


def _emb_path(out: Path, row: str, seed: int, part: str) -> Path:
    return out / "text" / (f"hand_{part}.npy" if row == "hand" else f"{row}_s{seed}_{part}.npy")


def _templates(out: Path, row: str, seed: int) -> str:
    return "vild" if row == "hand" else str(out / "prompts" / f"{row}_s{seed}.safetensors")


def _write_embeddings(teacher, out: Path, row: str, seed: int) -> None:
    from distill.data import synthetic_dataset
    from distill.teacher import ClassEmbeddings

    if _emb_path(out, row, seed, "base").is_file():
        return
    _, meta = synthetic_dataset(out / "synthetic", "val")
    emb = teacher.encode_text(meta.thing_classes, _templates(out, row, seed))
    prov = {**teacher.provenance(), "templates": _templates(out, row, seed), "vocabulary": "synthetic"}
    base = meta.contiguous_ids("base")
    ClassEmbeddings(emb, meta.thing_classes, prov).save(_emb_path(out, row, seed, "all"))
    ClassEmbeddings(emb[base], [meta.thing_classes[i] for i in base], prov).save(
        _emb_path(out, row, seed, "base")
    )


def sampled_proposals(dicts: list[dict], per_image: int = PROPOSALS_PER_IMAGE, seed: int = 0) -> list[dict]:
    """Proposals without a proposal network: boxes jittered around the annotated (base) boxes and random boxes,
    half each, as COCO-result records (the cheap stand-in for `prepare --sampled-proposals`)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for d in dicts:
        w, h = d["width"], d["height"]
        gt = [a["bbox"] for a in d["annotations"]]
        for k in range(per_image):
            if gt and k < per_image // 2:
                x, y, bw, bh = gt[k % len(gt)]
                cx, cy = x + bw / 2 + rng.normal(0, 0.15) * bw, y + bh / 2 + rng.normal(0, 0.15) * bh
                bw, bh = bw * np.exp(rng.normal(0, 0.2)), bh * np.exp(rng.normal(0, 0.2))
            else:
                bw, bh = rng.uniform(0.1, 0.5, 2) * (w, h)
                cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
            x0, y0 = max(0.0, cx - bw / 2), max(0.0, cy - bh / 2)
            x1, y1 = min(float(w), cx + bw / 2), min(float(h), cy + bh / 2)
            out.append(
                {
                    "image_id": d["image_id"],
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "score": 1.0 - k / per_image,
                }
            )
    return out


def prepare(out: Path, proposal_iters: int, progress: bool, sampled: bool = False) -> None:
    """Data, hand embeddings, the proposal network, its proposals on the training split, the region store.

    `sampled`: no proposal network; the store holds `sampled_proposals` (enough for table (a), not for (b)).
    """
    from distill.data import synthetic_dataset
    from distill.integrations.backend import dataset_proposals
    from distill.teacher import create_teacher
    from distill.teacher.regions import dump_region_embeddings, load_proposals

    _data(out)
    teacher = create_teacher(TEACHER)
    _write_embeddings(teacher, out, "hand", 0)
    cfg = _cfg(
        out,
        "proposal_net",
        "hand",
        0,
        ["MODEL.DISTILL.METHOD", "vild_text", "SOLVER.MAX_ITER", str(proposal_iters)],
    )
    final = out / "proposal_net" / "model_final.pth"
    dicts, _ = synthetic_dataset(out / "synthetic", "train")
    props_file = out / "proposals_train.json"
    if sampled and not props_file.is_file():
        atomic_write_json(props_file, sampled_proposals(dicts))
    if not final.is_file() and not sampled:
        _backend().train(cfg, progress)
    if not props_file.is_file():
        model = _backend().load_model(cfg, str(final))
        props = dataset_proposals(
            _backend(),
            model,
            dicts,
            cfg.INPUT.MIN_SIZE_TEST,
            cfg.INPUT.MAX_SIZE_TEST,
            PROPOSALS_PER_IMAGE,
            progress,
        )
        atomic_write_json(props_file, props)
    if not (out / "regions" / "index.json").is_file():
        props = load_proposals(props_file, [d["image_id"] for d in dicts], PROPOSALS_PER_IMAGE)
        dump_region_embeddings(
            teacher, dicts, props, out / "regions", chunk_size=50, progress=progress
        ).finalize()
    print(f"[prompt_transfer] prepared {out}", flush=True)


def learn(out: Path, seeds: list[int], steps: int, progress: bool) -> dict:
    """Learned prompts of every method and seed, their class embeddings, and table (a)."""
    from distill.data import synthetic_dataset
    from distill.data.region_store import RegionEmbeddingStore
    from distill.teacher import create_teacher
    from distill.teacher.prompt_training import (
        PromptTrainConfig,
        gt_crop_samples,
        store_samples,
        train_prompts,
        zero_shot_top1,
    )

    _data(out)
    teacher = create_teacher(TEACHER)
    dicts, meta = synthetic_dataset(out / "synthetic", "train")
    base = [meta.thing_classes[i] for i in meta.contiguous_ids("base")]
    data = {"coop": gt_crop_samples(teacher, dicts, meta, base, progress)}
    data["detpro"] = data["clip-adapter"] = store_samples(
        RegionEmbeddingStore(out / "regions"), dicts, meta, base
    )
    for seed in seeds:
        for method in ("coop", "detpro", "clip-adapter"):
            path = Path(_templates(out, method, seed))
            if not path.is_file():
                prov = {
                    "dataset": str((out / "synthetic").resolve()),
                    "split": "train",
                    "source": "ground-truth crops" if method == "coop" else "region store",
                }
                train_prompts(
                    teacher,
                    data[method],
                    base,
                    PromptTrainConfig(method=method, steps=steps, seed=seed),
                    path,
                    out / "prompts" / f"{method}_s{seed}.work",
                    prov,
                    progress=progress,
                )
            _write_embeddings(teacher, out, method, seed)
    vdicts, vmeta = synthetic_dataset(out / "synthetic", "val")
    val = gt_crop_samples(teacher, vdicts, vmeta, vmeta.thing_classes, progress)
    novel = torch.tensor([c in set(vmeta.contiguous_ids("novel")) for c in val["label"].tolist()])
    table = {}
    for row in ROWS:
        for seed in [0] if row == "hand" else seeds:
            emb = teacher.encode_text(vmeta.thing_classes, _templates(out, row, seed))
            table.setdefault(row, []).append(
                {
                    "seed": seed,
                    "top1_base": zero_shot_top1(emb, val["emb"][~novel], val["label"][~novel]),
                    "top1_novel": zero_shot_top1(emb, val["emb"][novel], val["label"][novel]),
                }
            )
    result = {"rows": table, "num_base": int((~novel).sum()), "num_novel": int(novel.sum()), "steps": steps}
    atomic_write_json(out / "table_a.json", result, indent=1)
    return result


def cell(out: Path, row: str, seed: int, iters: int, progress: bool) -> dict:
    """One ViLD run: fine-tuned from the proposal network with this row's embeddings, then evaluated."""
    result_file = out / "cells" / f"{row}_s{seed}.json"
    if result_file.is_file():
        return read_json(result_file)
    _data(out)
    init = out / "proposal_net" / "model_final.pth"
    if not init.is_file() or not _emb_path(out, row, seed, "base").is_file():
        raise DistillInputError(f"run `prepare` and `learn` first (missing {init} or the {row} embeddings)")
    name = f"vild/{row}_s{seed}"
    cfg = _cfg(
        out,
        name,
        row,
        seed,
        [
            "MODEL.WEIGHTS",
            str(init),
            "SOLVER.MAX_ITER",
            str(iters),
            "SOLVER.WARMUP_ITERS",
            str(min(100, iters // 5)),
            "SEED",
            str(seed),
        ],
    )
    final = out / name / "model_final.pth"
    if not final.is_file():
        _backend().train(cfg, progress)  # resumes from the output folder's last checkpoint
    with torch.no_grad():
        m = _backend().evaluate(cfg, _backend().load_model(cfg, str(final)), "distill_synthetic_val")
    result = {
        "row": row,
        "seed": seed,
        "iters": iters,
        **{k: m[k] for k in ("box_AP50_novel", "box_AP50_base", "box_AP50")},
    }
    atomic_write_json(result_file, result, indent=1)
    return result


def _ms(xs: list[float], deterministic: bool = False) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.1f} (deterministic)" if deterministic else f"{xs[0]:.1f} (n=1)"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.1f} ± {sd:.1f} (n={len(xs)})"


def report(out: Path) -> dict:
    summary = {}
    if (out / "table_a.json").is_file():
        a = read_json(out / "table_a.json")
        print(
            f"\n(a) teacher zero-shot top-1 on validation GT crops ({a['num_base']} base, {a['num_novel']} novel "
            f"objects; 15 classes scored)\n\n| prompts | top-1 base | top-1 novel |\n|---|---|---|"
        )
        for row in [r for r in ROWS if r in a["rows"]]:
            runs = a["rows"][row]
            b, n = [r["top1_base"] for r in runs], [r["top1_novel"] for r in runs]
            print(f"| {ROWS[row]} | {_ms(b, row == 'hand')} | {_ms(n, row == 'hand')} |")
            summary[f"a/{row}"] = {"base": b, "novel": n}
    cells = [read_json(p) for p in sorted((out / "cells").glob("*.json"))] if (out / "cells").is_dir() else []
    if cells:
        print(
            f"\n(b) ViLD trained and evaluated with each set of class embeddings ({cells[0]['iters']} iterations "
            f"from the shared proposal network; box AP50 on {DATA.num_val} validation images)\n\n"
            "| class embeddings | novel AP50 | base AP50 | all AP50 | seeds |\n|---|---|---|---|---|"
        )
        for row in ROWS:
            rs = [c for c in cells if c["row"] == row]
            if rs:
                cols = [[c[k] for c in rs] for k in ("box_AP50_novel", "box_AP50_base", "box_AP50")]
                print(
                    f"| {ROWS[row]} | "
                    + " | ".join(_ms(c) for c in cols)
                    + f" | {','.join(str(c['seed']) for c in rs)} |"
                )
                summary[f"b/{row}"] = {"novel": cols[0], "base": cols[1]}
    print(json.dumps(json.loads(dumps_json(summary))))
    return summary


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=("prepare", "learn", "cell", "report"))
    p.add_argument("--output-dir", default="output/prompt_transfer")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--row", choices=sorted(ROWS), default="hand")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proposal-iters", type=int, default=300)
    p.add_argument("--vild-iters", type=int, default=150)
    p.add_argument("--prompt-steps", type=int, default=300)
    p.add_argument(
        "--sampled-proposals",
        action="store_true",
        help="prepare: no proposal network; the region store holds boxes sampled around the annotated "
        "boxes plus random ones (table (a) only)",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    progress = not args.no_progress
    if args.step == "prepare":
        prepare(out, args.proposal_iters, progress, args.sampled_proposals)
    elif args.step == "learn":
        learn(out, args.seeds, args.prompt_steps, progress)
        report(out)
    elif args.step == "cell":
        print(json.dumps(cell(out, args.row, args.seed, args.vild_iters, progress)))
    else:
        report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
