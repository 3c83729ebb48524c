"""CLIPSelf (Wu et al., ICLR 2024; wusize/CLIPSelf): a ViT teacher distilled from its own crops.

The student is a copy of the teacher's image tower, all of it trainable. Its dense features (the last block
without attention, ln_post, projection; `distill.teacher.vit_dense.vit_dense`) are pooled over boxes by
RoIAlign (1x1); the frozen teacher embeds the same boxes as crops of the original image (the batched PIL-exact
resampler). Loss: mean(1 - cosine). On save, the student is averaged with the teacher (w = r * student +
(1 - r) * teacher) and written as an open_clip state dict in safetensors: a teacher like any other.

Boxes: a random m x n grid per image (CLIPSelf's), or detector proposals (top-k per image).
Choices that differ from the official code (config values):
- the grid: official draws (m, n) with n <= max_split and keeps a random 20 of its cells; here only grids of
  at most `max_cells` cells are drawn, so every cell is used and the boxes tile the image.
- the schedule after warm-up: cosine (open_clip's default, which the official code runs) or constant.
- steps are derived from (seed, step, rank) alone (images, boxes): a resumed run sees the same batches.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..utils.errors import DistillInputError
from .clipself_config import SCHEDULES, CLIPSelfConfig  # noqa: F401  (the recipe, torch-free)
from .vit_dense import patch_size, vit_dense

logger = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
CHECKPOINT = "last.pt"


# ---------------------------------------------------------------------------------------------- boxes
def grid_choices(max_split: int = 6, max_cells: int = 20) -> list[tuple[int, int]]:
    """(m rows, n columns) a grid may have: m in 1..max_split, n in ceil(m/2)..2m, m * n <= max_cells."""
    return [
        (m, n) for m in range(1, max_split + 1) for n in range((m + 1) // 2, 2 * m + 1) if m * n <= max_cells
    ]


def grid_boxes(
    height: int, width: int, generator: torch.Generator, max_split: int = 6, max_cells: int = 20
) -> torch.Tensor:
    """A random m x n grid over a (height, width) image: its cells as (m * n, 4) float32 XYXY pixels, rows
    top to bottom, cells left to right; they tile the image exactly. Pure: the draw depends on `generator`
    only."""
    choices = grid_choices(max_split, max_cells)
    m, n = choices[int(torch.randint(len(choices), (1,), generator=generator))]
    ys = torch.linspace(0, height, m + 1)
    xs = torch.linspace(0, width, n + 1)
    y0, x0 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")
    y1, x1 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")
    return torch.stack([x0, y0, x1, y1], -1).reshape(-1, 4)


# ---------------------------------------------------------------------------------------------- model
def require_vit(teacher) -> None:
    """One line for a teacher CLIPSelf cannot train: a ResNet, an attention-pooled ViT, another tower."""
    v = teacher.model.visual
    vit = hasattr(v, "transformer") and hasattr(v, "conv1") and hasattr(v, "class_embedding")
    if not vit or getattr(v, "attn_pool", None) is not None:
        kind = "an attention-pooled ViT" if vit else type(v).__name__
        raise DistillInputError(
            f"CLIPSelf needs an open_clip ViT teacher (ViT-B-16, distill-tiny-vit, ...); "
            f"{teacher.arch}'s image tower is {kind}"
        )


def check_vit_arch(arch: str) -> None:
    """Before any weights load: an arch (or model-zoo teacher) whose open_clip config is not a plain ViT
    (a ResNet's layer list, a timm tower, an attention pool) is one line. Unknown configs pass (checked on
    the loaded tower by `require_vit`)."""
    import open_clip

    from ..model_zoo import get_entry, has_entry
    from .teacher import _register_model_configs

    _register_model_configs()
    name = arch.removeprefix("distill://")
    if has_entry(name) and get_entry(name).get("arch"):
        arch = get_entry(name)["arch"]
    vision = (open_clip.get_model_config(arch) or {}).get("vision_cfg") or {}
    kind = None
    if isinstance(vision.get("layers"), (list, tuple)):
        kind = "a ResNet (ModifiedResNet)"
    elif vision.get("timm_model_name"):
        kind = f"a timm tower ({vision['timm_model_name']})"
    elif vision.get("attentional_pool"):
        kind = "an attention-pooled ViT"
    if kind:
        raise DistillInputError(
            f"CLIPSelf needs an open_clip ViT teacher (ViT-B-16, distill-tiny-vit, ...); "
            f"{arch}'s image tower is {kind}"
        )


class RegionHead(torch.nn.Module):
    """The student: an open_clip VisionTransformer whose forward gives region embeddings (a module, so
    DistributedDataParallel can wrap it)."""

    def __init__(self, visual: torch.nn.Module):
        super().__init__()
        self.visual = visual
        self.patch = patch_size(visual)

    def forward(self, x: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """x: (B, 3, H, W) normalised, H and W multiples of the patch; boxes: B tensors (N_i, 4) XYXY in x's
        pixels. Returns (sum N_i, D) L2-normalised region embeddings (RoIAlign 1x1 of the dense features)."""
        from torchvision.ops import roi_align

        _, dense = vit_dense(self.visual, x)  # (B, D, h, w), normalised over D
        rois = [b.to(dense.dtype) for b in boxes]
        pooled = roi_align(dense, rois, 1, spatial_scale=1.0 / self.patch, sampling_ratio=0, aligned=True)
        return F.normalize(pooled.flatten(1), dim=-1)


def clipself_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean(1 - cosine) of (N, D) student and (N, D) teacher embeddings (both normalised here)."""
    return 1.0 - (F.normalize(student, dim=-1) * F.normalize(teacher, dim=-1)).sum(-1).mean()


@torch.no_grad()
def teacher_targets(teacher, images: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], geometry: str):
    """The frozen teacher's embeddings of crops: B images (3, H_i, W_i) uint8, B boxes (N_i, 4) XYXY in their
    pixels → (sum N_i, D) L2-normalised."""
    crops = [
        teacher.crop_regions(im.to(teacher.device), b.to(teacher.device), 1.0, geometry)
        for im, b in zip(images, boxes)
    ]
    return teacher.encode_image(torch.cat(crops))


def student_input(image: torch.Tensor, size: int, patch: int, mean, std) -> tuple[torch.Tensor, float]:
    """(3, H, W) uint8 → ((3, S, S) normalised, scale): resized so the longer side is `size` (bilinear,
    antialiased), padded bottom-right with zeros (the mean colour) to S = `size` rounded up to the patch."""
    h, w = image.shape[1:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = image.float()[None] / 255.0
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - m) / s
    side = math.ceil(size / patch) * patch
    return F.pad(x, (0, side - nw, 0, side - nh))[0], scale


# ---------------------------------------------------------------------------------------------- data
@dataclass
class ImageSet:
    """The training images: paths and image ids (proposals are keyed by id)."""

    paths: list[Path]
    ids: list[int | None]

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "ImageSet":
        """A folder of images; an id is the file's stem where it is an integer (COCO's 000000123456.jpg)."""
        from ..utils.cli import IMAGE_SUFFIXES

        p = Path(folder)
        if not p.is_dir():
            raise DistillInputError("--images folder not found", p)
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DistillInputError(f"no images in folder (looked for {', '.join(IMAGE_SUFFIXES)})", p)
        return cls(files, [int(f.stem) if f.stem.isdigit() else None for f in files])

    @classmethod
    def from_world(cls, root: str | os.PathLike, split: str = "train") -> "ImageSet":
        """A synthetic world's images of `split` (its instances json gives files and ids)."""
        from ..utils.io import read_json

        root = Path(root)
        info = read_json(root / "annotations" / f"instances_{split}.json", what="synthetic world annotations")
        ims = info.get("images", []) if isinstance(info, dict) else []
        if not ims:
            raise DistillInputError(f"the world has no {split} images", root)
        return cls([root / "images" / split / im["file_name"] for im in ims], [int(im["id"]) for im in ims])


def shard_indices(num: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This rank's images of an epoch: a seeded permutation, every `world`-th from `rank`."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num, generator=g)[rank::world].tolist()


def batch_plan(num: int, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Image indices of `step` on `rank`: consecutive slices of per-epoch shards (a function of its arguments
    alone, so a resumed run draws the same batches)."""
    per_rank = max(1, num // world)
    out = []
    start = step * batch_size
    for k in range(start, start + batch_size):
        epoch, pos = divmod(k, per_rank)
        shard = shard_indices(num, epoch, seed, rank, world)
        out.append(shard[pos % len(shard)])
    return out


# ---------------------------------------------------------------------------------------------- training
def _lr_lambda(cfg: CLIPSelfConfig):
    def f(s: int) -> float:
        warm = min(1.0, (s + 1) / max(cfg.warmup, 1))
        if cfg.schedule == "constant" or s < cfg.warmup:
            return warm
        t = (s - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def _param_groups(visual: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's split: no decay on gains, biases, norms and embeddings."""
    decay, no_decay = [], []
    for n, p in visual.named_parameters():
        skip = p.ndim < 2 or "ln" in n or "bias" in n or "embedding" in n
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def average_state_dict(student: dict, teacher: dict, ratio: float) -> dict:
    """w = ratio * student + (1 - ratio) * teacher, for every tensor of `teacher` (the whole open_clip model;
    names `student` lacks, e.g. the text tower, keep the teacher's)."""
    out = {}
    for k, t in teacher.items():
        s = student.get(k)
        if s is None or not t.is_floating_point():
            out[k] = t.clone()
        elif ratio == 1.0:
            out[k] = s.detach().clone().to(t.dtype)
        elif ratio == 0.0:
            out[k] = t.detach().clone()
        else:
            out[k] = (ratio * s.detach().float() + (1.0 - ratio) * t.detach().float()).to(t.dtype)
    return out


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_provenance(teacher, cfg: CLIPSelfConfig) -> dict:
    """The base teacher: arch, pretrained tag / zoo name / path, the weights' sha256 where they are a file. A
    model-zoo base is named, not located (where the zoo keeps its file differs between machines)."""
    prov = {"arch": teacher.arch, "pretrained": cfg.pretrained, "sha256": None}
    if cfg.pretrained and os.path.isfile(cfg.pretrained):
        prov["path"] = str(Path(cfg.pretrained).resolve())
        prov["sha256"] = sha256_file(cfg.pretrained)
    elif teacher.pretrained:
        from ..model_zoo import has_entry

        if has_entry(teacher.pretrained):
            from ..model_zoo import get_checkpoint

            prov["zoo_name"] = teacher.pretrained
            prov["sha256"] = sha256_file(get_checkpoint(teacher.pretrained))
    return prov


def _canonical_header(data: bytes) -> bytes:
    """A safetensors file with its json header's keys sorted: the writer orders the metadata as a hash map
    does (differently in every process), so the same weights would get another sha256 each run."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    if len(header) > n:  # cannot happen for the same content; keep the writer's bytes then
        return data
    return data[:8] + header + b" " * (n - len(header)) + data[8 + n :]  # the format allows space padding


def save_teacher(path: Path, state: dict, cfg: CLIPSelfConfig, provenance: dict) -> Path:
    """The averaged open_clip state dict as safetensors (open_clip loads it by the suffix), its recipe and
    provenance in the metadata and in a json beside it (`<name>.json`)."""
    from safetensors.torch import save

    from ..utils.io import atomic_write_bytes, atomic_write_json

    dtype = DTYPES[cfg.save_dtype]
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous() for k, v in state.items()
    }
    meta = {
        "arch": cfg.arch,
        "method": "clipself",
        "recipe": json.dumps(asdict(cfg), sort_keys=True),
        "provenance": json.dumps(provenance, sort_keys=True),
    }
    atomic_write_bytes(path, _canonical_header(save(tensors, metadata=meta)))
    atomic_write_json(
        path.with_suffix(".json"),
        {"arch": cfg.arch, "method": "clipself", "recipe": asdict(cfg), "sha256": sha256_file(path)}
        | provenance,
    )
    return path


def _distributed() -> tuple[int, int]:
    """(rank, world size); under torchrun with WORLD_SIZE > 1 the process group is set up here."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def train_clipself(
    out_dir: str | os.PathLike,
    cfg: CLIPSelfConfig,
    images: ImageSet,
    resume: bool = True,
    progress: bool = True,
    device: str | None = None,
) -> Path:
    """Train; returns the averaged teacher's safetensors path (`out_dir/teacher_<dtype>.safetensors`).

    Resumes from `out_dir/last.pt` (written every `checkpoint_every` steps and on SIGINT / SIGTERM) when
    `resume`; without it an existing checkpoint, and with it one written with another config, is one clear
    error.
    """
    from ..data.images import read_image_rgb
    from ..utils.checkpoint import load_loop_state, load_torch_file, refuse_other_settings, save_loop_state
    from ..utils.interrupt import any_rank, stop_on_signals
    from ..utils.progress import job_progress, progress_bar
    from .regions import load_proposals
    from .teacher import create_teacher

    rank, world = _distributed()
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    out = Path(out_dir)
    ckpt = out / CHECKPOINT
    if not resume and ckpt.is_file():
        raise DistillInputError(
            "the output folder holds a CLIPSelf checkpoint: pass --resume to continue it, or choose another "
            "--output-dir",
            ckpt,
        )
    if len(images.paths) < world:
        raise DistillInputError(
            f"{len(images.paths)} image(s) for {world} processes: each needs one at least"
        )
    check_vit_arch(cfg.arch)
    teacher = create_teacher(cfg.arch, None if cfg.pretrained in ("", "none") else cfg.pretrained, device)
    require_vit(teacher)
    state = None
    if resume and ckpt.is_file():
        state = load_torch_file(ckpt, "CLIPSelf checkpoint (delete it to start over)", weights_only=False)
        saved = state.get("config") if isinstance(state, dict) else None
        refuse_other_settings(saved, asdict(cfg), ckpt)
    proposals = {}
    if cfg.proposals:
        known = [i for i in images.ids if i is not None]
        if not known:
            raise DistillInputError("--proposals need image ids: integer file names (COCO's) or a --world")
        proposals = load_proposals(cfg.proposals, known, cfg.top_k)
        logger.info("proposals for %d of %d images (the others: grids)", len(proposals), len(images.paths))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    head = RegionHead(copy.deepcopy(teacher.model.visual)).to(device)
    for p in head.parameters():
        p.requires_grad_(True)
    head.train()
    model = head
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            head, device_ids=[torch.device(device).index] if device.startswith("cuda") else None
        )
    opt = torch.optim.AdamW(_param_groups(head.visual, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    rng = random.Random(cfg.seed)  # unused by the loop (batches come from the step), kept for save_loop_state
    start = 0
    if state is not None:
        start = load_loop_state(state, "student", head.visual, opt, sched, rng)
        logger.info("resumed CLIPSelf at step %d", start)

    def save(step: int) -> None:
        if rank == 0:
            save_loop_state(ckpt, "student", head.visual, opt, sched, rng, step, asdict(cfg))

    steps = range(start, cfg.steps)
    bar = (  # one rank reports
        job_progress(steps, progress, initial=start, total=cfg.steps, desc="clipself")
        if rank == 0
        else progress_bar(steps, progress=False)
    )
    loss_value = float("nan")
    with stop_on_signals() as stop:
        for step in bar:
            idx = batch_plan(len(images.paths), step, cfg.batch_size, cfg.seed, rank, world)
            originals, xs, student_boxes, boxes = [], [], [], []
            for j, i in enumerate(idx):
                im = read_image_rgb(images.paths[i])
                g = torch.Generator().manual_seed(((cfg.seed * 1_000_003 + step) * 4099 + rank) * 131 + j)
                b = proposals.get(images.ids[i]) if proposals else None
                if b is None or b.shape[0] == 0:
                    b = grid_boxes(im.shape[1], im.shape[2], g, cfg.max_split, cfg.max_cells)
                x, scale = student_input(im, cfg.image_size, head.patch, teacher.mean, teacher.std)
                originals.append(im)
                xs.append(x)
                boxes.append(b)
                student_boxes.append((b * scale).to(device))
            target = teacher_targets(teacher, originals, boxes, cfg.geometry)
            pred = model(torch.stack(xs).to(device), student_boxes)
            loss = clipself_loss(pred, target.to(pred.dtype))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_value = loss.item()
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            stop_now = any_rank(bool(stop))
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or stop_now:
                save(step + 1)
            if stop_now and step + 1 < cfg.steps:
                raise stop.interrupted(
                    f"at step {step + 1}/{cfg.steps}",
                    str(ckpt),
                    "run the same command with --resume to continue",
                )
    weights = out / f"teacher_{cfg.save_dtype}.safetensors"
    if rank == 0:
        student = {"visual." + k: v for k, v in head.visual.state_dict().items()}
        averaged = average_state_dict(student, teacher.model.state_dict(), cfg.student_ratio)
        prov = {
            "base": base_provenance(teacher, cfg),
            "steps_done": cfg.steps,
            "final_loss": loss_value,
            "images": len(images.paths),
        }
        save_teacher(weights, averaged, cfg, prov)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # the other ranks return once the weights are on disk
        dist.destroy_process_group()
    return weights
