"""The torchvision backend behind the `Backend` protocol (distill.integrations.backend), and its
`tools/train_net.py` main."""

from __future__ import annotations

import os
import sys
from typing import Sequence

import torch

from ... import model_zoo
from ...config import check_schedule, load_config
from ...data.catalog import datasets_root, register_all
from ...evaluation import format_ov_table
from ...teacher.embeddings import ClassEmbeddings
from ...teacher.vocabulary import training_vocabulary
from ...utils.checkpoint import require_checkpoint
from ...utils.errors import DistillInputError
from ...utils.io import atomic_write_bytes, dumps_json
from ...utils.outdir import claim_training_dir, lock_output_dir
from ..inference import eval_only_config
from ..shared import building_with
from . import demo, proposals, trainer


class TorchvisionBackend:
    name = "torchvision"

    def load_config(self, config_file: str | None, opts: Sequence[str] = ()):
        return load_config(config_file, list(opts))

    def register_datasets(self, root: str | os.PathLike) -> list[str]:
        return register_all(root)

    def train(self, cfg, progress: bool = True) -> None:
        trainer.train(cfg, resume=True, progress=progress)

    def load_model(self, cfg, weights: str) -> torch.nn.Module:
        return trainer.load_trained_model(cfg, weights)

    def iter_dataset_proposals(
        self, model, dicts: list[dict], min_size: int, max_size: int, top_k: int = 300, progress: bool = True
    ):
        return proposals.iter_dataset_proposals(model, dicts, min_size, max_size, top_k, progress)

    def evaluate(self, cfg, model, dataset: str) -> dict:
        return trainer.evaluate(cfg, model, dataset)

    def load_for_inference(
        self, cfg, weights: str, vocabulary: ClassEmbeddings, novel: torch.Tensor | None = None
    ) -> torch.nn.Module:
        return demo.load_for_inference(cfg, weights, vocabulary, novel)

    def predict(self, model, cfg, record: dict) -> dict:
        return demo.predict(model, cfg, record)

    def train_net(self, args) -> int:
        train_net_main(args)
        return 0


def setup(args):
    """Config (defaults ← yaml ← overrides), datasets; rank 0 saves the resolved config to OUTPUT_DIR."""
    if args.eval_only and not args.config_file:  # the checkpoint's own config
        cfg = eval_only_config(args.opts, load_config)
    else:
        cfg = load_config(args.config_file or None, args.opts)
    if not args.eval_only:
        for w in check_schedule(cfg):
            print(f"warning: {w}", file=sys.stderr)
    register_all(datasets_root(cfg))
    if int(os.environ.get("RANK", "0")) == 0:
        if args.eval_only:
            lock_output_dir(cfg.OUTPUT_DIR)
        else:
            claim_training_dir(cfg.OUTPUT_DIR, args.resume, getattr(args, "overwrite", False))
        atomic_write_bytes(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump().encode())
    return cfg


def train_net_main(args) -> dict:
    """Train (or with --eval-only load MODEL.WEIGHTS), then evaluate on DATASETS.TEST; rank 0 prints."""
    cfg = setup(args)
    if args.eval_only:
        device = trainer.setup_distributed(cfg.MODEL.DEVICE)
        if not cfg.MODEL.WEIGHTS:
            raise DistillInputError("--eval-only needs MODEL.WEIGHTS (a checkpoint path or model-zoo name)")
        path = model_zoo.resolve_weights(cfg.MODEL.WEIGHTS)
        if not os.path.isfile(path):
            raise DistillInputError("MODEL.WEIGHTS not found", path)
        meta = require_checkpoint(path, "detector", "MODEL.WEIGHTS")
        with building_with(training_vocabulary(cfg, meta)):  # evaluation switches in the test vocabulary
            model = trainer.load_trained_model(cfg, path, device)
    else:
        model = trainer.train(cfg, resume=args.resume, progress=not args.no_progress)
    results = {}
    for name in cfg.DATASETS.TEST:
        with torch.no_grad():
            results[name] = trainer.evaluate(cfg, model, name)
        if trainer.dist_info()[0] == 0:
            print(f"\n{name}:\n{format_ov_table(results[name])}")
            print(dumps_json({"dataset": name, **results[name]}))
    return results
