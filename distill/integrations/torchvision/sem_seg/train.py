"""Training of the segmenter on the engine (`engine.Trainer`): SOLVER.* (optimizer, warmup + cosine /
multistep, clipping, AMP on GPU), random horizontal flips (labels and teacher targets flipped alike), DDP
when a process group is up (each rank takes its share of every batch), and, with an output folder, periodic
checkpoints holding the data position and RNG states (resume after a kill), metrics.json and log.txt."""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ....utils.errors import DistillInputError
from ..engine import (
    AtomicCheckpointer,
    Trainer,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
    dist_info,
    remove_partial_files,
)
from ..engine.hooks import ProgressBar, standard_hooks
from ..meta_arch import normalize_and_pad
from .model import OpenVocabSegmenter

BODY_CACHE_MAX_BYTES = 2 << 30


class SegmenterData:
    """Endless seeded shuffles of the samples in batches of `batch_size`, each image flipped with p = 0.5, as
    model inputs {"images", "labels", "pixel_targets", "body_features"}; this rank's share of each batch.
    State: epoch, batch within it, the flip generator."""

    def __init__(
        self,
        samples: Sequence[dict],
        targets: dict | None,
        batch_size: int,
        seed: int,
        ignore_value: int,
        cache: list | None = None,
        rank: int = 0,
        world: int = 1,
    ):
        self.samples, self.targets, self.cache = samples, targets, cache
        self.bs, self.seed, self.ignore_value, self.rank, self.world = (
            batch_size,
            seed,
            ignore_value,
            rank,
            world,
        )
        n = len(samples)
        self.starts = list(range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size))
        self.epoch, self.pos = 0, 0
        self.rng = np.random.default_rng(seed)

    def start(self) -> None:
        pass

    def __iter__(self):
        return self

    def _indices(self) -> list[int]:
        if self.pos == len(self.starts):
            self.epoch, self.pos = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.samples))
        i = self.starts[self.pos]
        self.pos += 1
        return order[i : i + self.bs].tolist()

    def __next__(self) -> dict:
        idx = self._indices()
        flips = self.rng.random(len(idx)) < 0.5
        idx, flips = idx[self.rank :: self.world], flips[self.rank :: self.world]
        s = self.samples
        imgs = [s[i]["image"].flip(-1) if f else s[i]["image"] for i, f in zip(idx, flips)]
        labs = [s[i]["labels"].flip(-1) if f else s[i]["labels"] for i, f in zip(idx, flips)]
        tg = None
        if self.targets is not None:
            tg = [self.targets[s[i]["image_id"]] for i in idx]
            tg = [t.flip(-1) if f else t for t, f in zip(tg, flips)]
        body = None
        if self.cache is not None:
            picked = [self.cache[i][int(f)] for i, f in zip(idx, flips)]
            body = {k: torch.stack([p[k] for p in picked]) for k in picked[0]}
        return {
            "images": imgs,
            "labels": _pad_labels(labs, self.ignore_value),
            "pixel_targets": tg,
            "body_features": body,
        }

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self.rng.bit_generator.state = state["rng"]

    def restart_at(self, iteration: int) -> None:
        self.seed += iteration
        self.rng = np.random.default_rng(self.seed)


def _forward(model, batch: dict) -> dict:
    return model(
        batch["images"], batch["labels"], batch["pixel_targets"], body_features=batch["body_features"]
    )


def train_segmenter(
    cfg,
    model: OpenVocabSegmenter,
    samples: Sequence[dict],
    targets: dict | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    progress: bool = True,
    cache_body: bool = True,
    output_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> dict:
    """Train `model` on `samples` ({"image_id", "image", "labels"}) with `targets` {image_id: (D, h, w)} for the
    pixel distillation. A frozen ResNet runs once per image and flip, not per step (`body_feature_cache`;
    `cache_body=False` runs it every step). `output_dir`: checkpoints (SOLVER.CHECKPOINT_PERIOD), metrics.json,
    log.txt; `resume` continues from its last checkpoint. Returns {"seconds" (the caching included),
    "time_per_iter", "last_losses"}."""
    max_iter = int(max_iter or cfg.SOLVER.MAX_ITER)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = max_iter
    rank, world = dist_info()
    torch.manual_seed(seed)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    if model.predictor.pixel_loss_weight > 0 and targets is None:
        raise DistillInputError("pixel distillation needs dense teacher targets")
    t0 = time.perf_counter()
    cache = body_feature_cache(model, samples) if cache_body else None
    data = SegmenterData(
        samples,
        targets if model.predictor.pixel_loss_weight > 0 else None,
        min(cfg.SOLVER.IMS_PER_BATCH, len(samples)),
        seed,
        model.predictor.ignore_value,
        cache,
        rank,
        world,
    )
    clip = (lambda m: clip_gradients(cfg, m)) if cfg.SOLVER.CLIP_GRADIENTS.ENABLED else None
    amp = bool(cfg.SOLVER.AMP.ENABLED and model.device.type == "cuda")
    trainer = Trainer(
        model, data, optimizer, scheduler, max_iter=max_iter, forward=_forward, clip=clip, amp=amp
    )
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        if rank == 0:
            remove_partial_files(output_dir)
        ckpt = AtomicCheckpointer(
            model, str(output_dir), save_to_disk=rank == 0, optimizer=optimizer, scheduler=scheduler
        )
        trainer.resume(ckpt, resume)
        trainer.register_hooks(
            standard_hooks(ckpt, cfg, str(output_dir), progress, "semseg", final_name=None)
        )
    else:
        trainer.register_hooks([ProgressBar("semseg", progress, cfg.SOLVER.LOG_PERIOD)])
    if world > 1:
        trainer.model = torch.nn.parallel.DistributedDataParallel(model)
    trainer.model.train()
    trainer.train()
    seconds = time.perf_counter() - t0
    last = {k: round(v.item(), 4) for k, v in trainer.losses.items()}
    return {"seconds": seconds, "time_per_iter": seconds / max(max_iter, 1), "last_losses": last}


@torch.no_grad()
def body_feature_cache(
    model: OpenVocabSegmenter,
    samples: Sequence[dict],
    batch_size: int = 16,
    max_bytes: int = BODY_CACHE_MAX_BYTES,
) -> list | None:
    """The frozen ResNet's outputs for every sample as is and flipped, so training steps run only the FPN and the
    branch: [(as-is, flipped)] per sample, each {"0".."3": (C_l, H / s_l, W / s_l)}.

    None (each step runs the ResNet) when any of its weights trains, it has BatchNorm (running statistics move
    in training), the images differ in size (a batch pads them), or the cache would exceed `max_bytes`.
    """
    body = getattr(model.backbone, "body", None)
    if body is None:  # not a ResNet-FPN (the teacher's frozen tower: its own forward runs without gradients)
        return None
    if any(p.requires_grad for p in body.parameters()) or any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in body.modules()
    ):
        return None
    if not samples or len({tuple(s["image"].shape) for s in samples}) != 1:
        return None
    pad = model.size_divisible
    h, w = (-(-n // pad) * pad for n in samples[0]["image"].shape[1:])
    probe = body(torch.zeros(1, 3, h, w, device=model.device))
    if 2 * len(samples) * sum(v.numel() * v.element_size() for v in probe.values()) > max_bytes:
        return None
    out: list = [[None, None] for _ in samples]
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        for flip in (0, 1):
            imgs = [s["image"].flip(-1) if flip else s["image"] for s in chunk]
            x, _ = normalize_and_pad(imgs, model.pixel_mean, model.pixel_std, pad)
            feats = body(x)
            for k in range(len(chunk)):
                out[i + k][flip] = {name: f[k].clone() for name, f in feats.items()}
    return out


def _pad_labels(labels: Sequence[torch.Tensor], ignore_value: int) -> torch.Tensor:
    h = max(lab.shape[0] for lab in labels)
    w = max(lab.shape[1] for lab in labels)
    out = torch.full((len(labels), h, w), ignore_value, dtype=torch.long)
    for o, lab in zip(out, labels):
        o[: lab.shape[0], : lab.shape[1]] = lab
    return out
