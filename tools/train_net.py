#!/usr/bin/env python
"""Train or evaluate an open-vocabulary detector (detectron2's train_net.py shape).

    python tools/train_net.py --config-file configs/synthetic/vild_r18_fpn_quick.yaml [--backend torchvision]
        [--eval-only] [--resume] [--num-gpus N] KEY VALUE ...
    torchrun --nproc-per-node 8 tools/train_net.py --config-file ...      # multi-GPU / multi-node

`--num-gpus N` without torchrun starts N local processes (gloo on CPU). The resolved config is saved to
OUTPUT_DIR/config.yaml. Datasets are looked up under DATASETS.ROOT (default $DISTILL_DATASETS or ./datasets).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from distill.integrations.backend import (
    BACKENDS,
    backend_name_for,
    check_config_early,
    check_weights_early,
    get_backend,
)
from distill.utils import DistillInputError, cli_entry
from distill.utils.cli import ToolParser, add_overrides, nonneg_int, parse_args, positive_int, summary


def default_argument_parser() -> argparse.ArgumentParser:
    p = ToolParser(description=summary(__doc__))
    p.add_argument("--config-file", default="", metavar="FILE", help="yaml config (with _BASE_ chains)")
    p.add_argument(
        "--backend",
        choices=("auto", *BACKENDS),
        default="auto",
        help="auto: the backend that trained MODEL.WEIGHTS (the checkpoint evaluated or fine-tuned), else "
        "detectron2 when it is installed (distill.integrations.backend.get_backend)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="train afresh into an OUTPUT_DIR that holds a run (its checkpoints and metrics go)",
    )
    p.add_argument(
        "--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS on DATASETS.TEST, no training"
    )
    p.add_argument(
        "--num-gpus", type=positive_int, default=1, help="local processes (GPUs, or CPU processes on gloo)"
    )
    p.add_argument("--num-machines", type=positive_int, default=1, help="machines of a multi-node run")
    p.add_argument(
        "--machine-rank", type=nonneg_int, default=0, help="this machine's index in a multi-node run"
    )
    p.add_argument(
        "--dist-url", default="auto", help="tcp://host:port of machine 0 (auto: a free local port)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_overrides(p)
    return p


def _run_weights(args) -> str | None:
    """MODEL.WEIGHTS of an --eval-only or fine-tuning run (the command line's, else the yaml's), to pick the
    backend by: a checkpoint of the other backend would not load (detectron2's loader would skip every tensor)."""
    if args.resume and not args.eval_only:
        return None  # the run's own last checkpoint is what loads
    pairs = dict(zip(args.opts[::2], args.opts[1::2]))
    if "MODEL.WEIGHTS" in pairs:
        return pairs["MODEL.WEIGHTS"]
    from distill.config import load_config

    try:
        return load_config(args.config_file or None).MODEL.WEIGHTS or None
    except DistillInputError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, args, world: int, url: str) -> None:
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    os.environ.update(
        {
            "RANK": str(args.machine_rank * args.num_gpus + local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": host,
            "MASTER_PORT": port,
        }
    )
    code = run(args)
    if code:
        raise SystemExit(code)


@cli_entry
def check_early(args) -> int:
    """Errors that need no model, before torch is imported: the config (file, keys, values), the MODEL.WEIGHTS
    evaluated or fine-tuned."""
    check_config_early(args.config_file, args.opts, args.backend)
    weights = _run_weights(args)
    if weights:
        path = check_weights_early(weights, "MODEL.WEIGHTS")
        if args.eval_only and "://" not in path:
            from distill.utils.checkpoint import require_checkpoint

            # a segmenter or teacher file is said before a backend (and its import warnings) loads
            require_checkpoint(path, "detector", "MODEL.WEIGHTS")
    return 0


@cli_entry
def run(args) -> int:
    """setup → train (or --eval-only) → evaluate, in the backend's package module."""
    return get_backend(backend_name_for(args.backend, _run_weights(args))).train_net(args)


def main(argv=None) -> int:
    parser = default_argument_parser()
    args = parse_args(parser, argv)
    if args.machine_rank >= args.num_machines:
        parser.error(f"--machine-rank {args.machine_rank} must be below --num-machines {args.num_machines}")
    if check_early(args):
        return 2
    world = args.num_gpus * args.num_machines
    if world > 1 and "WORLD_SIZE" not in os.environ:
        import torch.multiprocessing as mp

        url = args.dist_url if args.dist_url != "auto" else f"tcp://127.0.0.1:{_free_port()}"
        mp.start_processes(_worker, args=(args, world, url), nprocs=args.num_gpus, start_method="spawn")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
