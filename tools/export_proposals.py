#!/usr/bin/env python
"""The proposal network's top-K RPN proposals of every image of a dataset → the proposals file that
tools/dump_region_embeddings.py reads (ViLD's offline step, before the teacher embeds the regions).

    python tools/export_proposals.py --config-file configs/ov_coco/vild_text_r50_fpn_lsj.yaml \
        --weights output/ov_coco/vild_text/model_final.pth --dataset distill_ov_coco_train \
        --output output/ov_coco/proposals_train.npz [--top-k 300] [--backend auto|torchvision|detectron2] [KEY VALUE ...]

Every image of the dataset is proposed for, annotated or not (images are read at INPUT.MIN_SIZE_TEST /
MAX_SIZE_TEST, boxes are in original pixels). The output is a .npz (per image ids and counts, boxes XYXY,
scores, best first: 0.7 GB for COCO train2017) or, for other names, a json list of {image_id, bbox [x, y, w, h],
score} (~3 GB for COCO, ~15 GB of memory to load); an existing output is kept unless --overwrite is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

from distill.integrations.backend import AUTO_WITH_CHECKPOINT
from distill.utils import DistillInputError, atomic_write_json, cli_entry
from distill.utils.cli import ToolParser, add_overrides, parse_args, positive_int, summary


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument(
        "--config-file", default=None, help="the proposal network's config (default: the checkpoint's own)"
    )
    p.add_argument("--weights", required=True, help="its checkpoint (path or model-zoo name)")
    p.add_argument("--dataset", required=True, help="registered dataset name, e.g. distill_ov_coco_train")
    p.add_argument("--output", required=True, help="proposals file to write (.npz, or .json)")
    p.add_argument("--top-k", type=positive_int, default=300, help="proposals per image (ViLD: 300)")
    p.add_argument(
        "--backend",
        choices=("auto", "torchvision", "detectron2"),
        default="auto",
        help=AUTO_WITH_CHECKPOINT,
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_overrides(p)
    args = parse_args(p, argv)
    from distill.integrations.backend import (
        backend_name_for,
        check_config_early,
        check_weights_early,
        get_backend,
    )

    out = Path(args.output)
    if out.suffix not in (".npz", ".json"):
        raise DistillInputError(
            "--output must end in .npz or .json (the two formats the region dump reads)", out
        )
    if out.exists() and not args.overwrite:
        raise DistillInputError("output exists (pass --overwrite to replace it)", out)
    check_config_early(
        args.config_file, args.opts, args.backend
    )  # errors that need no model come before torch
    weights = check_weights_early(args.weights)
    from distill.integrations.inference import inference_config

    backend = get_backend(backend_name_for(args.backend, weights))
    cfg, meta = inference_config(weights, "detector", args.config_file, args.opts, backend.load_config)
    if cfg.MODEL.RPN.POST_NMS_TOPK_TEST < args.top_k:
        raise DistillInputError(
            f"MODEL.RPN.POST_NMS_TOPK_TEST is {cfg.MODEL.RPN.POST_NMS_TOPK_TEST}, fewer than "
            f"--top-k {args.top_k}"
        )
    from distill.data.catalog import datasets_root, get_dataset, register_all

    register_all(datasets_root(cfg))
    dicts, _ = get_dataset(args.dataset)
    from distill.teacher.regions import proposal_records, save_proposals_npz
    from distill.teacher.vocabulary import training_vocabulary

    # the proposals do not depend on the classes: any vocabulary of the model's dim builds it
    model = backend.load_for_inference(cfg, weights, training_vocabulary(cfg, meta))
    per_image = backend.iter_dataset_proposals(
        model, dicts, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, args.top_k, not args.no_progress
    )
    if out.suffix == ".npz":
        n = save_proposals_npz(out, per_image)
    else:
        records = [r for image_id, b, s in per_image for r in proposal_records(image_id, b, s)]
        atomic_write_json(out, records)
        n = len(records)
    print(f"{out}: {n} proposals of {len(dicts)} images (top {args.top_k})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
