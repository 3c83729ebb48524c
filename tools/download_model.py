#!/usr/bin/env python
"""Download model-zoo checkpoints into the cache (checked against their sha256), or list the zoo.

    python tools/download_model.py NAME [NAME ...]      # prints each local path
    python tools/download_model.py ViT-B-32/openai      # an open_clip teacher's weights, into open_clip's cache
    python tools/download_model.py --all                # every entry that has a file
    python tools/download_model.py --list
    ... [--manifest EXTRA.json] [--offline] [--timeout S] [--quiet]

Extra manifests (--manifest, repeatable, or $DISTILL_MODEL_ZOO_MANIFEST) add a lab's own entries.
Recipe entries have no file: --all names the command that makes each. Errors: one line, exit code 2.
"""

from __future__ import annotations

import os
import sys

from distill.model_zoo import cache_path, get_checkpoint, get_entry, list_entries
from distill.utils import DistillInputError, cli_entry
from distill.utils.cli import ToolParser, positive_float, summary


def _source(entry: dict) -> str:
    return "shipped" if "path" in entry else "download" if "url" in entry else "recipe"


def _state(name: str, entry: dict, manifests) -> str:
    if "recipe" in entry:
        return f"make it with: {entry['recipe']}"
    if "url" in entry:
        path = cache_path(name, manifests)
        return f"cached {path}" if path.is_file() else "not cached"
    return "in the package"


def print_list(manifests) -> None:
    rows = [(n, get_entry(n, manifests)) for n in list_entries(manifests)]
    for name, e in rows:
        size = f"{e['size'] / 1e6:.1f} MB" if "size" in e else "-"
        print(f"{name:36s} {e['kind']:8s} {_source(e):9s} {size:>9s}  {_state(name, e, manifests)}")


def download(names: list[str], args) -> None:
    for name in names:
        if "/" in name:  # ARCH/TAG: an open_clip pretrained teacher (fetched for offline use elsewhere)
            from distill.teacher.pretrained import fetch_pretrained

            if args.offline:
                os.environ["DISTILL_OFFLINE"] = "1"
            print(fetch_pretrained(*name.split("/", 1)))
            continue
        entry = get_entry(name, args.manifest)
        if "recipe" in entry and args.all:
            print(f"{name}: recipe entry, make it with: {entry['recipe']}", file=sys.stderr)
            continue
        path = get_checkpoint(
            name,
            manifests=args.manifest,
            offline=args.offline or None,
            timeout=args.timeout,
            progress=not args.quiet,
        )
        print(path)


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="model-zoo names (distill://NAME also accepted), or ARCH/TAG of open_clip",
    )
    p.add_argument("--all", action="store_true", help="every entry with a file")
    p.add_argument("--list", action="store_true", help="list the entries and whether they are cached")
    p.add_argument("--manifest", action="append", default=[], help="extra manifest json (repeatable)")
    p.add_argument("--offline", action="store_true", help="use only the cache ($DISTILL_OFFLINE)")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=None,
        help="seconds without data ($DISTILL_DOWNLOAD_TIMEOUT)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.list:
        print_list(args.manifest)
        return 0
    if not args.names and not args.all:
        raise DistillInputError("name a model (see --list), or give --all")
    names = list_entries(args.manifest) if args.all else [n.removeprefix("distill://") for n in args.names]
    download(names, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
