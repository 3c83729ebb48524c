"""Training and evaluation of the torchvision-backend ViLD detector.

SGD / AdamW, warmup + multistep or cosine schedules (fvcore param schedulers), AMP on GPU, gradient
clipping, atomic periodic checkpoints (fvcore Checkpointer) resumable with `resume=True`, periodic
evaluation, metrics as JSON lines (and TensorBoard when installed), a progress bar with ETA, and DDP under
torchrun (gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import io
import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from fvcore.common.checkpoint import Checkpointer
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
)

from ...data.catalog import get_dataset
from ...data.datasets import filter_empty, remap_to_vocabulary
from ...data.region_store import RegionEmbeddingStore
from ...teacher.embeddings import ClassEmbeddings
from ...utils.errors import DistillInputError, check_checkpoint_fits
from ...utils.io import atomic_write_bytes
from .builders import build_vild_model
from .evaluation import OVEvaluator
from .mapper import DatasetMapper, MapperConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device: str) -> str:
    """Join the process group torchrun describes (gloo on CPU); returns this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------- checkpoints
class AtomicCheckpointer(Checkpointer):
    """fvcore's Checkpointer, but a checkpoint and the `last_checkpoint` tag are written atomically."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **{k: v.state_dict() for k, v in self.checkpointables.items()},
                **kwargs}
        buf = io.BytesIO()
        torch.save(data, buf)
        atomic_write_bytes(os.path.join(self.save_dir, f"{name}.pth"), buf.getvalue())
        self.tag_last_checkpoint(f"{name}.pth")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename.encode())

    def _load_model(self, checkpoint):
        """Strict: a checkpoint of another architecture is one clear error, not a half-loaded model."""
        incompatible = super()._load_model(checkpoint)
        check_checkpoint_fits(incompatible)
        return incompatible


# ---------------------------------------------------------------- optimisation
_NORM_TYPES = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm,
               torch.nn.LocalResponseNorm)


def optimizer_param_groups(cfg, model: torch.nn.Module) -> list[dict]:
    """detectron2's weight-decay rules (get_default_optimizer_params): biases decay with SOLVER.WEIGHT_DECAY_BIAS
    when it is set, other normalisation parameters with SOLVER.WEIGHT_DECAY_NORM, the rest with WEIGHT_DECAY;
    the background embedding never decays (it is normalised in use: decay only shrinks it)."""
    s = cfg.SOLVER
    groups: dict[float, list] = {}
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if "bg_embedding" in name:
                wd = 0.0
            elif name == "bias" and s.WEIGHT_DECAY_BIAS is not None:
                wd = s.WEIGHT_DECAY_BIAS
            elif isinstance(module, _NORM_TYPES):
                wd = s.WEIGHT_DECAY_NORM
            else:
                wd = s.WEIGHT_DECAY
            groups.setdefault(float(wd), []).append(p)
    return [{"params": ps, "weight_decay": wd} for wd, ps in groups.items()]


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = optimizer_param_groups(cfg, model)
    name = cfg.MODEL.DISTILL.OPTIMIZER
    if name == "SGD":
        return torch.optim.SGD(groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                               nesterov=cfg.SOLVER.NESTEROV)
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR)
    raise DistillInputError(f"MODEL.DISTILL.OPTIMIZER must be SGD or AdamW, got {name!r}")


def clip_gradients(cfg, model: torch.nn.Module) -> None:
    """SOLVER.CLIP_GRADIENTS as detectron2 reads it: "value" clips each element, "norm" the norm of each
    parameter on its own, "full_model" the norm of all gradients together."""
    c = cfg.SOLVER.CLIP_GRADIENTS
    params = [p for p in model.parameters() if p.grad is not None]
    if c.CLIP_TYPE == "value":
        torch.nn.utils.clip_grad_value_(params, c.CLIP_VALUE)
    elif c.CLIP_TYPE == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, c.CLIP_VALUE, c.NORM_TYPE)
    elif c.CLIP_TYPE == "full_model":
        torch.nn.utils.clip_grad_norm_(params, c.CLIP_VALUE, c.NORM_TYPE)
    else:
        raise DistillInputError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be value, norm or full_model, "
                                f"got {c.CLIP_TYPE!r}")


def build_lr_scheduler(cfg, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    s, max_iter = cfg.SOLVER, max(1, cfg.SOLVER.MAX_ITER)
    if s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        steps = [x for x in s.STEPS if x < max_iter]
        sched = MultiStepParamScheduler([s.GAMMA ** k for k in range(len(steps) + 1)], milestones=steps,
                                        num_updates=max_iter)
    elif s.LR_SCHEDULER_NAME == "WarmupCosineLR":
        sched = CosineParamScheduler(1.0, 0.0)
    else:
        raise DistillInputError("SOLVER.LR_SCHEDULER_NAME must be WarmupMultiStepLR or WarmupCosineLR")
    sched = _with_warmup(sched, s.WARMUP_FACTOR, min(s.WARMUP_ITERS / max_iter, 1.0))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: sched(min(it, max_iter - 1) / max_iter))


def _with_warmup(sched, factor: float, length: float):
    """Linear warmup from factor × sched(0) to sched(length), then `sched` (detectron2's warmup)."""
    if length <= 0:
        return sched
    warm = LinearParamScheduler(factor * sched(0.0), sched(length))
    return CompositeParamScheduler([warm, sched], lengths=[length, 1 - length],
                                   interval_scaling=["rescaled", "fixed"])


# ---------------------------------------------------------------- data
def _mapper_cfg(cfg, is_train: bool) -> MapperConfig:
    i = cfg.INPUT
    return MapperConfig(min_sizes=tuple(i.MIN_SIZE_TRAIN) if is_train else (i.MIN_SIZE_TEST,),
                        max_size=i.MAX_SIZE_TRAIN if is_train else i.MAX_SIZE_TEST, is_train=is_train,
                        flip_prob=0.5 if (is_train and i.RANDOM_FLIP == "horizontal") else 0.0,
                        mask_on=cfg.MODEL.MASK_ON, num_distill=cfg.MODEL.DISTILL.NUM_DISTILL_PROPOSALS)


class _TrainStream(torch.utils.data.IterableDataset):
    """Endless, seeded shuffles of this rank's share of the training dicts, mapped (one worker per slice)."""

    def __init__(self, dicts, mapper_cfg, store_path, seed, rank, world):
        self.dicts, self.mapper_cfg, self.store_path = dicts, mapper_cfg, store_path
        self.seed, self.rank, self.world = seed, rank, world

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        store = RegionEmbeddingStore(self.store_path) if self.store_path else None
        mapper = DatasetMapper(self.mapper_cfg, store, seed=self.seed * 1000 + self.rank * 100 + wid)
        epoch = 0
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.dicts))
            for k in order[self.rank::self.world][wid::nw]:
                yield mapper(self.dicts[k])
            epoch += 1


def load_train_set(cfg, vocab: ClassEmbeddings) -> list[dict]:
    dicts = []
    for name in cfg.DATASETS.TRAIN:
        ds, meta = get_dataset(name)
        dicts += remap_to_vocabulary(ds, meta, vocab.class_names)
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dicts = filter_empty(dicts)
    if not dicts:
        raise DistillInputError(f"no training images with annotations in {list(cfg.DATASETS.TRAIN)}")
    return dicts


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(cfg, model: torch.nn.Module, dataset_name: str, output_dir: str | None = None) -> dict:
    """Open-vocabulary evaluation on one dataset with the test vocabulary; flat metrics with box_ / mask_ keys."""
    rank, world = dist_info()
    dicts, meta = get_dataset(dataset_name)
    net = unwrap(model)
    heads = net.roi_heads
    vocab = ClassEmbeddings.load(cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS, expected_dim=heads.classifier.embed_dim,
                                 expected_names=meta.thing_classes)
    novel = torch.zeros(len(meta.thing_classes), dtype=torch.bool)
    novel[meta.contiguous_ids("novel")] = True
    saved = (heads.classifier.class_embeddings, heads.classifier.class_names, heads.novel_mask)
    heads.set_vocabulary(vocab, novel)
    was_training = net.training
    net.eval()
    mapper = DatasetMapper(_mapper_cfg(cfg, is_train=False))
    evaluator = OVEvaluator(cfg, dataset_name, Path(output_dir or cfg.OUTPUT_DIR) / "inference" / dataset_name)
    try:
        for d in dicts[rank::world]:
            evaluator.process([d], [net([mapper(d)])[0]])
    finally:
        heads.classifier.class_embeddings, heads.classifier.class_names, heads.novel_mask = saved
        net.train(was_training)
    return evaluator.evaluate()


# ---------------------------------------------------------------- training
def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _tensorboard(output_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    return SummaryWriter(os.path.join(output_dir, "tensorboard"))


def build_model_for(cfg, device: str) -> tuple[torch.nn.Module, ClassEmbeddings]:
    d = cfg.MODEL.DISTILL
    if not d.TRAIN_CLASS_EMBEDDINGS:
        raise DistillInputError("MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS is not set (tools/dump_text_embeddings.py)")
    vocab = ClassEmbeddings.load(d.TRAIN_CLASS_EMBEDDINGS)
    return build_vild_model(cfg, vocab).to(device), vocab


def load_trained_model(cfg, weights: str, device: str = "cpu") -> torch.nn.Module:
    """The model of `cfg` with a checkpoint's weights (strict: another architecture is one clear error)."""
    model, _ = build_model_for(cfg, device)
    AtomicCheckpointer(model, save_to_disk=False).load(str(weights), checkpointables=[])
    return model


def train(cfg, resume: bool = False, progress: bool = True) -> torch.nn.Module:
    """Train for SOLVER.MAX_ITER iterations (from the last checkpoint when `resume`); returns the model."""
    from tqdm import tqdm

    device = setup_distributed(cfg.MODEL.DEVICE)
    rank, world = dist_info()
    seed = cfg.SEED if cfg.SEED >= 0 else 0
    _seed(seed + rank)
    model, vocab = build_model_for(cfg, device)
    dicts = load_train_set(cfg, vocab)
    if cfg.MODEL.DISTILL.REGION_STORE and cfg.MODEL.DISTILL.IMAGE_LOSS_WEIGHT > 0:
        RegionEmbeddingStore(cfg.MODEL.DISTILL.REGION_STORE, expected_dim=vocab.dim)  # fail early, clearly
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    ckpt = AtomicCheckpointer(model, cfg.OUTPUT_DIR, save_to_disk=rank == 0, optimizer=optimizer,
                              scheduler=scheduler)
    start = _load_start(ckpt, cfg, resume)
    if world > 1:
        # only ViLD-ensemble's separate image head can sit out a step (a batch without distillation boxes)
        model = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=bool(cfg.MODEL.DISTILL.ENSEMBLE.ENABLED))
    per_rank = max(1, cfg.SOLVER.IMS_PER_BATCH // world)
    stream = _TrainStream(dicts, _mapper_cfg(cfg, True), cfg.MODEL.DISTILL.REGION_STORE
                          if cfg.MODEL.DISTILL.IMAGE_LOSS_WEIGHT > 0 else "", seed + start, rank, world)
    loader = iter(torch.utils.data.DataLoader(stream, batch_size=per_rank, collate_fn=list,
                                              num_workers=cfg.DATALOADER.NUM_WORKERS,
                                              persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0))
    use_amp = cfg.SOLVER.AMP.ENABLED and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    writer = _tensorboard(cfg.OUTPUT_DIR) if rank == 0 else None
    metrics_file = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
    model.train()
    bar = tqdm(range(start, cfg.SOLVER.MAX_ITER), initial=start, total=cfg.SOLVER.MAX_ITER, desc="train",
               disable=not progress or rank != 0, dynamic_ncols=True)
    t_last = time.perf_counter()
    for it in bar:
        batch = next(loader)
        with torch.autocast("cuda", enabled=use_amp):
            losses = model(batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {total.item()} at iteration {it}: "
                                     f"{ {k: round(v.item(), 4) for k, v in losses.items()} }")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
            scaler.unscale_(optimizer)
            clip_gradients(cfg, model)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if rank == 0 and ((it + 1) % 20 == 0 or it + 1 == cfg.SOLVER.MAX_ITER):
            now = time.perf_counter()
            rec = {"iteration": it + 1, "lr": optimizer.param_groups[0]["lr"], "total_loss": total.item(),
                   "time_per_iter": (now - t_last) / 20, **{k: v.item() for k, v in losses.items()}}
            t_last = now
            with open(metrics_file, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if writer is not None:
                for k, v in rec.items():
                    writer.add_scalar(k, v, it + 1)
            bar.set_postfix(loss=f"{rec['total_loss']:.3f}", lr=f"{rec['lr']:.2g}")
        last = it + 1 == cfg.SOLVER.MAX_ITER
        if (it + 1) % cfg.SOLVER.CHECKPOINT_PERIOD == 0 or last:
            ckpt.save("model_final" if last else f"model_{it:07d}", iteration=it)
        if cfg.TEST.EVAL_PERIOD and (it + 1) % cfg.TEST.EVAL_PERIOD == 0 and not last:
            for name in cfg.DATASETS.TEST:
                m = evaluate(cfg, model, name)
                if rank == 0:
                    with open(metrics_file, "a") as f:
                        f.write(json.dumps({"iteration": it + 1, "eval": name, **m}) + "\n")
    if writer is not None:
        writer.close()
    return model


def _load_start(ckpt: AtomicCheckpointer, cfg, resume: bool) -> int:
    """Iteration to start from: after the last checkpoint when resuming, else 0 (MODEL.WEIGHTS loaded)."""
    if resume and ckpt.has_checkpoint():
        extra = ckpt.resume_or_load("", resume=True)
        return int(extra.get("iteration", -1)) + 1
    if cfg.MODEL.WEIGHTS:
        path = _resolve_weights(cfg.MODEL.WEIGHTS)
        if not os.path.isfile(path):
            raise DistillInputError("MODEL.WEIGHTS not found", path)
        ckpt.load(path, checkpointables=[])
    return 0


def _resolve_weights(spec: str) -> str:
    """Model-zoo names (distill://name) or paths → a local path."""
    from ... import model_zoo

    resolve = getattr(model_zoo, "resolve_weights", None)
    return resolve(spec) if resolve is not None else spec


def lr_at(cfg, it: int) -> float:
    """Learning rate of the schedule at iteration `it` (for tests and plots)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(it):
        opt.step()
        sched.step()
    return opt.param_groups[0]["lr"]
