"""Semantic segmentation: confusion-matrix mIoU with base / novel / harmonic-mean IoU (ZS3Net / SPNet style)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..utils.errors import DistillInputError


def read_sem_seg_png(
    path: str | os.PathLike,
    num_classes: int,
    ignore_label: int = 255,
    expected_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a label PNG as (H, W) int64; values must be < num_classes or the ignore label."""
    import cv2

    path = str(path)
    if not os.path.isfile(path):
        raise DistillInputError("semantic label file not found", path)
    from ..data.images import check_image_complete

    check_image_complete(path, "semantic label")  # a cut PNG is refused, not read in part
    lab = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise DistillInputError("cannot decode semantic label PNG", path)
    if lab.ndim != 2:
        raise DistillInputError(
            f"semantic labels must be a single-channel image, got shape {lab.shape}", path
        )
    if expected_hw is not None and tuple(lab.shape) != tuple(expected_hw):
        raise DistillInputError(
            f"label size {lab.shape[1]}x{lab.shape[0]} differs from the image's "
            f"{expected_hw[1]}x{expected_hw[0]}",
            path,
        )
    lab = lab.astype(np.int64)
    bad = (lab >= num_classes) & (lab != ignore_label)
    if bad.any():
        raise DistillInputError(
            f"label value {int(lab[bad].max())} exceeds the {num_classes} classes "
            f"(ignore value is {ignore_label})",
            path,
        )
    return lab


class SemSegEvaluator:
    """Accumulates a (C, C) confusion matrix (rows: ground truth, columns: prediction).

    Args:
        num_classes: C; labels are 0..C-1, `ignore_label` pixels are skipped.
        ignore_label: pixels of this label are not scored.
        base_classes: label indices of the base classes (background, if any, is usually base).
        novel_classes: label indices of the novel classes.
        class_names: optional names for the per-class IoU keys.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_label: int = 255,
        base_classes: Sequence[int] | None = None,
        novel_classes: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
    ):
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.base = list(base_classes) if base_classes is not None else list(range(num_classes))
        self.novel = list(novel_classes or [])
        self.class_names = (
            list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        )
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred, gt) -> None:
        """pred, gt: (H, W) integer arrays or tensors of the same shape."""
        pred = np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred).astype(np.int64)
        gt = np.asarray(gt.cpu() if hasattr(gt, "cpu") else gt).astype(np.int64)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
        valid = gt != self.ignore_label
        g, p = gt[valid], pred[valid]
        if g.size and (g.max() >= self.num_classes or g.min() < 0):
            raise ValueError(f"ground-truth label {int(g.max())} outside [0, {self.num_classes})")
        if p.size and (p.max() >= self.num_classes or p.min() < 0):
            raise ValueError(f"predicted label {int(p.max())} outside [0, {self.num_classes})")
        self.confusion += np.bincount(g * self.num_classes + p, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def compute(self) -> dict:
        """mIoU, fwIoU, pixel accuracy, mean accuracy, mIoU_base, mIoU_novel, hIoU, IoU-<name>; 0-100 scale."""
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        gt_count, pred_count = cm.sum(1), cm.sum(0)
        union = gt_count + pred_count - tp
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        acc = np.where(gt_count > 0, tp / np.maximum(gt_count, 1), np.nan)
        total = cm.sum()

        def mean(idx) -> float | None:
            v = iou[list(idx)] if len(idx) else np.array([])
            v = v[~np.isnan(v)]
            return float(v.mean()) * 100 if v.size else None

        out: dict[str, float | None] = {
            "mIoU": mean(range(self.num_classes)),
            "fwIoU": float(np.nansum(iou * gt_count) / total) * 100 if total else None,
            "pACC": float(tp.sum() / total) * 100 if total else None,
            "mACC": float(np.nanmean(acc)) * 100 if np.any(gt_count > 0) else None,
            "mIoU_base": mean(self.base),
            "mIoU_novel": mean(self.novel),
        }
        b, n = out["mIoU_base"], out["mIoU_novel"]
        out["hIoU"] = (2 * b * n / (b + n) if b and n else 0.0) if b is not None and n is not None else None
        for i, name in enumerate(self.class_names):
            out[f"IoU-{name}"] = None if np.isnan(iou[i]) else float(iou[i]) * 100
        return out


SEM_SEG_TABLE_KEYS = (
    ("mIoU_base", "mIoU base"),
    ("mIoU_novel", "mIoU novel"),
    ("hIoU", "hIoU"),
    ("mIoU", "mIoU all"),
    ("pACC", "pixel acc"),
)


def format_sem_seg_table(rows: dict) -> str:
    """Markdown table: one row per {name: metrics}, base / novel / harmonic-mean mIoU, mIoU, pixel accuracy."""
    keys = SEM_SEG_TABLE_KEYS
    lines = ["| method | " + " | ".join(k[1] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in rows.items():
        cells = ["-" if m.get(k) is None else f"{m[k]:.1f}" for k, _ in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
