"""Training data and objectives of the learned text classifiers (CoOp, DetPro, CLIP-Adapter), resumable.

- CoOp: the teacher's embeddings of ground-truth crops of base classes; cross entropy over the base vocabulary.
- DetPro: region-store proposals; foreground = IoU >= 0.5 with a base box (its label), background = the rest,
  pushed towards equal similarity to every base class (cross entropy against the uniform distribution);
  context grading: one prompt per IoU bin of foreground proposals, each trained on its bin plus background,
  ensembled at inference.
- CLIP-Adapter: the residual bottleneck MLP on the base classes' hand-prompt embeddings, trained on the
  foreground region embeddings of the store, cross entropy over the base vocabulary.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..data.images import read_image_rgb
from ..utils.checkpoint import load_loop_state, load_torch_file, save_loop_state
from ..utils.errors import DistillInputError
from ..utils.interrupt import stop_on_signals
from ..utils.progress import job_progress
from .domain import check_images
from .learned_prompts import PromptLearner, TextAdapter, ensemble, save_learned, teacher_record
from .prompt_config import PromptTrainConfig

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ training samples
def _gt_boxes(d: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4) XYXY and (N,) contiguous labels of an image's non-crowd annotations (XYWH in the dicts)."""
    anns = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
    boxes = torch.tensor(
        [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in anns
        ],
        dtype=torch.float32,
    ).view(-1, 4)
    return boxes, torch.tensor([a["category_id"] for a in anns], dtype=torch.long)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4), (M, 4) XYXY → (N, M) IoU."""
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter).clamp(min=1e-6)


def _base_index(meta, base_names: Sequence[str]) -> dict[int, int]:
    index = {n: i for i, n in enumerate(base_names)}
    return {c: index[n] for c, n in enumerate(meta.thing_classes) if n in index}


@torch.no_grad()
def gt_crop_samples(
    teacher, dicts: list[dict], meta, base_names: Sequence[str], progress: bool = False
) -> dict:
    """CoOp's data: {"emb": (N, D) region embeddings of base GT boxes (crops 1x, 1.5x), "label": (N,)}."""
    to_base = _base_index(meta, base_names)
    check_images(getattr(teacher, "world", None), (d["file_name"] for d in dicts))
    embs, labels = [], []
    for d in job_progress(dicts, progress, desc="GT crops", unit="img"):
        boxes, lab = _gt_boxes(d)
        keep = torch.tensor([int(c) in to_base for c in lab], dtype=torch.bool)
        if not keep.any():
            continue
        embs.append(teacher.encode_regions([read_image_rgb(d["file_name"])], [boxes[keep]]).cpu())
        labels.append(torch.tensor([to_base[int(c)] for c in lab[keep]]))
    if not embs:
        raise DistillInputError("no ground-truth box of a base class in the training data")
    return {"emb": torch.cat(embs).float(), "label": torch.cat(labels)}


def store_samples(store, dicts: list[dict], meta, base_names: Sequence[str], fg_iou: float = 0.5) -> dict:
    """DetPro's / CLIP-Adapter's data from a region store (read through `store[image_id]`).

    Returns {"emb": (N, D), "label": (N,) base index or -1 for background, "iou": (N,) max IoU with a base box}.
    """
    to_base = _base_index(meta, base_names)
    embs, labels, ious = [], [], []
    for d in dicts:
        if d["image_id"] not in store:
            continue
        boxes, emb = store[d["image_id"]]
        gt, lab = _gt_boxes(d)
        keep = torch.tensor([int(c) in to_base for c in lab], dtype=torch.bool)
        gt, lab = gt[keep], lab[keep]
        if gt.shape[0]:
            iou, j = box_iou(boxes.float(), gt).max(1)
            label = (
                torch.tensor([to_base[int(c)] for c in lab[j]])
                if len(j)
                else torch.zeros(0, dtype=torch.long)
            )
            label = torch.where(iou >= fg_iou, label, torch.full_like(label, -1))
        else:
            iou, label = torch.zeros(boxes.shape[0]), torch.full((boxes.shape[0],), -1)
        embs.append(emb.float())
        labels.append(label)
        ious.append(iou)
    if not embs:
        raise DistillInputError("the region store holds none of the training images")
    out = {"emb": F.normalize(torch.cat(embs), dim=-1), "label": torch.cat(labels), "iou": torch.cat(ious)}
    if not (out["label"] >= 0).any():
        raise DistillInputError(f"no region-store proposal has IoU >= {fg_iou} with a base box")
    return out


# ------------------------------------------------------------------ objectives
def uniform_ce_loss(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) → DetPro's background loss: cross entropy against the uniform distribution over the C classes."""
    if logits.shape[0] == 0:
        return logits.sum() * 0
    return -F.log_softmax(logits, dim=1).mean(1).mean()


def _sample(rng: random.Random, idx: torch.Tensor, n: int) -> torch.Tensor:
    if idx.numel() == 0:
        return idx
    return idx[torch.tensor([rng.randrange(idx.numel()) for _ in range(n)])]


def _detpro_loss(per: torch.Tensor, data: dict, bins: list[torch.Tensor], bg: torch.Tensor, cfg, rng, scale):
    loss = per.new_zeros(())
    half = max(1, cfg.batch_size // 2)
    for k, fg_k in enumerate(bins):
        f, b = _sample(rng, fg_k, half), _sample(rng, bg, half)
        if f.numel():
            loss = loss + F.cross_entropy(scale * data["emb"][f] @ per[k].t(), data["label"][f])
        loss = loss + cfg.bg_weight * uniform_ce_loss(scale * data["emb"][b] @ per[k].t())
    return loss / len(bins)


def _ce_loss(cls_emb: torch.Tensor, data: dict, fg: torch.Tensor, cfg, rng, scale) -> torch.Tensor:
    f = _sample(rng, fg, cfg.batch_size)
    return F.cross_entropy(scale * data["emb"][f] @ cls_emb.t(), data["label"][f])


# ------------------------------------------------------------------ the training loop
def _build(teacher, base_names, cfg):
    if cfg.method == "clip-adapter":
        base_emb = teacher.encode_text(base_names, cfg.base_templates)
        return TextAdapter(base_emb.shape[1], cfg.reduction, cfg.alpha), base_emb
    k = len(cfg.iou_bins) - 1 if cfg.method == "detpro" else 1
    return PromptLearner(teacher, base_names, cfg.m, cfg.init, k, cfg.class_specific), None


def train_prompts(
    teacher,
    data: dict,
    base_names: Sequence[str],
    cfg: PromptTrainConfig,
    output: str | Path,
    work_dir: str | Path,
    training_data: dict,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Fit `cfg.method` on `data` (see gt_crop_samples / store_samples) and write the learned-prompt file."""
    if cfg.method not in ("coop", "detpro", "clip-adapter"):
        raise DistillInputError(f"unknown method {cfg.method!r}; choose coop, detpro or clip-adapter")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    module, base_emb = _build(teacher, base_names, cfg)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.steps))
    scale = float(teacher.model.logit_scale.exp().clamp(max=100))
    fg = torch.nonzero(data["label"] >= 0).flatten()
    bg = torch.nonzero(data["label"] < 0).flatten()
    bins = (
        [
            torch.nonzero((data["label"] >= 0) & (data["iou"] >= lo) & (data["iou"] < hi)).flatten()
            for lo, hi in zip(cfg.iou_bins[:-1], cfg.iou_bins[1:])
        ]
        if cfg.method == "detpro"
        else []
    )
    ckpt, start = Path(work_dir) / "last.pt", 0
    if resume and ckpt.is_file():
        state = load_torch_file(ckpt, "prompt-training checkpoint (--force restarts)", weights_only=False)
        if not isinstance(state, dict) or state.get("config") != asdict(cfg):
            raise DistillInputError(
                "checkpoint was made with another configuration; use another work dir", ckpt
            )
        start = load_loop_state(state, "module", module, opt, sched, rng)
        logger.info("resumed %s at step %d", cfg.method, start)

    def save(step: int) -> None:
        save_loop_state(ckpt, "module", module, opt, sched, rng, step, asdict(cfg))

    bar = job_progress(range(start, cfg.steps), progress, initial=start, total=cfg.steps, desc=cfg.method)
    with stop_on_signals() as stop:
        for step in bar:
            if cfg.method == "clip-adapter":
                loss = _ce_loss(module(base_emb), data, fg, cfg, rng, scale)
            elif cfg.method == "detpro":
                loss = _detpro_loss(module(teacher.model), data, bins, bg, cfg, rng, scale)
            else:
                loss = _ce_loss(module(teacher.model)[0], data, fg, cfg, rng, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or stop:
                save(step + 1)
            if stop and step + 1 < cfg.steps:  # SIGINT / SIGTERM: this step's checkpoint is on disk
                raise stop.interrupted(
                    f"at step {step + 1}/{cfg.steps}",
                    str(ckpt),
                    "run the same command with --resume to continue",
                )
    return _save(module, teacher, base_names, cfg, output, training_data)


def _save(module, teacher, base_names, cfg, output, training_data) -> Path:
    meta = {
        "method": cfg.method,
        "teacher": teacher_record(teacher),
        "class_names": list(base_names),
        "training_data": training_data,
        "config": asdict(cfg),
    }
    if cfg.method == "clip-adapter":
        tensors = dict(module.state_dict())
        meta |= {"base_templates": cfg.base_templates, "alpha": cfg.alpha, "reduction": cfg.reduction}
    else:
        tensors = {"ctx": module.ctx}
        meta |= {
            "m": module.m,
            "words": module.words,
            "init": cfg.init,
            "num_prompts": int(module.ctx.shape[0]),
            "class_specific": cfg.class_specific,
            "iou_bins": list(cfg.iou_bins) if cfg.method == "detpro" else None,
        }
    return save_learned(output, tensors, meta)


@torch.no_grad()
def zero_shot_top1(class_emb: torch.Tensor, emb: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of (N, D) embeddings with (N,) labels against (C, D) class embeddings."""
    return 100.0 * ((emb @ class_emb.t()).argmax(1) == labels).float().mean().item()


__all__ = [
    "PromptTrainConfig",
    "box_iou",
    "ensemble",
    "gt_crop_samples",
    "store_samples",
    "train_prompts",
    "uniform_ce_loss",
    "zero_shot_top1",
]
