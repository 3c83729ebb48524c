"""Training of the torchvision-backend detector on the engine (`engine.Trainer` and its hooks).

SGD / AdamW, warmup + multistep or cosine schedules (fvcore param schedulers), AMP on GPU, gradient
clipping, atomic periodic checkpoints that hold the data stream's position and the RNG states (a run resumed
with `resume=True` after a kill is bit-identical to an uninterrupted one), periodic evaluation, metrics as JSON
lines (and TensorBoard when installed), a log file, a progress bar on a terminal (periodic lines elsewhere), and
DDP under torchrun (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from ...methods import method_class, target_source
from ...teacher.embeddings import ClassEmbeddings
from ...utils.checkpoint import META_KEY, METHOD_PREFIX, inference_meta
from ...utils.errors import DistillInputError
from ..shared import load_train_vocabulary
from .builders import build_detector
from .engine import (
    AtomicCheckpointer,
    Trainer,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
    dist_info,
    lr_at,
    optimizer_param_groups,
    remove_partial_files,
    setup_distributed,
    unwrap,
)
from .engine.hooks import standard_hooks
from .evaluation import evaluate
from .train_data import StreamLoader, load_train_set, mapper_cfg, train_repeat_factors

__all__ = [
    "build_lr_scheduler",
    "build_model_for",
    "build_optimizer",
    "clip_gradients",
    "dist_info",
    "evaluate",
    "load_train_set",
    "load_trained_model",
    "lr_at",
    "mapper_cfg",
    "optimizer_param_groups",
    "setup_distributed",
    "train",
    "unwrap",
]


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model_for(cfg, device: str) -> tuple[torch.nn.Module, ClassEmbeddings]:
    vocab = load_train_vocabulary(cfg)
    return build_detector(cfg, vocab).to(device), vocab


def load_trained_model(cfg, weights: str, device: str = "cpu") -> torch.nn.Module:
    """The model of `cfg` with a checkpoint's weights (strict: another architecture is one clear error)."""
    model, _ = build_model_for(cfg, device)
    AtomicCheckpointer(model, save_to_disk=False).load(str(weights), checkpointables=[])
    return model


def train(cfg, resume: bool = False, progress: bool = True) -> torch.nn.Module:
    """Train for SOLVER.MAX_ITER iterations (from the last checkpoint when `resume`); returns the model."""
    device = setup_distributed(cfg.MODEL.DEVICE)
    rank, world = dist_info()
    seed = cfg.SEED if cfg.SEED >= 0 else 0
    _seed(seed + rank)
    model, vocab = build_model_for(cfg, device)
    dicts = load_train_set(cfg, vocab)
    method_class(cfg).check_training(cfg, [x["image_id"] for x in dicts], vocab)  # fail early, clearly
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    if rank == 0:
        remove_partial_files(cfg.OUTPUT_DIR)
    ckpt = AtomicCheckpointer(
        model, cfg.OUTPUT_DIR, save_to_disk=rank == 0, optimizer=optimizer, scheduler=scheduler
    )
    ckpt.meta = {META_KEY: inference_meta("torchvision", cfg, vocab)}  # inference needs no training files
    per_rank = max(1, cfg.SOLVER.IMS_PER_BATCH // world)
    data = StreamLoader(
        dicts,
        mapper_cfg(cfg, True),
        target_source(cfg, True),
        seed,
        rank,
        world,
        per_rank,
        cfg.DATALOADER.NUM_WORKERS,
        train_repeat_factors(cfg, dicts),
    )
    del dicts  # the loader holds them serialized
    use_amp = cfg.SOLVER.AMP.ENABLED and device.startswith("cuda")
    clip = (lambda m: clip_gradients(cfg, m)) if cfg.SOLVER.CLIP_GRADIENTS.ENABLED else None
    trainer = Trainer(model, data, optimizer, scheduler, max_iter=cfg.SOLVER.MAX_ITER, clip=clip, amp=use_amp)
    if not trainer.resume(ckpt, resume):
        _load_weights(ckpt, cfg)
    if world > 1:
        # a method's own heads may sit out a step (e.g. a batch without distillation boxes)
        trainer.model = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=any(True for _ in model.roi_heads.box_predictor.method.parameters())
        )
    evals = lambda: {name: evaluate(cfg, trainer.model, name) for name in cfg.DATASETS.TEST}  # noqa: E731
    trainer.register_hooks(standard_hooks(ckpt, cfg, cfg.OUTPUT_DIR, progress, eval_function=evals))
    trainer.model.train()
    trainer.train()
    return trainer.model


def _load_weights(ckpt: AtomicCheckpointer, cfg) -> None:
    """A fresh run starts from MODEL.WEIGHTS when set; the method's own heads and state may be missing from it
    (a checkpoint of another method, e.g. the proposal network's ViLD-text): they start fresh."""
    if cfg.MODEL.WEIGHTS:
        path = _resolve_weights(cfg.MODEL.WEIGHTS)
        if not os.path.isfile(path):
            raise DistillInputError("MODEL.WEIGHTS not found", path)
        ckpt.fresh_prefixes = (METHOD_PREFIX,)
        try:
            ckpt.load(path, checkpointables=[])
        finally:
            ckpt.fresh_prefixes = ()


def _resolve_weights(spec: str) -> str:
    """Model-zoo names (distill://name) or paths → a local path."""
    from ... import model_zoo

    resolve = getattr(model_zoo, "resolve_weights", None)
    return resolve(spec) if resolve is not None else spec
