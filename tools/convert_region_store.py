#!/usr/bin/env python
"""Convert a format-1 region-embedding store (torch.save shards) to format 2 (memory-mapped safetensors).

    python tools/convert_region_store.py OLD_STORE NEW_STORE [--dtype int8|float16]

The new store has the same chunks, image ids, boxes and skipped items; embeddings are stored as int8 with a
per-row scale (default) or float16. Killed and restarted with the same arguments, it skips the shards
already converted. The old store is only read.
"""

from __future__ import annotations

import os
import sys

from distill.utils import DistillInputError, cli_entry, dumps_json
from distill.utils.cli import ToolParser, summary


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument("source", help="a finished format-1 store")
    p.add_argument("output", help="folder of the format-2 store (created, or resumed)")
    p.add_argument(
        "--dtype",
        choices=("int8", "float16"),
        default="int8",
        help="stored embeddings: int8 with a per-row scale (about half the bytes) or float16",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from distill.data.region_store_convert import convert_v1

    if os.path.abspath(args.source) == os.path.abspath(args.output):
        raise DistillInputError("output must be another folder than the source store", args.output)
    index = convert_v1(args.source, args.output, args.dtype, progress=not args.no_progress)
    print(dumps_json({k: index[k] for k in ("num_images", "num_regions", "skipped_boxes")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
