#!/usr/bin/env python
"""Write MODEL_ZOO.md from the built-in model-zoo manifest, or check that it is up to date.

    python tools/make_model_zoo_md.py [--check] [--output MODEL_ZOO.md]

Only distill/model_zoo/manifest.json counts: extra manifests ($DISTILL_MODEL_ZOO_MANIFEST) are ignored.
With --check nothing is written; exit code 1 when the file differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from distill.model_zoo import MANIFEST
from distill.model_zoo.manifest import load_manifest
from distill.model_zoo.markdown import render
from distill.utils import atomic_write_bytes, cli_entry
from distill.utils.cli import ToolParser, summary


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument(
        "--output",
        default=str(Path(__file__).resolve().parents[1] / "MODEL_ZOO.md"),
        help="markdown file to write",
    )
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    args = p.parse_args(argv)
    text = render(load_manifest(MANIFEST))
    out = Path(args.output)
    if args.check:
        if not out.is_file() or out.read_text(encoding="utf-8") != text:
            print(f"{out} is out of date: run python tools/make_model_zoo_md.py", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    atomic_write_bytes(out, text.encode("utf-8"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
