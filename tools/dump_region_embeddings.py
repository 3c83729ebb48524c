#!/usr/bin/env python
"""Teacher region embeddings of every proposal of a dataset → a sharded, resumable region-embedding store.

    python tools/dump_region_embeddings.py --teacher synthetic-tiny-teacher --dataset-json D.json --image-root IMG \
        --proposals P.json --output STORE [--scales 1.0 1.5] [--geometry center] [--chunk-size 64] \
        [--dtype int8|float16] [--workers 2]
    torchrun --nproc-per-node 8 tools/dump_region_embeddings.py ...      # one rank per GPU (or process)

Killed and restarted with the same arguments, it skips finished shards; the final store equals an
uninterrupted run's. Unreadable images and unusable boxes are skipped, counted and listed in index.json.
Images are decoded by --workers DataLoader workers while the teacher encodes; shards (format 2, see
distill.data.region_store) are written by a background thread.
"""

from __future__ import annotations

import os
import sys

from distill.utils import DistillInputError, cli_entry, dumps_json
from distill.utils.cli import (
    ToolParser,
    check_inputs,
    checkpoint_path,
    nonneg_int,
    positive_float,
    positive_int,
    summary,
)
from distill.utils.io import check_not_input


def _dist_setup(args) -> tuple[int, int, str]:
    import torch

    from distill.utils.device import check_device

    rank = int(os.environ.get("RANK", args.rank))
    world = int(os.environ.get("WORLD_SIZE", args.world_size))
    device = args.device
    if device == "auto":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    check_device(device)
    if world > 1 and "RANK" in os.environ and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world, device


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument("--teacher", required=True, help="open_clip arch or model-zoo teacher name")
    p.add_argument(
        "--pretrained",
        default=None,
        help='open_clip tag, checkpoint path, model-zoo name, or "none" (random weights)',
    )
    p.add_argument("--dataset-json", required=True, help="COCO- or LVIS-format json of the images")
    p.add_argument("--image-root", required=True, help="folder the json's file_name entries are relative to")
    p.add_argument("--format", choices=("coco", "lvis"), default="coco", help="format of --dataset-json")
    p.add_argument(
        "--proposals",
        required=True,
        help="tools/export_proposals.py's .npz, or a json list of {image_id, bbox [x, y, w, h], score}",
    )
    p.add_argument("--output", required=True, help="store folder (resumed when it holds a partial store)")
    p.add_argument(
        "--scales",
        type=positive_float,
        nargs="+",
        default=[1.0, 1.5],
        help="crop scales around each box (ViLD: 1.0 and 1.5), embeddings averaged",
    )
    p.add_argument(
        "--geometry",
        choices=("center", "stretch"),
        default="center",
        help="center: square crop around the box; stretch: the box resized to the teacher's input",
    )
    p.add_argument(
        "--max-per-image", type=positive_int, default=300, help="best-scoring proposals kept per image"
    )
    p.add_argument(
        "--chunk-size", type=positive_int, default=64, help="images per shard (the unit of resuming)"
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="crops per teacher forward pass")
    p.add_argument(
        "--dtype",
        choices=("int8", "float16"),
        default="int8",
        help="stored embeddings: int8 with a per-row scale (about half the bytes) or float16",
    )
    p.add_argument(
        "--workers", type=nonneg_int, default=2, help="DataLoader workers decoding images (0: in process)"
    )
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (this rank's GPU when there is one)"
    )
    p.add_argument("--rank", type=nonneg_int, default=0, help="without torchrun: this process's rank")
    p.add_argument("--world-size", type=positive_int, default=1, help="without torchrun: number of processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.rank >= args.world_size:
        p.error(f"--rank {args.rank} must be below --world-size {args.world_size}")
    check_not_input(args.output, [args.dataset_json, args.proposals, args.image_root], "--output")
    check_inputs(
        ("annotation file (--dataset-json)", args.dataset_json, "file"),
        ("proposals file", args.proposals, "file"),
        ("--image-root folder", args.image_root, "dir"),
        ("teacher checkpoint", checkpoint_path(args.pretrained), "file"),
    )
    import torch

    from distill.data import load_coco_json, load_lvis_json
    from distill.teacher import create_teacher
    from distill.teacher.regions import dump_region_embeddings, load_proposals

    rank, world, device = _dist_setup(args)
    loader = load_coco_json if args.format == "coco" else load_lvis_json
    dicts, _ = loader(args.dataset_json, args.image_root)
    proposals = load_proposals(args.proposals, [d["image_id"] for d in dicts], args.max_per_image)
    teacher = create_teacher(args.teacher, args.pretrained, device=device)
    writer = dump_region_embeddings(
        teacher,
        dicts,
        proposals,
        args.output,
        args.scales,
        args.geometry,
        args.chunk_size,
        rank,
        world,
        args.batch_size,
        progress=not args.no_progress,
        dtype=args.dtype,
        num_workers=args.workers,
    )
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank == 0:
        if writer.pending(0, 1):
            print(
                f"{len(writer.pending(0, 1))} shard(s) of other ranks still missing; rerun to finish",
                file=sys.stderr,
            )
            return 1
        index = writer.finalize()
        skipped = index["skipped_images"]
        totals = {k: index[k] for k in ("num_images", "num_regions", "skipped_boxes")}
        totals["skipped_images"] = len(skipped)
        for s in skipped[:20]:
            print(f"skipped image {s['image_id']}: {s['reason']}", file=sys.stderr)
        if len(skipped) > 20:
            print(f"... and {len(skipped) - 20} more (all listed in the store's index.json)", file=sys.stderr)
        print(dumps_json(totals))
        if skipped and not index["num_images"]:
            raise DistillInputError(
                f"every image ({len(skipped)}) was skipped, e.g. {skipped[0]['reason']}: wrong --image-root?",
                args.output,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
