#!/usr/bin/env python
"""Write the OV-LVIS files (novel = rare, base = common + frequent) from the official LVIS v1 annotations.

    python tools/prepare_ov_lvis.py [--datasets-root $DISTILL_DATASETS]

reads   lvis/lvis_v1_{train,val}.json
writes  lvis/ov_lvis/lvis_v1_train_norare.json   (rare annotations dropped, images kept)
        lvis/ov_lvis/lvis_v1_val_ov.json         (all annotations; categories carry their split)
"""

from __future__ import annotations

import sys

from distill.data.catalog import datasets_root_arg
from distill.data.prepare import make_ov_lvis
from distill.utils import atomic_write_json, cli_entry, read_json
from distill.utils.cli import ToolParser, summary


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument("--datasets-root", help="default: $DISTILL_DATASETS, else ./datasets")
    args = p.parse_args(argv)
    root = datasets_root_arg(args.datasets_root) / "lvis"
    jobs = [
        ("lvis_v1_train.json", "lvis_v1_train_norare.json", True),
        ("lvis_v1_val.json", "lvis_v1_val_ov.json", False),
    ]
    for src, dst, train in jobs:
        data = read_json(root / src, what="LVIS annotation file")
        out = make_ov_lvis(data, train=train, path=str(root / src))
        atomic_write_json(root / "ov_lvis" / dst, out)
        print(f"{root / 'ov_lvis' / dst}: {len(out['images'])} images, {len(out['annotations'])} annotations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
