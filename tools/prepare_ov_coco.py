#!/usr/bin/env python
"""Write the OV-COCO files (48 base / 17 novel) from the official COCO 2017 annotations.

    python tools/prepare_ov_coco.py [--datasets-root $DISTILL_DATASETS]

reads   coco/annotations/instances_{train,val}2017.json
writes  coco/annotations/ov_coco/instances_train2017_base.json   (base annotations only)
        coco/annotations/ov_coco/instances_val2017_ov.json       (all 65 categories)
"""

from __future__ import annotations

import sys

from distill.data.catalog import datasets_root_arg
from distill.data.prepare import make_ov_coco
from distill.utils import atomic_write_json, cli_entry, read_json
from distill.utils.cli import ToolParser, summary


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument("--datasets-root", help="default: $DISTILL_DATASETS, else ./datasets")
    args = p.parse_args(argv)
    ann = datasets_root_arg(args.datasets_root) / "coco" / "annotations"
    jobs = [
        ("instances_train2017.json", "instances_train2017_base.json", True),
        ("instances_val2017.json", "instances_val2017_ov.json", False),
    ]
    for src, dst, train in jobs:
        data = read_json(ann / src, what="COCO annotation file")
        out = make_ov_coco(data, train=train, path=str(ann / src))
        atomic_write_json(ann / "ov_coco" / dst, out)
        print(f"{ann / 'ov_coco' / dst}: {len(out['images'])} images, {len(out['annotations'])} annotations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
