#!/usr/bin/env python
"""Learn the teacher's text classifier for base classes: CoOp, DetPro or CLIP-Adapter → a learned-prompt file.

    python tools/train_prompts.py --method coop --teacher synthetic-tiny-teacher \
        --benchmark output/quickstart/synthetic --output prompts/coop.safetensors
    python tools/train_prompts.py --method detpro --teacher synthetic-tiny-teacher \
        --benchmark output/quickstart/synthetic --region-store output/quickstart/regions \
        --output prompts/detpro.safetensors [--resume]

Training data: the base-class annotations of the training split (--benchmark, a synthetic root, or
--train-json with --image-root); DetPro and CLIP-Adapter also read the region store's proposals and
embeddings. The output works wherever a template-set name does (--templates of dump_text_embeddings.py,
MODEL.DISTILL.TEACHER.TEMPLATES, the demo). Checkpoints and the log go to --work-dir (default <output>.work).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from pathlib import Path

from distill.teacher.prompt_config import SUFFIX, PromptTrainConfig
from distill.utils import DistillInputError, cli_entry
from distill.utils.cli import ToolParser, check_inputs, checkpoint_path, summary


def _training_split(args):
    from distill.data import load_coco_json, synthetic_dataset

    if args.benchmark:
        dicts, meta = synthetic_dataset(args.benchmark, "train")
        return dicts, meta, {"dataset": str(Path(args.benchmark).resolve()), "split": "train"}
    if not (args.train_json and args.image_root):
        raise DistillInputError("give --benchmark, or --train-json with --image-root")
    dicts, meta = load_coco_json(args.train_json, args.image_root)
    return dicts, meta, {"dataset": str(Path(args.train_json).resolve())}


def _data(args, teacher, cfg, split):
    from distill.teacher.prompt_training import gt_crop_samples, store_samples

    dicts, meta, prov = split
    base = [meta.thing_classes[i] for i in meta.contiguous_ids("base")]
    if cfg.method == "coop":
        data = gt_crop_samples(teacher, dicts, meta, base, progress=not args.no_progress)
        return data, base, {**prov, "source": "ground-truth crops", "num_samples": int(data["label"].numel())}
    from distill.data.region_store import RegionEmbeddingStore

    store = RegionEmbeddingStore(args.region_store, expected_dim=teacher.dim)
    data = store_samples(store, dicts, meta, base, cfg.fg_iou)
    fg = int((data["label"] >= 0).sum())
    return (
        data,
        base,
        {
            **prov,
            "source": "region store",
            "region_store": str(Path(args.region_store).resolve()),
            "num_foreground": fg,
            "num_background": int(data["label"].numel()) - fg,
        },
    )


def _parser():
    p = ToolParser(description=summary(__doc__))
    p.add_argument(
        "--method",
        required=True,
        choices=("coop", "detpro", "clip-adapter"),
        help="coop: GT crops; detpro: region-store proposals; clip-adapter: an MLP on the class embeddings",
    )
    p.add_argument("--teacher", required=True, help="open_clip arch or model-zoo teacher name")
    p.add_argument("--pretrained", default=None, help="open_clip tag, checkpoint path or model-zoo name")
    p.add_argument("--benchmark", default=None, help="synthetic benchmark root (its train split)")
    p.add_argument("--train-json", default=None, help="COCO-format training json (instead of --benchmark)")
    p.add_argument("--image-root", default=None, help="image folder of --train-json")
    p.add_argument("--region-store", default=None, help="region-embedding store (detpro, clip-adapter)")
    p.add_argument(
        "--output", required=True, help=f"learned-prompt file ({SUFFIX}; a .json sidecar beside it)"
    )
    p.add_argument("--work-dir", default=None, help="checkpoints and log (default: <output>.work)")
    p.add_argument("--resume", action="store_true", help="continue from the work dir's checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite the output and restart the work dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    skip = {"method", "iou_bins"}
    for f in dataclasses.fields(PromptTrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", help=f.metadata.get("help"))
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata.get("help"))
    p.add_argument(
        "--iou-bins", default="0.5,0.6,0.7,0.8,0.9,1.01", help="DetPro's context-grading bin edges"
    )
    return p


@cli_entry
def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        bins = tuple(float(x) for x in args.iou_bins.split(","))
    except ValueError:
        raise DistillInputError(
            f"--iou-bins must be comma-separated numbers, not {args.iou_bins!r}"
        ) from None
    fields = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(PromptTrainConfig)
        if f.name not in ("method", "iou_bins")
    }
    cfg = PromptTrainConfig(method=args.method, iou_bins=bins, **fields)
    out = Path(args.output)
    if not str(out).endswith(SUFFIX):
        raise DistillInputError(f"--output must end in {SUFFIX}", out)
    work = Path(args.work_dir or str(out) + ".work")
    if out.exists() and not args.force:
        raise DistillInputError("output exists; pass --force to overwrite it", out)
    if args.resume and not args.force and not (work / "last.pt").exists():
        raise DistillInputError(
            "--resume: no checkpoint to continue from (no last.pt); run without --resume to start training",
            work,
        )
    if (work / "last.pt").exists() and not (args.resume or args.force):
        raise DistillInputError(
            "work dir holds a checkpoint; pass --resume to continue or --force to restart", work
        )
    if cfg.method != "coop" and not args.region_store:
        raise DistillInputError(
            f"--method {cfg.method} trains on region-store proposals: give --region-store"
        )
    check_inputs(  # before torch and open_clip (seconds)
        ("teacher checkpoint", checkpoint_path(args.pretrained), "file"),
        ("--benchmark folder", args.benchmark, "dir"),
        ("annotation file (--train-json)", args.train_json, "file"),
        ("--image-root folder", args.image_root, "dir"),
        ("region-embedding store (--region-store)", args.region_store, "dir"),
    )
    from distill.teacher import create_teacher
    from distill.teacher.prompt_training import train_prompts
    from distill.utils.device import check_device

    # every input is checked before --force clears the work dir
    teacher = create_teacher(args.teacher, args.pretrained, device=check_device(args.device))
    split = _training_split(args)
    if args.force and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    # handlers added, not basicConfig: a library that logged while the teacher loaded may have configured logging
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(logging.FileHandler(work / "log.txt"))
    data, base, prov = _data(args, teacher, cfg, split)
    path = train_prompts(
        teacher, data, base, cfg, out, work, prov, resume=args.resume, progress=not args.no_progress
    )
    print(f"{path}: {cfg.method}, {len(base)} base classes, {cfg.steps} steps on {prov['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
