"""The segmenter on the synthetic benchmark: the quickstart's semseg stage and the pixel-distillation ablation
(the same schedule, seed and start for each variant; tables and the JSON line are the callers')."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from ....evaluation.sem_seg import SemSegEvaluator
from ....teacher.dense_targets import open_region_store
from ....teacher.embeddings import ClassEmbeddings
from ....utils.errors import DistillInputError
from ....utils.io import atomic_write_json
from .inference import evaluate_segmenter
from .model import NO_STUDENT, build_sem_seg_model, load_student_backbone, save_segmenter
from .targets import dense_target_config, dense_targets_for, load_region_boxes, load_sem_seg_samples
from .train import train_segmenter

logger = logging.getLogger(__name__)
SEMSEG_NAME = "synthetic/semseg_r18_fpn_quick.yaml"  # a shipped config (distill.model_zoo.get_config_file)
VARIANTS = {"CE only": 0.0, "CE + pixel distillation": None}  # None: MODEL.DISTILL.PIXEL_LOSS_WEIGHT


def synthetic_vocab(root, teacher):
    """(meta, all-class vocabulary, base vocabulary, all category ids, base category ids) of the benchmark."""
    from ....data import synthetic_dataset

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


def load_semseg_config(overrides=(), config_file: str | None = None):
    from ....config import load_config

    return load_config(config_file or semseg_config_file(), list(overrides))


def semseg_config_file() -> str:
    """The installed path of the segmenter's synthetic config."""
    from ....model_zoo import get_config_file

    return get_config_file(SEMSEG_NAME)


def train_and_evaluate_segmenter(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    teacher,
    cfg=None,
    variants: dict | None = None,
    max_iter: int | None = None,
    num_train: int | None = None,
    num_val: int | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """The pixel-distillation ablation on the synthetic benchmark.

    Trains each variant with the same schedule, seed and start (MODEL.WEIGHTS: the detector's backbone, else
    from scratch) on the base classes (novel pixels ignored), evaluates on the validation images with all
    classes, and saves each model and the metrics.

    Args:
        root: the synthetic benchmark folder.
        out_dir: per variant `<variant>/` (model_final.pth, checkpoints, metrics.json, log.txt), cached dense
            targets, `metrics.json`.
        teacher: a `Teacher` (text embeddings and dense targets).
        cfg: config (default the shipped synthetic/semseg_r18_fpn_quick.yaml).
        variants: {row name: pixel loss weight or None for the config's}; default CE only and CE + pixel
            distillation.
        num_train / num_val: use the first images only (tests, quick looks).
        resume: a variant with a model_final.pth is not trained again; one with checkpoints continues.
    Returns:
        {"rows": {variant: metrics}, "dense_targets": kind, "dense_target_seconds", "train_seconds": {...},
         "time_per_iter", "max_iter", "num_train", "num_val", "init" (MODEL.WEIGHTS or "scratch")}.
    """
    from ....data import synthetic_dataset

    cfg = cfg if cfg is not None else load_semseg_config()
    if cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):  # fail before the dense targets
        raise DistillInputError(NO_STUDENT, cfg.MODEL.WEIGHTS)
    out = Path(out_dir)
    variants = variants or VARIANTS
    meta, all_vocab, base_vocab, all_ids, base_ids = synthetic_vocab(root, teacher)
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
        store = (
            open_region_store(s.REGION_STORE, teacher, tcfg)
            if tcfg.kind == "regions" and s.REGION_STORE
            else None
        )
        targets = dense_targets_for(
            train, teacher, tcfg, s.DENSE_TARGET_CACHE or str(out / "dense_targets"), boxes, progress, store
        )
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
        final = out / _slug(name) / "model_final.pth"
        if resume and final.is_file():
            model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True)["model"])
            stats = {"seconds": 0.0, "time_per_iter": 0.0}
        else:
            if vcfg.MODEL.WEIGHTS:
                load_student_backbone(model, vcfg.MODEL.WEIGHTS)
            stats = train_segmenter(
                vcfg,
                model,
                train,
                targets,
                max_iter,
                seed,
                progress,
                output_dir=out / _slug(name),
                resume=resume,
            )
            save_segmenter(model, final, vcfg)
        model.predictor.set_vocabulary(all_vocab, all_ids)
        rows[name] = evaluate_segmenter(model, val, evaluator)
        seconds[name], per_iter[name] = stats["seconds"], stats["time_per_iter"]
        logger.info("%s: %s", name, {k: rows[name][k] for k in ("mIoU_base", "mIoU_novel", "hIoU", "pACC")})
    result = {
        "rows": rows,
        "dense_targets": tcfg.kind,
        "dense_target_seconds": t_targets,
        "train_seconds": seconds,
        "time_per_iter": per_iter,
        "max_iter": int(max_iter or cfg.SOLVER.MAX_ITER),
        "num_train": len(train),
        "num_val": len(val),
        "init": cfg.MODEL.WEIGHTS or "scratch",
    }
    atomic_write_json(out / "metrics.json", result, indent=1)
    return result


def _slug(name: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())
