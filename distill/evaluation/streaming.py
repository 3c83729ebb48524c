"""Streaming COCO / LVIS box and mask evaluation: detections are matched image by image as they arrive and
only compact per-detection rows are kept; precision is accumulated from them at the end.

A kept row is one detection: category index, score, its rank key (image, rank in image and category; the
order COCOeval's stable sorts break score ties in) and two bit sets over (area range, IoU threshold): true
positive, ignored. Detections ignored everywhere, and detections of categories without ground truth, are not
kept. The numbers equal COCOeval / LVISEval's: same IoUs (pycocotools' `iou`), same greedy matching
(`matching.greedy_match`), same accumulation arithmetic.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

from ..utils.errors import DistillInputError
from .ground_truth import AREA_RANGES, IOU_THRESHOLDS, MAX_DETS, RECALL_THRESHOLDS, GroundTruth, out_of_range
from .matching import greedy_match, pad_groups

_RANK_BITS = 10  # ranks within an (image, category) stay below 2**10 (at most 300 detections)
_FIELDS = ("cat", "score", "key", "tp", "ignored")


class TaskAccumulator:
    """Compact rows of one task ("bbox" / "segm") over the images seen so far.

    `add_image` takes one image's detections (category indices, scores, boxes xywh or RLEs); matching runs
    when `chunk_groups` (image, category) groups are waiting, or on `rows()`.
    """

    def __init__(self, gt: GroundTruth, chunk_groups: int = 512):
        self.gt, self.chunk_groups = gt, chunk_groups
        self.thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
        self.useful = self.gt.num_gt.sum(axis=1) > 0  # categories whose rows can matter
        self._chunks: list[dict] = []
        self._pending: list[dict] = []
        self._groups = 0

    def add_image(self, image: int, cat: np.ndarray, score: np.ndarray, geom, area: np.ndarray) -> None:
        """cat, score, area (N,), geom (N, 4) boxes or N RLEs, already truncated and sorted by (cat, -score)."""
        gt = self.gt
        lo, hi = gt.start[image], gt.start[image + 1]
        unmatched_ig = out_of_range(area)
        if gt.protocol == "lvis":
            unmatched_ig |= np.isin(cat, gt.not_exhaustive[image])[:, None]
        groups = []
        bounds = np.flatnonzero(np.diff(cat, prepend=-1, append=-1)) if len(cat) else np.zeros(1, np.int64)
        gt_cat = gt.cat[lo:hi]
        for s, e in zip(bounds[:-1], bounds[1:]):
            rows = lo + np.flatnonzero(gt_cat == cat[s])
            if len(rows) == 0:
                continue
            iou = np.asarray(
                mask_utils.iou(geom[s:e], gt.geometry(rows, image), gt.crowd[rows].astype(np.uint8).tolist())
            )
            groups.append((s, iou.reshape(e - s, len(rows)), rows))
        rank = (
            np.arange(len(cat)) - np.repeat(bounds[:-1], np.diff(bounds))
            if len(cat)
            else np.zeros(0, np.int64)
        )
        self._pending.append(
            dict(
                cat=cat,
                score=score,
                key=(image << _RANK_BITS) + rank,
                unmatched_ig=unmatched_ig,
                groups=groups,
            )
        )
        self._groups += len(groups)
        if self._groups >= self.chunk_groups:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        gt, pend = self.gt, self._pending
        groups = [g for p in pend for g in p["groups"]]
        a_num, t_num = len(AREA_RANGES), len(self.thresholds)
        if groups:
            ious = pad_groups([g[1] for g in groups])
            g_max = ious.shape[2]
            gt_ig = np.ones((len(groups), a_num, g_max), dtype=bool)
            crowd = np.zeros((len(groups), g_max), dtype=bool)
            nonzero = np.zeros((len(groups), g_max), dtype=bool)
            for i, (_, _, rows) in enumerate(groups):
                gt_ig[i, :, : len(rows)] = gt.ignore[rows].T
                crowd[i, : len(rows)] = gt.crowd[rows]
                nonzero[i, : len(rows)] = gt.id_nonzero[rows]
            match = greedy_match(ious, gt_ig, crowd, self.thresholds)  # (B, A, T, D)
        gi = 0
        for p in pend:
            n = len(p["cat"])
            matched = np.zeros((n, a_num, t_num), dtype=bool)  # matched to a ground truth with a nonzero id
            ig = np.zeros((n, a_num, t_num), dtype=bool)
            for s, iou, _ in p["groups"]:
                d = iou.shape[0]
                m = match[gi, :, :, :d].transpose(2, 0, 1)  # (d, A, T)
                hit = m >= 0
                mc = np.where(hit, m, 0)
                g_ig = gt_ig[gi][np.arange(a_num)[None, :, None], mc]  # (d, A, T)
                ig[s : s + d] = hit & g_ig
                matched[s : s + d] = hit & nonzero[gi][mc]
                gi += 1
            ig |= ~matched & p["unmatched_ig"][:, :, None]
            tp = matched & ~ig
            keep = ~ig.reshape(n, a_num * t_num).all(axis=1) & self.useful[p["cat"]]  # n may be 0
            self._chunks.append(
                dict(
                    cat=p["cat"][keep].astype(np.int32),
                    score=p["score"][keep],
                    key=p["key"][keep],
                    tp=np.packbits(tp[keep].reshape(-1, a_num * t_num), axis=1),
                    ignored=np.packbits(ig[keep].reshape(-1, a_num * t_num), axis=1),
                )
            )
        self._pending, self._groups = [], 0

    def rows(self) -> dict:
        """All kept rows, concatenated: cat (N,) int32, score (N,), key (N,) int64, tp / ignored (N, 5) packed."""
        self._flush()
        if len(self._chunks) > 1:
            self._chunks = [{f: np.concatenate([c[f] for c in self._chunks]) for f in _FIELDS}]
        if not self._chunks:
            nb = (len(AREA_RANGES) * len(IOU_THRESHOLDS) + 7) // 8
            self._chunks = [
                dict(
                    cat=np.zeros(0, np.int32),
                    score=np.zeros(0),
                    key=np.zeros(0, np.int64),
                    tp=np.zeros((0, nb), np.uint8),
                    ignored=np.zeros((0, nb), np.uint8),
                )
            ]
        return self._chunks[0]

    def merge(self, rows: dict) -> None:
        """Add rows from another rank (or another accumulator of the same ground truth)."""
        self._flush()
        self._chunks.append({f: rows[f] for f in _FIELDS})


def accumulate(rows: dict, num_gt: np.ndarray) -> np.ndarray:
    """Kept rows + (K, A) ground-truth counts → precision (T, R, K, A), -1 where a category has no ground truth.

    The arithmetic is COCOeval.accumulate's (cumulative sums, tp / (tp + fp + eps), the running maximum
    from the right, precision at the first recall >= each threshold), so the values are bit-identical.
    """
    t_num, r_num = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    k_num, a_num = num_gt.shape
    precision = -np.ones((t_num, r_num, k_num, a_num))
    order = np.lexsort((rows["key"], -rows["score"], rows["cat"]))
    cat = rows["cat"][order]
    bounds = np.searchsorted(cat, np.arange(k_num + 1))
    width = a_num * t_num
    for k in np.flatnonzero(num_gt.sum(axis=1) > 0):
        sel = order[bounds[k] : bounds[k + 1]]
        tp = np.unpackbits(rows["tp"][sel], axis=1, count=width).astype(bool)
        ig = np.unpackbits(rows["ignored"][sel], axis=1, count=width).astype(bool)
        tp_sum = np.cumsum(tp, axis=0).astype(dtype=float)
        fp_sum = np.cumsum(~tp & ~ig, axis=0).astype(dtype=float)
        for a in range(a_num):
            if num_gt[k, a] == 0:
                continue
            cols = slice(a * t_num, (a + 1) * t_num)
            rc = tp_sum[:, cols] / num_gt[k, a]
            pr = tp_sum[:, cols] / (fp_sum[:, cols] + tp_sum[:, cols] + np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1], axis=0)[::-1]
            for t in range(t_num):
                idx = np.searchsorted(rc[:, t], RECALL_THRESHOLDS, side="left")
                q = np.zeros(r_num)
                ok = idx < len(sel)
                q[ok] = pr[idx[ok], t]
                precision[t, :, k, a] = q
    return precision


def prepare_image(gt: GroundTruth, image: int, cat: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of one image's detections the protocol evaluates, ordered by (category, -score).

    COCO: at most 100 per category; LVIS: the 300 best of the image, on categories present or negative.
    Ties keep the input order, as the reference evaluators' stable sorts do.
    """
    idx = np.arange(len(cat))
    if gt.protocol == "lvis":
        if len(idx) > MAX_DETS["lvis"]:
            idx = np.sort(np.argsort(-score, kind="stable")[: MAX_DETS["lvis"]])
        idx = idx[np.isin(cat[idx], gt.allowed[image])]
    idx = idx[np.lexsort((-score[idx], cat[idx]))]
    if gt.protocol == "coco" and len(idx):
        c = cat[idx]
        starts = np.flatnonzero(np.diff(c, prepend=-1))
        rank = np.arange(len(c)) - np.repeat(starts, np.diff(np.append(starts, len(c))))
        idx = idx[rank < MAX_DETS["coco"]]
    return idx


def check_detections(n: int, boxes, scores, masks) -> None:
    if boxes is not None and np.shape(boxes) != (n, 4):
        raise DistillInputError(f"boxes must be (N, 4) xywh, got shape {np.shape(boxes)}")
    if boxes is not None and not np.isfinite(np.asarray(boxes, dtype=np.float64)).all():
        raise DistillInputError("detection boxes hold NaN or inf")
    if np.shape(scores) != (n,):
        raise DistillInputError(f"scores must be (N,), got shape {np.shape(scores)}")
    if not np.isfinite(scores).all():
        raise DistillInputError(
            f"{int((~np.isfinite(scores)).sum())} detection score(s) are not finite (NaN or inf)"
        )
    if masks is not None and len(masks) != n:
        raise DistillInputError(f"{len(masks)} masks for {n} detections")
