"""Contrastive training of a small open_clip teacher on synthetic captions, and its zero-shot check.

The teacher sees every category, base and novel, through captions ("a red star", "a photo of a star."),
the way CLIP saw the world; its corpus is a synthetic world of its own (another seed), never the
benchmark's validation images. Positives are caption-compatible pairs: same category, and the same colour
when the caption names one.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.images import read_image_rgb
from ..data.synthetic import generate, world_config_class, world_of
from ..utils.checkpoint import load_loop_state, load_torch_file, refuse_other_settings, save_loop_state
from ..utils.interrupt import stop_on_signals
from ..utils.io import atomic_path, read_json
from ..utils.progress import job_progress
from .crops import GEOMETRIES, center_square, scale_boxes
from .prompts import article, build_prompts
from .train_config import TeacherTrainConfig

logger = logging.getLogger(__name__)


def load_corpus(root: Path) -> tuple[list[torch.Tensor], list[dict]]:
    """Images (uint8 (3, H, W)) and per-object records (image index, XYXY box, category, colour)."""
    caps = read_json(root / "annotations" / "captions_train.json")
    index = {im["id"]: i for i, im in enumerate(caps["images"])}
    images = []
    for im in caps["images"]:
        images.append(read_image_rgb(root / "images" / "train" / im["file_name"]))
    objects = []
    for a in caps["annotations"]:
        x, y, w, h = a["bbox"]
        colour = a["caption"].split()[1]
        objects.append(
            {
                "image": index[a["image_id"]],
                "box": [x, y, x + w, y + h],
                "category_id": a["category_id"],
                "colour": colour,
            }
        )
    return images, objects


def _sampling_grid(boxes: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """(N, S, S, 2) grid_sample coordinates (align_corners=False) of pixel centres inside each box."""
    t = (torch.arange(size, dtype=boxes.dtype, device=boxes.device) + 0.5) / size  # (S,)
    xs = boxes[:, 0:1] + t[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (N, S) continuous x of each column
    ys = boxes[:, 1:2] + t[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    gx = (2 * xs / width - 1)[:, None, :].expand(-1, size, -1)
    gy = (2 * ys / height - 1)[:, :, None].expand(-1, -1, size)
    return torch.stack([gx, gy], -1)


def _augment_crops(
    image: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    mean,
    std,
    geometry: str = "center",
    mode: str = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Training-time crops (continuous boxes, bilinear, mip levels for large boxes): the augmentation the
    shipped teacher was trained with, kept as is so its recorded command still reproduces it. Inference uses
    the PIL-exact `crop_resize_normalize`.

    Args:
        image: (3, H, W) float in [0, 1] (or uint8, divided by 255).
        boxes: (N, 4) XYXY in pixels of `image`; may extend past the image (black there).
        geometry: "center" or "stretch" (see module doc).
        antialias: boxes larger than `size` sample a 2^k-downscaled copy of the image (a mip level made with
            an antialiased resize), so large boxes do not alias; the rest of the scale is interpolated.
    Returns:
        (N, 3, size, size) float, normalised with mean / std.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown crop geometry {geometry!r}; expected one of {GEOMETRIES}")
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    boxes = boxes.to(image.dtype)
    if geometry == "center":
        boxes = center_square(boxes)
    n = boxes.shape[0]
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    out = image.new_empty((n, 3, size, size))
    if n == 0:
        return out
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    level = (
        torch.floor(torch.log2(side / size)).clamp(min=0).long()
        if antialias
        else torch.zeros_like(side).long()
    )
    _, height, width = image.shape
    pyramid = [image]  # level k: the image halved k times (each level from the one above: cheap)
    for lvl in torch.unique(level).tolist():
        idx = torch.nonzero(level == lvl).flatten()
        while len(pyramid) <= lvl:
            prev = pyramid[-1]
            h, w = max(1, math.ceil(prev.shape[1] / 2)), max(1, math.ceil(prev.shape[2] / 2))
            pyramid.append(
                F.interpolate(prev[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[
                    0
                ]
            )
        src = pyramid[lvl]
        sh, sw = src.shape[1:]
        # sample in the mip level's pixel units (its pixels are (W / sw) input pixels wide)
        b = boxes[idx] * torch.tensor([sw / width, sh / height, sw / width, sh / height], dtype=boxes.dtype)
        grid = _sampling_grid(b, size, sh, sw).reshape(1, len(idx) * size, size, 2)
        crops = F.grid_sample(src[None], grid, mode=mode, padding_mode="zeros", align_corners=False)
        out[idx] = crops.view(3, len(idx), size, size).transpose(0, 1)
    if mode == "bicubic":
        out.clamp_(0.0, 1.0)  # bicubic overshoots; a PIL crop is uint8, so it cannot
    return (out - mean_t) / std_t


def _caption(rng: random.Random, name: str, colour: str) -> tuple[str, bool]:
    """A caption of one object and whether it names the colour."""
    r = rng.random()
    if r < 0.35:
        return f"{article(colour)} {colour} {name}", True
    if r < 0.55:
        return rng.choice(build_prompts(f"{colour} {name}", "vild")), True
    if r < 0.9:
        return rng.choice(build_prompts(name, "vild")), False
    return rng.choice([f"a {name}", name, f"a photo of a {name}."]), False


def corpus_config(cfg: TeacherTrainConfig):
    """The world config of the teacher's image-caption corpus: `cfg.world`'s, training images only."""
    return world_config_class(cfg.world)(seed=cfg.corpus_seed, num_train=cfg.corpus_images, num_val=0)


def _batch(rng: random.Random, images, objects, names, teacher_size, mean, std, batch_size, tokenizer):
    """Augmented crops (B, 3, S, S), tokens (B, L), category ids (B,), colours, colour-named flags.
    `names`: category id -> class name (the corpus world's vocabulary)."""
    picks = [objects[rng.randrange(len(objects))] for _ in range(batch_size)]
    crops, texts, named = [], [], []
    for o in picks:
        box = torch.tensor([o["box"]], dtype=torch.float32)
        w, h = box[0, 2] - box[0, 0], box[0, 3] - box[0, 1]
        shift = torch.tensor([rng.uniform(-0.1, 0.1) * w, rng.uniform(-0.1, 0.1) * h] * 2)
        box = scale_boxes(box + shift, rng.uniform(1.0, 1.7))
        geometry = "center" if rng.random() < 0.85 else "stretch"
        crop = _augment_crops(images[o["image"]], box, teacher_size, mean, std, geometry)
        crops.append(crop.flip(-1) if rng.random() < 0.5 else crop)
        text, has_colour = _caption(rng, names[o["category_id"]], o["colour"])
        texts.append(text)
        named.append(has_colour)
    cats = torch.tensor([o["category_id"] for o in picks])
    colours = [o["colour"] for o in picks]
    return torch.cat(crops), tokenizer(texts), cats, colours, torch.tensor(named)


def _positives(cats: torch.Tensor, colours: list[str], named: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: image i matches text j if same category and (text j names no colour or the same one)."""
    index = {c: i for i, c in enumerate(sorted(set(colours)))}
    col = torch.tensor([index[c] for c in colours])
    same_cat = cats[:, None] == cats[None, :]
    same_col = col[:, None] == col[None, :]
    return same_cat & (same_col | ~named[None, :])


def multi_positive_clip_loss(img: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor, scale: torch.Tensor):
    """CLIP loss with several positives per row: -log of the softmax mass on the positives, both ways."""
    logits = scale * img @ txt.t()
    neg_inf = torch.finfo(logits.dtype).min
    i2t = torch.logsumexp(logits.masked_fill(~pos, neg_inf), 1) - torch.logsumexp(logits, 1)
    t2i = torch.logsumexp(logits.t().masked_fill(~pos.t(), neg_inf), 1) - torch.logsumexp(logits.t(), 1)
    return -(i2t.mean() + t2i.mean()) / 2


def train_teacher(
    out_dir: str | Path, cfg: TeacherTrainConfig, resume: bool = True, progress: bool = True
) -> Path:
    """Train and return the path of the fp16 weights (`out_dir/teacher_fp16.pt`)."""
    import open_clip

    from .teacher import _register_model_configs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, state = out / "last.pt", None
    if resume and ckpt.is_file():  # checked before the corpus is made: a resume with other flags is an error
        state = load_torch_file(ckpt, "teacher checkpoint (delete it to start over)", weights_only=False)
        saved = state.get("config") if isinstance(state, dict) else None
        if isinstance(saved, dict):
            saved = {"world": "quickstart"} | saved  # written before the world was a setting
        if saved is not None:
            refuse_other_settings(saved, asdict(cfg), ckpt)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    world = corpus_config(cfg)
    corpus = generate(out / "corpus", world, progress=progress)
    images, objects = load_corpus(corpus)
    names = {c["id"]: c["name"] for c in world_of(world).categories}
    _register_model_configs()
    model, _, _ = open_clip.create_model_and_transforms(cfg.arch)
    tokenizer = open_clip.get_tokenizer(cfg.arch)
    visual = model.visual
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    mean, std = visual.image_mean, visual.image_std
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / max(cfg.warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))
        ),
    )
    start = 0
    if state is not None:
        start = load_loop_state(state, "model", model, opt, sched, rng)
        logger.info("resumed teacher training at step %d", start)

    def save(step: int) -> None:
        save_loop_state(ckpt, "model", model, opt, sched, rng, step, asdict(cfg))

    model.train()
    bar = job_progress(range(start, cfg.steps), progress, initial=start, total=cfg.steps, desc="teacher")
    with stop_on_signals() as stop:
        for step in bar:
            crops, tokens, cats, colours, named = _batch(
                rng, images, objects, names, size, mean, std, cfg.batch_size, tokenizer
            )
            img = F.normalize(model.encode_image(crops), dim=-1)
            txt = F.normalize(model.encode_text(tokens), dim=-1)
            loss = multi_positive_clip_loss(
                img, txt, _positives(cats, colours, named), model.logit_scale.exp()
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or stop:
                save(step + 1)
            if stop and step + 1 < cfg.steps:  # SIGINT / SIGTERM: this step's checkpoint is on disk
                raise stop.interrupted(
                    f"at step {step + 1}/{cfg.steps}", str(ckpt), "run the same command again to continue"
                )
    tensors = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    weights = out / "teacher_fp16.pt"
    with atomic_path(weights) as tmp:
        torch.save(tensors, tmp)
    _save_safetensors(out / SAFETENSORS_NAME, tensors, cfg)
    return weights


SAFETENSORS_NAME = "teacher_fp16.safetensors"  # the same weights without pickle, with their recipe


def _save_safetensors(path: Path, tensors: dict, cfg: TeacherTrainConfig) -> None:
    """The weights as safetensors (open_clip loads them by the suffix); the metadata records the arch, the
    corpus's world and the whole recipe (json), so the file says what made it."""
    import json

    from safetensors.torch import save_file

    meta = {"arch": cfg.arch, "world": cfg.world, "recipe": json.dumps(asdict(cfg), sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


@torch.no_grad()
def zero_shot_accuracy(
    teacher,
    benchmark_root: str | Path,
    split: str = "val",
    templates: str = "vild",
    scales=(1.0, 1.5),
    geometry: str = "center",
) -> dict:
    """Classify every annotated object's region embedding against the class text embeddings."""
    from ..data.datasets import synthetic_dataset

    dicts, meta = synthetic_dataset(benchmark_root, split)
    text = teacher.encode_text(meta.thing_classes, templates)
    novel = set(meta.contiguous_ids("novel"))
    correct, labels, preds = [], [], []
    for d in dicts:
        if not d["annotations"]:
            continue
        img = read_image_rgb(d["file_name"])
        boxes = torch.tensor(
            [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in d["annotations"]
            ],
            dtype=torch.float32,
        )
        emb = teacher.encode_regions([img], [boxes], scales=scales, geometry=geometry)
        pred = (emb @ text.t()).argmax(1)
        lab = torch.tensor([a["category_id"] for a in d["annotations"]])
        correct.append(pred == lab)
        labels.append(lab)
        preds.append(pred)
    correct_t, labels_t = torch.cat(correct), torch.cat(labels)
    is_novel = torch.tensor([int(c) in novel for c in labels_t])
    per_class = {
        meta.thing_classes[c]: 100 * correct_t[labels_t == c].float().mean().item()
        for c in range(len(meta.thing_classes))
        if (labels_t == c).any()
    }
    # the "hub": the class the teacher names most often relative to how often it is there (a text embedding
    # near the mean region embedding draws other classes' crops)
    n = len(meta.thing_classes)
    predicted = torch.bincount(torch.cat(preds), minlength=n).float()
    present = torch.bincount(labels_t, minlength=n).float()
    ratio = predicted / present.clamp_min(1)
    hub = int(ratio.argmax())
    return {
        "acc_all": 100 * correct_t.float().mean().item(),
        "acc_novel": 100 * correct_t[is_novel].float().mean().item(),
        "acc_base": 100 * correct_t[~is_novel].float().mean().item(),
        "num_objects": int(labels_t.numel()),
        "hub_class": meta.thing_classes[hub],
        "hub_ratio": float(ratio[hub]),  # predictions of the hub class / its objects
        "per_class": per_class,
    }
