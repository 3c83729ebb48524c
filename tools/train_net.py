#!/usr/bin/env python
"""Train or evaluate an open-vocabulary detector (detectron2's train_net.py shape).

    python tools/train_net.py --config-file configs/synthetic/vild_r18_fpn_quick.yaml [--backend torchvision]
        [--eval-only] [--resume] [--num-gpus N] KEY VALUE ...
    torchrun --nproc-per-node 8 tools/train_net.py --config-file ...      # multi-GPU / multi-node

`--num-gpus N` without torchrun starts N local processes (gloo on CPU). The resolved config is saved to
OUTPUT_DIR/config.yaml. Datasets are looked up under MODEL.DISTILL.DATASETS_ROOT (default $DISTILL_DATASETS or ./datasets).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys

import _common  # noqa: F401  (puts the checkout on sys.path)

from distill.utils import DistillInputError, atomic_write_bytes, cli_entry, dumps_json

BACKENDS = ("auto", "detectron2", "torchvision")


def default_argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default="", metavar="FILE")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR")
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--num-gpus", type=int, default=1, help="local processes (GPUs, or CPU processes on gloo)")
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0)
    p.add_argument("--dist-url", default="auto", help="tcp://host:port of machine 0 (auto: a free local port)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def pick_backend(name: str) -> str:
    if name != "auto":
        return name
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return "torchvision"
    from distill.integrations import detectron2 as d2_integration

    return "detectron2" if hasattr(d2_integration, "train_main") else "torchvision"


def setup(args):
    from distill.config import load_config
    from distill.data.catalog import datasets_root, register_all

    cfg = load_config(args.config_file or None, args.opts)
    register_all(datasets_root(cfg))
    if int(os.environ.get("RANK", "0")) == 0:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        atomic_write_bytes(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump().encode())
    return cfg


def main_torchvision(args) -> dict:
    import torch

    from distill.evaluation import format_ov_table
    from distill.integrations.torchvision.trainer import (
        _resolve_weights,
        dist_info,
        evaluate,
        load_trained_model,
        setup_distributed,
        train,
    )

    cfg = setup(args)
    if args.eval_only:
        device = setup_distributed(cfg.MODEL.DEVICE)
        if not cfg.MODEL.WEIGHTS:
            raise DistillInputError("--eval-only needs MODEL.WEIGHTS (a checkpoint path or model-zoo name)")
        path = _resolve_weights(cfg.MODEL.WEIGHTS)
        if not os.path.isfile(path):
            raise DistillInputError("MODEL.WEIGHTS not found", path)
        model = load_trained_model(cfg, path, device)
    else:
        model = train(cfg, resume=args.resume, progress=not args.no_progress)
    results = {}
    for name in cfg.DATASETS.TEST:
        with torch.no_grad():
            results[name] = evaluate(cfg, model, name)
        if dist_info()[0] == 0:
            print(f"\n{name}:\n{format_ov_table(results[name])}")
            print(dumps_json({"dataset": name, **results[name]}))
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, args, world: int, url: str) -> None:
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    os.environ.update({"RANK": str(args.machine_rank * args.num_gpus + local_rank), "LOCAL_RANK": str(local_rank),
                       "WORLD_SIZE": str(world), "MASTER_ADDR": host, "MASTER_PORT": port})
    code = run(args)
    if code:
        raise SystemExit(code)


@cli_entry
def run(args) -> int:
    backend = pick_backend(args.backend)
    if backend == "detectron2":
        from distill.integrations import detectron2 as d2_integration

        if not hasattr(d2_integration, "train_main"):
            raise DistillInputError("the detectron2 backend is not available in this version; use "
                                    "--backend torchvision")
        return d2_integration.train_main(args)
    main_torchvision(args)
    return 0


def main(argv=None) -> int:
    args = default_argument_parser().parse_args(argv)
    world = args.num_gpus * args.num_machines
    if world > 1 and "WORLD_SIZE" not in os.environ:
        import torch.multiprocessing as mp

        url = args.dist_url if args.dist_url != "auto" else f"tcp://127.0.0.1:{_free_port()}"
        mp.start_processes(_worker, args=(args, world, url), nprocs=args.num_gpus, start_method="spawn")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
