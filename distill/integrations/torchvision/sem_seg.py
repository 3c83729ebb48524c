"""The open-vocabulary semantic segmenter on torchvision parts (ResNet-FPN + the core semantic head), its
training loop, evaluation, the synthetic benchmark's ablation (CE only vs CE + pixel distillation) and the
`--task semseg` demo.

    from distill.integrations.torchvision.sem_seg import train_and_evaluate_segmenter
    result = train_and_evaluate_segmenter("output/quickstart/synthetic", "output/quickstart/semseg", teacher)
    result["rows"]["CE + pixel distillation"]["mIoU_novel"]
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...evaluation.sem_seg import SemSegEvaluator, read_sem_seg_png
from ...modeling.heads import TextClassifier
from ...modeling.sem_seg import (
    OpenVocabSemSegPredictor,
    SemSegEmbedHead,
    SemSegLabelMap,
    check_sem_seg_labels,
)
from ...teacher.dense_targets import (
    DenseTargetCache,
    DenseTargetConfig,
    compute_dense_targets,
    dense_targets_from_store,
    open_region_store,
)
from ...teacher.embeddings import ClassEmbeddings
from ...utils.errors import DistillInputError
from ...utils.io import atomic_write_bytes, atomic_write_json
from .builders import STRIDES, build_backbone
from .meta_arch import normalize_and_pad

logger = logging.getLogger(__name__)
SEMSEG_CONFIG = str(Path(__file__).resolve().parents[3] / "configs/synthetic/semseg_r18_fpn_quick.yaml")
VARIANTS = {"CE only": 0.0, "CE + pixel distillation": None}  # None: MODEL.DISTILL.PIXEL_LOSS_WEIGHT


class OpenVocabSegmenter(nn.Module):
    """ResNet-FPN backbone + `OpenVocabSemSegPredictor`.

    forward(images (B, 3, H, W) float RGB 0-255 or a list of (3, H_i, W_i), labels (B, H, W) pixel values,
    pixel_targets B × (D, h, w)) → training: losses dict; inference: (B, K, H, W) logits at the input size.
    """

    def __init__(self, backbone: nn.Module, predictor: OpenVocabSemSegPredictor, pixel_mean, pixel_std,
                 size_divisible: int = 32, flip_test: bool = False):
        super().__init__()
        self.backbone = backbone
        self.predictor = predictor
        self.flip_test = flip_test  # predict_sem_seg averages the image's and its mirror's probabilities
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        self.size_divisible = size_divisible

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _batch(self, images, labels):
        x, sizes = normalize_and_pad(list(images), self.pixel_mean, self.pixel_std, self.size_divisible)
        lab = None
        if labels is not None:
            lab = torch.full((x.shape[0], *x.shape[-2:]), self.predictor.ignore_value, dtype=torch.long,
                             device=self.device)
            for k, (h, w) in enumerate(sizes):
                lab[k, :h, :w] = labels[k][:h, :w].to(self.device)
        return x, lab, sizes

    def forward(self, images, labels=None, pixel_targets=None, body_features=None):
        """body_features: the ResNet's outputs of this padded batch ({"0".."3": (B, C_l, H / s_l, W / s_l)}),
        precomputed while it is frozen (`body_feature_cache`); None runs it."""
        x, lab, sizes = self._batch(images, labels)
        feats = self.backbone(x) if body_features is None else self.backbone.fpn(body_features)
        features = [feats[k] for k in ("0", "1", "2", "3")]
        logits, losses = self.predictor(features, sizes, lab, pixel_targets)
        return losses if self.training else logits


def build_sem_seg_model(cfg, vocabulary: ClassEmbeddings, class_values: Sequence[int] | None = None
                        ) -> OpenVocabSegmenter:
    """The segmenter for `vocabulary` (the training vocabulary: base classes).

    class_values: pixel value of each vocabulary class (default MODEL.DISTILL.SEM_SEG.TRAIN_LABEL_VALUES, else
    0..C-1).
    """
    d, s = cfg.MODEL.DISTILL, cfg.MODEL.DISTILL.SEM_SEG
    backbone = build_backbone(cfg)
    ch = backbone.out_channels
    head = SemSegEmbedHead([ch] * 4, STRIDES, vocabulary.dim, s.CONVS_DIM, s.COMMON_STRIDE, s.NORM)
    values = list(class_values if class_values is not None else (s.TRAIN_LABEL_VALUES or range(len(vocabulary))))
    label_map = SemSegLabelMap(values, None if s.BACKGROUND_VALUE < 0 else s.BACKGROUND_VALUE, s.IGNORE_VALUE)
    classifier = TextClassifier(vocabulary.embeddings, d.TEMPERATURE, d.BG_INIT_STD)
    classifier.class_names = list(vocabulary.class_names)
    predictor = OpenVocabSemSegPredictor(head, classifier, label_map, s.LOSS_WEIGHT, d.PIXEL_LOSS_WEIGHT,
                                         d.PIXEL_LOSS, s.DISTILL_BACKGROUND)
    return OpenVocabSegmenter(backbone, predictor, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD,
                              flip_test=bool(cfg.TEST.AUG.ENABLED and cfg.TEST.AUG.FLIP))


_NO_STUDENT = ("MODEL.WEIGHTS (the detector whose backbone the segmenter starts from) not found: run the "
               'quickstart\'s vild stage first, or set MODEL.WEIGHTS "" to train from scratch')


def load_student_backbone(model: OpenVocabSegmenter, path: str | os.PathLike) -> int:
    """Start the segmenter's ResNet-FPN from a detector checkpoint of this backend (the ViLD student: a semantic
    branch on the student's FPN), i.e. its `backbone.*` tensors; the rest of the checkpoint is not used.

    Returns the number of tensors loaded; a missing file or a backbone that does not fit is one clear error.
    """
    if not os.path.isfile(path):
        raise DistillInputError(_NO_STUDENT, path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else {}
    src = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    own = model.backbone.state_dict()
    bad = [f"{k} missing" for k in own if k not in src]
    bad += [f"{k} {tuple(src[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
            if k in src and src[k].shape != v.shape]
    if bad:
        raise DistillInputError(f"MODEL.WEIGHTS does not fit the segmenter's backbone ({len(bad)} problem(s), e.g. "
                                f"{bad[0]}): another backbone config or not a detector checkpoint?", path)
    model.backbone.load_state_dict({k: src[k] for k in own})
    return len(own)


def dense_target_config(cfg) -> DenseTargetConfig:
    s = cfg.MODEL.DISTILL.SEM_SEG
    sha = ""
    if s.DENSE_TARGETS == "regions" and (s.PROPOSALS or not s.REGION_STORE):
        if not s.PROPOSALS or not os.path.isfile(s.PROPOSALS):
            raise DistillInputError('dense targets "regions" need MODEL.DISTILL.SEM_SEG.PROPOSALS (a proposals json, '
                                    "e.g. the quickstart's proposals_train.json) or SEM_SEG.REGION_STORE",
                                    s.PROPOSALS or None)
        sha = hashlib.sha256(Path(s.PROPOSALS).read_bytes()).hexdigest()
    return DenseTargetConfig(kind=s.DENSE_TARGETS, stride=s.DENSE_TARGET_STRIDE, input_scale=s.PIXELS_INPUT_SCALE,
                             window_sizes=tuple(s.WINDOW_SIZES), window_stride=s.WINDOW_STRIDE, proposals_sha256=sha)


def load_region_boxes(cfg, image_ids: Sequence[int]) -> dict | None:
    """{image_id: (N, 4) XYXY} from MODEL.DISTILL.SEM_SEG.PROPOSALS for the "regions" kind, else None."""
    from ...teacher.regions import load_proposals

    s = cfg.MODEL.DISTILL.SEM_SEG
    if s.DENSE_TARGETS != "regions" or not s.PROPOSALS:
        return None
    return load_proposals(s.PROPOSALS, list(image_ids), cfg.MODEL.DISTILL.NUM_DISTILL_PROPOSALS)


# ---------------------------------------------------------------- data
def load_sem_seg_samples(dataset_dicts: Sequence[dict], num_values: int, ignore_value: int = 255) -> list[dict]:
    """Read every image and label map once (the synthetic benchmark fits in memory), with the label checks.

    Returns dicts {"image_id", "file_name", "image": (3, H, W) uint8, "labels": (H, W) int64 pixel values}.
    """
    from ...data.images import read_image_rgb

    out = []
    for d in dataset_dicts:
        if "sem_seg_file_name" not in d:
            raise DistillInputError(f"image {d.get('image_id')} has no sem_seg_file_name", d.get("file_name"))
        img = read_image_rgb(d["file_name"])
        path = d["sem_seg_file_name"]
        # decoded without the value check: check_sem_seg_labels gives the fuller message
        lab = read_sem_seg_png(path, num_classes=1 << 16, ignore_label=ignore_value)
        lab = check_sem_seg_labels(lab, path, num_values, ignore_value, tuple(img.shape[1:]))
        out.append({"image_id": d["image_id"], "file_name": d["file_name"], "image": img,
                    "labels": torch.from_numpy(lab)})
    return out


def dense_targets_for(samples: Sequence[dict], teacher, tcfg: DenseTargetConfig, cache_root: str | None,
                      boxes: dict | None = None, progress: bool = False, store=None) -> dict:
    """{image_id: (D, h, w) fp16} for every sample: painted from `store` (a region store, "regions" kind) where
    it holds the image, else from the cache (filled on first use) or computed online; `boxes` {image_id: (N, 4)}
    for the "regions" kind."""
    from tqdm import tqdm

    cache = DenseTargetCache(cache_root, teacher, tcfg) if cache_root else None
    out = {}
    for s in tqdm(samples, desc=f"dense targets ({tcfg.kind})", disable=not progress, unit="img"):
        if store is not None and s["image_id"] in store:
            out[s["image_id"]] = dense_targets_from_store(store, s["image_id"], *s["image"].shape[1:], tcfg).half()
            continue
        if tcfg.kind == "regions" and boxes is None:
            raise DistillInputError(f"image {s['image_id']} is not in MODEL.DISTILL.SEM_SEG.REGION_STORE and no "
                                    "SEM_SEG.PROPOSALS give its boxes", s["file_name"])
        b = None if boxes is None else boxes.get(s["image_id"], torch.zeros(0, 4))
        out[s["image_id"]] = (cache.get(s["image_id"], s["image"], s["file_name"], b) if cache is not None
                              else compute_dense_targets(teacher, s["image"], tcfg, b).half())
    return out


def _batches(n: int, batch_size: int, seed: int):
    """Endless seeded shuffles of range(n), in batches."""
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield order[i:i + batch_size].tolist()
        epoch += 1


# ---------------------------------------------------------------- training / evaluation
def train_segmenter(cfg, model: OpenVocabSegmenter, samples: Sequence[dict], targets: dict | None = None,
                    max_iter: int | None = None, seed: int = 0, progress: bool = True,
                    cache_body: bool = True) -> dict:
    """SOLVER.* schedule (optimizer, warmup + cosine / multistep, clipping) with random horizontal flips
    (labels and teacher targets flipped alike). A frozen ResNet runs once per image and flip, not per step
    (`body_feature_cache`; `cache_body=False` runs it every step). Returns {"seconds" (the caching included),
    "time_per_iter", "last_losses"}."""
    from tqdm import tqdm

    from .trainer import build_lr_scheduler, build_optimizer, clip_gradients

    max_iter = int(max_iter or cfg.SOLVER.MAX_ITER)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = max_iter
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    distill = model.predictor.pixel_loss_weight > 0
    if distill and targets is None:
        raise DistillInputError("pixel distillation needs dense teacher targets")
    t0, last = time.perf_counter(), {}
    cache = body_feature_cache(model, samples) if cache_body else None
    model.train()
    batch_iter = _batches(len(samples), min(cfg.SOLVER.IMS_PER_BATCH, len(samples)), seed)
    for _ in tqdm(range(max_iter), desc="semseg", disable=not progress, dynamic_ncols=True):
        idx = next(batch_iter)
        flips = rng.random(len(idx)) < 0.5
        imgs = [samples[i]["image"].flip(-1) if f else samples[i]["image"] for i, f in zip(idx, flips)]
        labs = [samples[i]["labels"].flip(-1) if f else samples[i]["labels"] for i, f in zip(idx, flips)]
        tg = None
        if distill:
            tg = [targets[samples[i]["image_id"]] for i in idx]
            tg = [t.flip(-1) if f else t for t, f in zip(tg, flips)]
        body = None
        if cache is not None:
            picked = [cache[i][int(f)] for i, f in zip(idx, flips)]
            body = {k: torch.stack([p[k] for p in picked]) for k in picked[0]}
        losses = model(imgs, _pad_labels(labs, model.predictor.ignore_value), tg, body_features=body)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"semantic segmentation loss became {total.item()}")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
            clip_gradients(cfg, model)  # CLIP_TYPE as the detector reads it
        optimizer.step()
        scheduler.step()
        last = {k: round(v.item(), 4) for k, v in losses.items()}
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "time_per_iter": seconds / max(max_iter, 1), "last_losses": last}


BODY_CACHE_MAX_BYTES = 2 << 30


@torch.no_grad()
def body_feature_cache(model: OpenVocabSegmenter, samples: Sequence[dict], batch_size: int = 16,
                       max_bytes: int = BODY_CACHE_MAX_BYTES) -> list | None:
    """The frozen ResNet's outputs for every sample as is and flipped, so training steps run only the FPN and the
    branch: [(as-is, flipped)] per sample, each {"0".."3": (C_l, H / s_l, W / s_l)}.

    None (each step runs the ResNet) when any of its weights trains, it has BatchNorm (running statistics move
    in training), the images differ in size (a batch pads them), or the cache would exceed `max_bytes`.
    """
    body = model.backbone.body
    if any(p.requires_grad for p in body.parameters()) or any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in body.modules()):
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
        chunk = samples[i:i + batch_size]
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


@torch.no_grad()
def predict_sem_seg(model: OpenVocabSegmenter, images: Sequence[torch.Tensor], batch_size: int = 16
                    ) -> list[torch.Tensor]:
    """(3, H, W) RGB images → (H, W) pixel values of the model's current vocabulary, one per image (with
    `model.flip_test`: the class of the highest mean probability over the image and its mirror)."""
    was = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(images), batch_size):
            chunk = list(images[i:i + batch_size])
            logits = model(chunk)
            if model.flip_test:
                # the padded batch is mirrored whole, so a padded image's mirror must be shifted back
                mirrored = model([im.flip(-1) for im in chunk]).softmax(1)
                probs = logits.softmax(1)
                for k, im in enumerate(chunk):
                    w = im.shape[2]
                    probs[k, :, :, :w] += mirrored[k, :, :, :w].flip(-1)
                logits = probs
            pred = model.predictor.predict(logits)
            out += [p[: im.shape[1], : im.shape[2]].cpu() for p, im in zip(pred, chunk)]
    finally:
        model.train(was)
    return out


def evaluate_segmenter(model: OpenVocabSegmenter, samples: Sequence[dict], evaluator: SemSegEvaluator) -> dict:
    """Predict every sample and score it with `evaluator` (pixel-value label space)."""
    evaluator.reset()
    preds = predict_sem_seg(model, [s["image"] for s in samples])
    for p, s in zip(preds, samples):
        evaluator.update(p, s["labels"])
    return evaluator.compute()


# ---------------------------------------------------------------- the synthetic benchmark
def _synthetic_vocab(root, teacher):
    from ...data import synthetic_dataset

    _, meta = synthetic_dataset(root, "val")
    names = list(meta.thing_classes)
    emb = teacher.encode_text(names, "vild")
    prov = {**teacher.provenance(), "templates": "vild", "vocabulary": "synthetic"}
    base = meta.contiguous_ids("base")
    all_vocab = ClassEmbeddings(emb, names, prov)
    base_vocab = ClassEmbeddings(emb[base], [names[i] for i in base], prov)
    ids = list(meta.category_ids)
    return meta, all_vocab, base_vocab, ids, [ids[i] for i in base]


def synthetic_evaluator(meta) -> SemSegEvaluator:
    """Pixel-value space of the synthetic benchmark: 0 background (counted as base), then category ids."""
    n = max(meta.category_ids) + 1
    names = ["background"] + [""] * (n - 1)
    for cid, name in zip(meta.category_ids, meta.thing_classes):
        names[cid] = name
    base = [0] + [meta.category_ids[i] for i in meta.contiguous_ids("base")]
    novel = [meta.category_ids[i] for i in meta.contiguous_ids("novel")]
    return SemSegEvaluator(n, 255, base, novel, names)


def load_semseg_config(overrides: Sequence[str] = (), config_file: str | None = None):
    from ...config import load_config

    return load_config(config_file or SEMSEG_CONFIG, list(overrides))


def train_and_evaluate_segmenter(root: str | os.PathLike, out_dir: str | os.PathLike, teacher, cfg=None,
                                 variants: dict | None = None, max_iter: int | None = None,
                                 num_train: int | None = None, num_val: int | None = None,
                                 progress: bool = True) -> dict:
    """The quickstart's segmentation stage: the pixel-distillation ablation on the synthetic benchmark.

    Trains each variant with the same schedule, seed and start (MODEL.WEIGHTS: the detector's backbone, else
    from scratch) on the base classes (novel pixels ignored), evaluates on the validation images with all
    classes, and saves each model and the metrics.

    Args:
        root: the synthetic benchmark folder.
        out_dir: models (`<variant>/model_final.pth`), cached dense targets, `metrics.json`.
        teacher: a `Teacher` (text embeddings and dense targets).
        cfg: config (default configs/synthetic/semseg_r18_fpn_quick.yaml).
        variants: {row name: pixel loss weight or None for the config's}; default CE only and CE + pixel
            distillation.
        num_train / num_val: use the first images only (tests, quick looks).
    Returns:
        {"rows": {variant: metrics}, "dense_targets": kind, "dense_target_seconds", "train_seconds": {...},
         "time_per_iter", "max_iter", "num_train", "num_val", "init" (MODEL.WEIGHTS or "scratch")}.
    """
    from ...data import synthetic_dataset

    cfg = cfg if cfg is not None else load_semseg_config()
    if cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):  # fail before the dense targets
        raise DistillInputError(_NO_STUDENT, cfg.MODEL.WEIGHTS)
    out = Path(out_dir)
    variants = variants or VARIANTS
    meta, all_vocab, base_vocab, all_ids, base_ids = _synthetic_vocab(root, teacher)
    s = cfg.MODEL.DISTILL.SEM_SEG
    n_values = max(all_ids) + 1
    train_dicts, _ = synthetic_dataset(root, "train")
    val_dicts, _ = synthetic_dataset(root, "val")
    train = load_sem_seg_samples(train_dicts[:num_train], n_values, s.IGNORE_VALUE)
    val = load_sem_seg_samples(val_dicts[:num_val], n_values, s.IGNORE_VALUE)
    tcfg = dense_target_config(cfg)
    targets, t_targets = None, 0.0
    if any(w is None or w > 0 for w in variants.values()):
        t0 = time.perf_counter()
        boxes = load_region_boxes(cfg, [d["image_id"] for d in train_dicts])
        store = open_region_store(s.REGION_STORE, teacher, tcfg) if tcfg.kind == "regions" and s.REGION_STORE \
            else None
        targets = dense_targets_for(train, teacher, tcfg, s.DENSE_TARGET_CACHE or str(out / "dense_targets"),
                                    boxes, progress, store)
        t_targets = time.perf_counter() - t0
    evaluator = synthetic_evaluator(meta)
    rows, seconds, per_iter = {}, {}, {}
    for name, weight in variants.items():
        vcfg = cfg.clone()
        vcfg.defrost()
        if weight is not None:
            vcfg.MODEL.DISTILL.PIXEL_LOSS_WEIGHT = float(weight)
        seed = cfg.SEED if cfg.SEED >= 0 else 0
        torch.manual_seed(seed)
        model = build_sem_seg_model(vcfg, base_vocab, base_ids)
        if vcfg.MODEL.WEIGHTS:
            load_student_backbone(model, vcfg.MODEL.WEIGHTS)
        stats = train_segmenter(vcfg, model, train, targets, max_iter, seed, progress)
        save_segmenter(model, out / _slug(name) / "model_final.pth", vcfg)
        model.predictor.set_vocabulary(all_vocab, all_ids)
        rows[name] = evaluate_segmenter(model, val, evaluator)
        seconds[name], per_iter[name] = stats["seconds"], stats["time_per_iter"]
        logger.info("%s: %s", name, {k: rows[name][k] for k in ("mIoU_base", "mIoU_novel", "hIoU", "pACC")})
    result = {"rows": rows, "dense_targets": tcfg.kind, "dense_target_seconds": t_targets, "train_seconds": seconds,
              "time_per_iter": per_iter, "max_iter": int(max_iter or cfg.SOLVER.MAX_ITER),
              "num_train": len(train), "num_val": len(val), "init": cfg.MODEL.WEIGHTS or "scratch"}
    atomic_write_json(out / "metrics.json", result, indent=1)
    return result


def _slug(name: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


TABLE_KEYS = (("mIoU_base", "mIoU base"), ("mIoU_novel", "mIoU novel"), ("hIoU", "hIoU"), ("mIoU", "mIoU all"),
              ("pACC", "pixel acc"))


def format_table(rows: dict) -> str:
    """Markdown table: one row per variant, base / novel / harmonic-mean mIoU, mIoU, pixel accuracy."""
    lines = ["| method | " + " | ".join(k[1] for k in TABLE_KEYS) + " |", "|---" * (len(TABLE_KEYS) + 1) + "|"]
    for name, m in rows.items():
        cells = ["-" if m.get(k) is None else f"{m[k]:.1f}" for k, _ in TABLE_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- checkpoints and demo
def save_segmenter(model: OpenVocabSegmenter, path: str | os.PathLike, cfg) -> None:
    """Atomic {"model": state_dict, "config": yaml, "vocabulary": names, "class_values"}."""
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "config": cfg.dump(),
                "vocabulary": model.predictor.classifier.class_names,
                "class_values": model.predictor.label_map.class_values}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_segmenter(path: str | os.PathLike, embed_dim: int) -> OpenVocabSegmenter:
    """A saved segmenter (its config travels with it); the vocabulary is set by the caller."""
    from ...config import get_cfg

    if not os.path.isfile(path):
        raise DistillInputError("segmenter checkpoint not found", path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or not {"model", "config", "class_values"} <= set(ckpt):
        raise DistillInputError("not a segmenter checkpoint (no model / config / class_values): a detector's?", path)
    cfg = get_cfg()
    cfg.merge_from_other_cfg(type(cfg).load_cfg(ckpt["config"]))
    n = len(ckpt["class_values"])
    dummy = ClassEmbeddings(F.normalize(torch.ones(n, embed_dim), dim=-1), [f"c{i}" for i in range(n)])
    model = build_sem_seg_model(cfg, dummy, ckpt["class_values"])
    bad = model.load_state_dict(ckpt["model"], strict=False)
    if bad.missing_keys or bad.unexpected_keys:
        raise DistillInputError(f"checkpoint does not fit the segmenter ({(bad.missing_keys + bad.unexpected_keys)[:2]})",
                                path)
    return model.eval()


def segment_images(weights: str | os.PathLike, images: Sequence[torch.Tensor], class_names: Sequence[str], teacher,
                   templates: str = "vild") -> tuple[list[torch.Tensor], list[str]]:
    """Segment (3, H, W) RGB images with any vocabulary (encoded by `teacher`).

    Returns (H, W) int64 maps, 0 the background and i + 1 class_names[i], and the legend (label → name).
    """
    names = list(class_names)
    model = load_segmenter(weights, teacher.dim)
    vocab = ClassEmbeddings(teacher.encode_text(names, templates), names)
    model.predictor.set_vocabulary(vocab, list(range(1, len(names) + 1)))  # 0 stays the background
    legend = ["background"] + names if model.predictor.background else [""] + names
    return predict_sem_seg(model, images), legend


def draw_semseg(images: Sequence[torch.Tensor], preds: Sequence[torch.Tensor], legend: Sequence[str],
                out_path: str | os.PathLike, scale: int = 3) -> Path:
    """One picture: the (3, H, W) images side by side under their coloured (H, W) label maps, and the legend."""
    import cv2

    from ...utils.visualize_semseg import render_semseg

    tiles = [render_semseg(img.permute(1, 2, 0).numpy(), p.numpy(), legend, scale=scale, legend_on=k == len(images) - 1)
             for k, (img, p) in enumerate(zip(images, preds))]
    h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 4), (0, 0)), constant_values=255) for t in tiles]
    canvas = np.concatenate(tiles, 1)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(out.suffix or ".png", np.ascontiguousarray(canvas[:, :, ::-1]))
    if not ok:
        raise DistillInputError("cannot encode the picture", out)
    atomic_write_bytes(out, buf.tobytes())
    return out


def semseg_demo(weights: str | os.PathLike, image_paths: Sequence[str], class_names: Sequence[str], teacher,
                out_path: str | os.PathLike, templates: str = "vild", scale: int = 3) -> Path:
    """Segment each image with any vocabulary and write one picture (`draw_semseg`): label 0 is the background,
    i + 1 is class_names[i]."""
    from ...data.images import read_image_rgb

    images = [read_image_rgb(p) for p in image_paths]
    preds, legend = segment_images(weights, images, class_names, teacher, templates)
    return draw_semseg(images, preds, legend, out_path, scale)


def write_metrics_line(result: dict) -> str:
    """One line of JSON with the headline numbers of each row."""
    return json.dumps({name: {k: (None if m.get(k) is None else round(m[k], 2)) for k, _ in TABLE_KEYS}
                       for name, m in result["rows"].items()} | {"dense_targets": result["dense_targets"]})
