"""COCOeval / LVISEval's greedy detection-to-ground-truth matching, vectorised over groups, area ranges and
IoU thresholds.

`evaluateImg` walks, for every threshold, the detections of one (image, category) best score first and gives
each the unmatched ground truth of highest IoU (>= the threshold; the last one on ties), preferring regular
over ignored ones; crowd ground truth (COCO only) can be matched again. This does the same walk once for a
whole batch of (image, category) groups: one step per detection rank, every group, area range and threshold
at once. Detections that reach no ground truth at the lowest threshold never change the state and are left
out of the walk.
"""

from __future__ import annotations

import numpy as np


def greedy_match(
    ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Matched ground-truth index per detection.

    Args:
        ious: (B, D, G) IoU of each group's detections (best score first) with its ground truth; padding
            entries are < 0.
        gt_ignore: (B, A, G) bool, ground truth ignored in each area range (crowd, flagged, or out of range).
        gt_crowd: (B, G) bool, ground truth that may be matched more than once.
        thresholds: (T,) IoU thresholds, already capped at 1 - 1e-10 as COCOeval caps them.
    Returns:
        (B, A, T, D) int64: index into G of the matched ground truth, -1 where unmatched.
    """
    b, d_num, g = ious.shape
    a, t = gt_ignore.shape[1], len(thresholds)
    out = np.full((b, a, t, d_num), -1, dtype=np.int64)
    if b == 0 or d_num == 0 or g == 0:
        return out
    live = ious.max(axis=2) >= thresholds.min()  # (B, D): detections that can match anything
    if not live.any():
        return out
    regular = ~gt_ignore[:, :, None, :]  # (B, A, 1, G)
    reusable = gt_crowd[:, None, None, :]
    taken = np.zeros((b, a, t, g), dtype=bool)
    thr = thresholds[None, None, :, None]
    bi, ai, ti = np.indices((b, a, t), sparse=False)
    for d in np.flatnonzero(live.any(axis=0)):
        rows = np.flatnonzero(live[:, d])
        v = ious[rows, d][:, None, None, :]  # (b', 1, 1, G)
        ok = (v >= thr) & ~(taken[rows] & ~reusable[rows])
        reg = ok & regular[rows]
        cand = np.where(reg.any(axis=-1, keepdims=True), reg, ok)
        hit = cand.any(axis=-1)  # (b', A, T)
        if not hit.any():
            continue
        best = g - 1 - np.argmax(np.where(cand, v, -1.0)[..., ::-1], axis=-1)  # last maximum on ties
        sel = bi[rows][hit], ai[rows][hit], ti[rows][hit]
        m = best[hit]
        out[sel[0], sel[1], sel[2], d] = m
        taken[sel[0], sel[1], sel[2], m] = True
    return out


def pad_groups(iou_list: list[np.ndarray]) -> np.ndarray:
    """Stack (D_i, G_i) IoU matrices into one (B, max D, max G) array padded with -1."""
    d_max = max(x.shape[0] for x in iou_list)
    g_max = max(x.shape[1] for x in iou_list)
    out = np.full((len(iou_list), d_max, g_max), -1.0)
    for i, x in enumerate(iou_list):
        out[i, : x.shape[0], : x.shape[1]] = x
    return out
