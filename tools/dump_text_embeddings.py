#!/usr/bin/env python
"""Class names → a ClassEmbeddings file (C, D) with its json sidecar (teacher, prompt set, class list hash).

    python tools/dump_text_embeddings.py --teacher synthetic-tiny-teacher \
        --vocabulary datasets/coco/annotations/ov_coco/instances_val2017_ov.json --output coco.npy
    python tools/dump_text_embeddings.py --teacher ViT-B-32 --pretrained openai --vocabulary "cat,dog" --output pets.npy

--vocabulary: a dataset json (its categories, sorted by id), a text file (one name per line or comma separated), a
comma list, or a named set (synthetic, coco, lvis), as every tool takes a vocabulary.
"""

from __future__ import annotations

import os
import sys

from distill.teacher.prompts import TEMPLATE_SETS
from distill.utils import DistillInputError, cli_entry
from distill.utils.cli import ToolParser, check_inputs, checkpoint_path, summary
from distill.utils.io import check_not_input


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument("--teacher", required=True, help="open_clip arch or model-zoo teacher name")
    p.add_argument(
        "--pretrained",
        default=None,
        help='open_clip tag, checkpoint path, model-zoo name, or "none" '
        "(random weights: a rehearsal at real shapes)",
    )
    p.add_argument(
        "--vocabulary",
        required=True,
        help="a dataset json (its categories by id), a text file (one name a line or comma separated), "
        '"name1,name2", or synthetic / coco / lvis',
    )
    p.add_argument(
        "--templates",
        default="vild",
        help=f"template set ({', '.join(sorted(TEMPLATE_SETS))}) or a "
        "learned-prompt file from tools/train_prompts.py (.safetensors)",
    )
    p.add_argument("--output", required=True, help=".npy file (a .json sidecar is written beside it)")
    p.add_argument(
        "--base-output",
        default=None,
        help="also write the embeddings of the categories marked "
        '"split": "base" in a dataset json (the training vocabulary of an open-vocabulary recipe)',
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output / --base-output and its sidecar",
    )
    args = p.parse_args(argv)
    for flag, path in (("--output", args.output), ("--base-output", args.base_output)):
        if path is None:
            continue
        if not path.endswith(".npy"):
            raise DistillInputError(f"{flag} must be a .npy path (its sidecar is <output>.json)", path)
        if not args.overwrite and (os.path.lexists(path) or os.path.lexists(path + ".json")):
            raise DistillInputError(
                f"{flag} exists (a model trained on it would see other classes); pass --overwrite to replace it",
                path,
            )
    check_not_input(args.output, [args.vocabulary], "--output")
    check_not_input(args.output + ".json", [args.vocabulary], "--output's sidecar")
    if args.base_output:
        check_not_input(args.base_output, [args.vocabulary, args.output], "--base-output")
    check_inputs(  # before torch and open_clip (seconds)
        ("teacher checkpoint", checkpoint_path(args.pretrained), "file"),
        (
            "vocabulary file",
            args.vocabulary if args.vocabulary.lower().endswith((".json", ".txt")) else None,
            "file",
        ),
    )
    from distill.teacher import ClassEmbeddings, create_teacher
    from distill.teacher.learned_prompts import describe, is_learned_prompts
    from distill.teacher.prompts import template_set
    from distill.teacher.vocabulary import base_vocabulary, vocabulary_names
    from distill.utils.device import check_device

    names, prov = vocabulary_names(args.vocabulary)
    base = base_vocabulary(args.vocabulary, names) if args.base_output else None
    learned = is_learned_prompts(args.templates)
    if not learned:
        template_set(args.templates)  # an unknown name fails before the teacher loads
    teacher = create_teacher(args.teacher, args.pretrained, device=check_device(args.device))
    emb = teacher.encode_text(names, args.templates)
    prov = {
        **teacher.provenance(),
        "templates": args.templates,
        **prov,
        **(
            describe(args.templates)
            if learned
            else {"num_templates": len(template_set(args.templates)["templates"])}
        ),
    }
    out = ClassEmbeddings(emb.cpu(), names, prov).save(args.output)
    print(f"{out}: {len(names)} classes x {emb.shape[1]} dims ({teacher.arch}, templates {args.templates})")
    if base is not None:
        keep = [names.index(n) for n in base]
        out = ClassEmbeddings(emb[keep].cpu(), base, {**prov, "split": "base"}).save(args.base_output)
        print(f"{out}: {len(base)} base classes x {emb.shape[1]} dims")
    return 0


if __name__ == "__main__":
    sys.exit(main())
