#!/usr/bin/env python
"""CLIPSelf: fine-tune a ViT teacher's dense features toward its own crop embeddings; the result is a teacher.

    python tools/train_clipself.py --world methods --pretrained PATH --output-dir output/clipself
    python tools/train_clipself.py --images coco/train2017 --arch ViT-B-16 --pretrained openai \\
        --image-size 1024 --warmup 1000 --steps 44358 --batch-size 2 --proposals proposals.npz
    torchrun --nproc-per-node 8 tools/train_clipself.py ...       # one shard of the images per process
    python tools/train_clipself.py ... --resume                    # continue after a kill (same flags)

Writes OUTPUT_DIR/teacher_fp16.safetensors (the student averaged with the teacher by --student-ratio; load it
with `create_teacher(ARCH, PATH)` or MODEL.DISTILL.TEACHER.PRETRAINED) and teacher_fp16.json (base weights,
sha256, recipe). The schedule is linear warm-up then cosine (--schedule constant: flat).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from distill.utils import DistillInputError, cli_entry, dumps_json
from distill.utils.cli import ToolParser, positive_int, summary

FIELD_HELP = {
    "arch": "open_clip ViT architecture of the teacher",
    "pretrained": "the teacher's weights: open_clip tag, checkpoint path, model-zoo name, or none (random)",
    "steps": "training steps",
    "batch_size": "images per step (per process under torchrun)",
    "lr": "AdamW learning rate (CLIPSelf: 1e-5)",
    "weight_decay": "AdamW weight decay (CLIPSelf: 0.1)",
    "warmup": "linear warm-up steps (CLIPSelf: 1000)",
    "schedule": "learning rate after warm-up: cosine (CLIPSelf's) or constant",
    "image_size": "the student's input: longer side in pixels (CLIPSelf: 1024 for B/16, 896 for L/14)",
    "student_ratio": "on save, w = r * student + (1 - r) * teacher (CLIPSelf: 0.7 B/16, 0.95 L/14)",
    "max_split": "grid boxes: up to this many rows (columns: ceil(m/2) to 2m)",
    "max_cells": "grid boxes: at most this many cells",
    "proposals": "proposals file (.json / .npz, tools/export_proposals.py) instead of grids",
    "top_k": "proposals per image",
    "geometry": "teacher crops: center (CLIP's preprocessing) or stretch",
    "seed": "seed of the image order and the grids",
    "checkpoint_every": "steps between checkpoints (resume after a kill)",
    "save_dtype": "dtype of the saved weights",
}
WORLD_ROOTS = {"methods": "output/methods/world", "quickstart": "output/quickstart/synthetic"}


def _world(name: str, root: str | None):
    """The synthetic world's training images (made on first use at its usual place, like train_teacher)."""
    from distill.data.synthetic import generate
    from distill.teacher.clipself import ImageSet

    if root:
        return ImageSet.from_world(root), None
    if name == "methods":
        from distill.data.synthetic_methods import MethodsWorldConfig

        cfg = MethodsWorldConfig()
    else:
        from distill.integrations.quickstart import QUICKSTART_DATA

        cfg = QUICKSTART_DATA
    try:
        path = generate(WORLD_ROOTS[name], cfg)
    except FileExistsError as e:
        raise DistillInputError(str(e)) from None
    return ImageSet.from_world(path), cfg.image_size


@cli_entry
def main(argv=None) -> int:
    from distill.teacher.clipself_config import GEOMETRIES, SAVE_DTYPES, SCHEDULES, CLIPSelfConfig

    p = ToolParser(description=summary(__doc__))
    src = p.add_argument_group("data (one of)")
    src.add_argument("--images", default=None, help="a folder of training images (any size)")
    src.add_argument(
        "--world", choices=sorted(WORLD_ROOTS), default=None, help="a synthetic world's train split"
    )
    src.add_argument(
        "--world-root", default=None, help="that world's folder (default: where the tools make it)"
    )
    p.add_argument("--output-dir", default="output/clipself", help="checkpoints and the averaged teacher")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt (same flags)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda where there is one)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    choices = {"schedule": SCHEDULES, "geometry": GEOMETRIES, "save_dtype": SAVE_DTYPES}
    for f in dataclasses.fields(CLIPSelfConfig):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=None if f.name == "image_size" else f.default,
            choices=choices.get(f.name),
            help=f"{FIELD_HELP[f.name]} (default {f.default}"
            + (", or the world's image size)" if f.name == "image_size" else ")"),
        )
    args = p.parse_args(argv)
    if bool(args.images) == bool(args.world or args.world_root):
        raise DistillInputError("give the training images: --images DIR or --world NAME (one of them)")
    if args.proposals and not Path(args.proposals).is_file():
        raise DistillInputError("proposals file not found", args.proposals)
    import torch

    from distill.teacher.clipself import ImageSet, check_vit_arch, train_clipself

    check_vit_arch(args.arch)  # before a world is made

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.images:
        images, world_size = ImageSet.from_folder(args.images), None
    else:
        images, world_size = _world(args.world or "methods", args.world_root)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(CLIPSelfConfig)}
    if fields["image_size"] is None:
        fields["image_size"] = world_size or CLIPSelfConfig.image_size
    cfg = CLIPSelfConfig(**fields)
    weights = train_clipself(args.output_dir, cfg, images, resume=args.resume, device=args.device)
    if os.environ.get("RANK", "0") == "0":  # rank 0 wrote it
        from distill.teacher.clipself import sha256_file

        print(f"teacher: {weights} ({weights.stat().st_size / 1e6:.1f} MB) sha256 {sha256_file(weights)}")
        print(dumps_json({"teacher": str(weights), "arch": cfg.arch, "steps": cfg.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
