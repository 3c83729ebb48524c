#!/usr/bin/env python
"""Class names → a ClassEmbeddings file (C, D) with its json sidecar (teacher, prompt set, class list hash).

    python tools/dump_text_embeddings.py --teacher synthetic-tiny-teacher \
        --vocabulary datasets/coco/annotations/ov_coco/instances_val2017_ov.json --output coco.npy
    python tools/dump_text_embeddings.py --teacher ViT-B-32 --pretrained openai --vocabulary "cat,dog" --output pets.npy

--vocabulary: a dataset json (its categories, sorted by id), a text file (one name per line), or a comma list.
"""
from __future__ import annotations

import argparse
import sys

from distill.teacher.prompts import TEMPLATE_SETS
from distill.utils import DistillInputError, cli_entry
from distill.utils.io import check_not_input


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", required=True, help="open_clip arch or model-zoo teacher name")
    p.add_argument("--pretrained", default=None, help="open_clip tag, checkpoint path or model-zoo name")
    p.add_argument("--vocabulary", required=True,
                   help="a dataset json (its categories by id), a text file (one name a line) or \"name1,name2\"")
    p.add_argument("--templates", default="vild", choices=sorted(TEMPLATE_SETS),
                   help="prompt set averaged per class (vild: ViLD's 63 templates)")
    p.add_argument("--output", required=True, help=".npy file (a .json sidecar is written beside it)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = p.parse_args(argv)
    if not args.output.endswith(".npy"):
        raise DistillInputError("--output must be a .npy path (its sidecar is <output>.json)", args.output)
    check_not_input(args.output, [args.vocabulary], "--output")
    check_not_input(args.output + ".json", [args.vocabulary], "--output's sidecar")
    from distill.teacher import ClassEmbeddings, create_teacher
    from distill.teacher.vocabulary import read_vocabulary

    names, prov = read_vocabulary(args.vocabulary)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DistillInputError(f"class name {dup!r} appears twice in the vocabulary")
    teacher = create_teacher(args.teacher, args.pretrained, device=args.device)
    emb = teacher.encode_text(names, args.templates)
    prov = {**teacher.provenance(), "templates": args.templates,
            "num_templates": len(TEMPLATE_SETS[args.templates]["templates"]), **prov}
    out = ClassEmbeddings(emb.cpu(), names, prov).save(args.output)
    print(f"{out}: {len(names)} classes x {emb.shape[1]} dims ({teacher.arch}, templates {args.templates})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
