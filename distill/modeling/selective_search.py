"""Class-agnostic box proposals without training: selective search (Uijlings et al., 2013) over watershed
superpixels, in OpenCV core and NumPy.

OpenCV's own selective search lives in the contrib package (`cv2.ximgproc`), which cannot share an
environment with the `opencv-python` that `lvis` depends on (both own the `cv2` folder), and scikit-image's
Felzenszwalb segmentation is not a dependency. So the initial regions here are watershed superpixels seeded
on a regular grid (`cv2.watershed`), and the hierarchical grouping is selective search's: neighbouring
regions merged greedily by a sum of colour, texture, size and fill similarities, every merged region's box a
proposal, several grid steps and similarity strategies for diversity. Deterministic (no random ranking), and
the image is resized internally so a photo costs about what a 256-pixel image costs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import cv2
import numpy as np
import torch

COLOUR_BINS = 25  # selective search's colour histogram: 25 bins per channel
TEXTURE_BINS = 10  # and 10 bins per orientation, 8 orientations (here on the grey image)
ORIENTATIONS = 8
STRATEGIES = ("colour+texture+size+fill", "texture+size+fill")  # selective search "fast"'s two


@dataclass(frozen=True)
class SelectiveSearchConfig:
    """Settings of `selective_search` (defaults: a 256-pixel working size, superpixels of 1/16 and 1/24 of its
    side, both strategies)."""

    max_side: int = 256  # working size: the image's long side is resized to this (up or down)
    grid_fractions: tuple[float, ...] = (1 / 16, 1 / 24)  # superpixel spacing as a fraction of the long side
    strategies: tuple[str, ...] = STRATEGIES
    min_size_frac: float = 0.04  # drop boxes narrower or lower than this fraction of the image side
    dedup_iou: float = 0.9  # boxes overlapping a better-ranked one this much are dropped
    max_proposals: int = 300

    def __post_init__(self):
        unknown = set(self.strategies) - set(STRATEGIES)
        if unknown or not self.strategies:
            raise ValueError(f"unknown strategies {sorted(unknown)}; expected some of {STRATEGIES}")
        if self.max_side < 16 or self.max_proposals < 1 or not self.grid_fractions:
            raise ValueError("need max_side >= 16, max_proposals >= 1 and at least one grid fraction")
        if not all(0 < f <= 0.5 for f in self.grid_fractions):
            raise ValueError("grid fractions must be in (0, 0.5]")


def _to_hwc(image) -> np.ndarray:
    """(3, H, W) tensor or (H, W, 3) array, uint8 RGB → (H, W, 3) uint8 contiguous array."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (3, H, W) or (H, W, 3) RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image * (255.0 if image.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def superpixels(rgb: np.ndarray, step: int) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W) int64 labels 0..R-1: watershed from a grid of seeds `step` pixels apart."""
    h, w = rgb.shape[:2]
    markers = np.zeros((h, w), np.int32)
    ys = np.arange(step // 2, h, step)
    xs = np.arange(step // 2, w, step)
    markers[np.ix_(ys, xs)] = np.arange(1, ys.size * xs.size + 1, dtype=np.int32).reshape(ys.size, xs.size)
    cv2.watershed(np.ascontiguousarray(rgb[:, :, ::-1]), markers)
    labels = markers
    for _ in range(4):  # watershed lines (-1) take a neighbour's label
        holes = labels <= 0
        if not holes.any():
            break
        pad = np.pad(labels, 1, mode="edge")
        near = np.maximum.reduce([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]])
        labels = np.where(holes, near, labels)
    labels = np.where(labels <= 0, 1, labels)
    _, dense = np.unique(labels, return_inverse=True)  # seeds swallowed by a line leave gaps
    return dense.reshape(h, w).astype(np.int64)


def _histograms(labels: np.ndarray, values: np.ndarray, bins: int, n: int) -> np.ndarray:
    """Per-region L1-normalised histograms of (H, W, K) values in [0, 1] → (n, K * bins)."""
    k = values.shape[2]
    b = np.minimum((values * bins).astype(np.int64), bins - 1) + bins * np.arange(k)
    idx = labels[..., None] * (k * bins) + b
    hist = np.bincount(idx.ravel(), minlength=n * k * bins).reshape(n, k * bins).astype(np.float64)
    return hist / np.maximum(hist.sum(1, keepdims=True), 1e-12)


def _features(rgb: np.ndarray, labels: np.ndarray, n: int):
    """Per region: colour (n, 75) and texture (n, 80) histograms, sizes (n,), boxes (n, 4) XYXY inclusive."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float64) / 255.0
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    angle = (np.arctan2(gy, gx) + np.pi) / (2 * np.pi)  # [0, 1]
    orient = np.minimum((angle * ORIENTATIONS).astype(np.int64), ORIENTATIONS - 1)
    # one channel per orientation: the gradient magnitude where the pixel has that orientation, else 0
    per_orient = np.zeros(grey.shape + (ORIENTATIONS,), np.float64)
    np.put_along_axis(per_orient, orient[..., None], np.clip(mag / 4.0, 0, 1)[..., None], axis=2)
    colour = _histograms(labels, lab, COLOUR_BINS, n)
    texture = _histograms(labels, per_orient, TEXTURE_BINS, n)
    sizes = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    yy, xx = np.indices(labels.shape)
    flat = labels.ravel()
    boxes = np.stack(
        [
            np.full(n, labels.shape[1]),
            np.full(n, labels.shape[0]),
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
        ],
        1,
    )
    np.minimum.at(boxes[:, 0], flat, xx.ravel())
    np.minimum.at(boxes[:, 1], flat, yy.ravel())
    np.maximum.at(boxes[:, 2], flat, xx.ravel())
    np.maximum.at(boxes[:, 3], flat, yy.ravel())
    return colour, texture, sizes, boxes.astype(np.float64)


def _neighbours(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (i < j) of regions that touch horizontally or vertically."""
    pairs = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        diff = a != b
        pairs.append(np.stack([np.minimum(a[diff], b[diff]), np.maximum(a[diff], b[diff])], 1))
    both = np.unique(np.concatenate(pairs), axis=0)
    return {(int(i), int(j)) for i, j in both}


class _Grouping:
    """Selective search's greedy hierarchical grouping of one superpixel map under one strategy."""

    def __init__(self, colour, texture, sizes, boxes, image_area: float, strategy: str):
        # colour and texture similarities are both histogram intersections: one intersection of the two
        # histograms side by side is their sum
        hist = np.concatenate([colour, texture], 1) if strategy.startswith("colour") else texture
        self.hist = list(hist)
        self.sizes = [float(x) for x in sizes]
        self.boxes = [tuple(float(v) for v in b) for b in boxes]
        self.area = image_area
        self.alive = [True] * len(self.sizes)

    def similarity(self, i: int, j: int) -> float:
        size = self.sizes[i] + self.sizes[j]
        bi, bj = self.boxes[i], self.boxes[j]
        union = (max(bi[2], bj[2]) - min(bi[0], bj[0]) + 1) * (max(bi[3], bj[3]) - min(bi[1], bj[1]) + 1)
        hist = float(np.minimum(self.hist[i], self.hist[j]).sum())
        return hist + (1.0 - size / self.area) + (1.0 - (union - size) / self.area)

    def merge(self, i: int, j: int) -> int:
        si, sj = self.sizes[i], self.sizes[j]
        self.hist.append((si * self.hist[i] + sj * self.hist[j]) / (si + sj))
        self.sizes.append(si + sj)
        bi, bj = self.boxes[i], self.boxes[j]
        self.boxes.append((min(bi[0], bj[0]), min(bi[1], bj[1]), max(bi[2], bj[2]), max(bi[3], bj[3])))
        self.alive[i] = self.alive[j] = False
        self.alive.append(True)
        return len(self.sizes) - 1

    def run(self, pairs: set[tuple[int, int]]) -> list[np.ndarray]:
        """Merges until one region is left; returns the box (4,) XYXY inclusive of each merged region, in order."""
        adj: dict[int, set[int]] = {}
        for i, j in pairs:
            adj.setdefault(i, set()).add(j)
            adj.setdefault(j, set()).add(i)
        heap = [(-self.similarity(i, j), i, j) for i, j in sorted(pairs)]
        heapq.heapify(heap)
        out = []
        while heap:
            _, i, j = heapq.heappop(heap)
            if not (self.alive[i] and self.alive[j]):
                continue
            k = self.merge(i, j)
            near = (adj.pop(i, set()) | adj.pop(j, set())) - {i, j}
            adj[k] = near
            for m in sorted(near):
                adj[m] -= {i, j}
                adj[m].add(k)
                heapq.heappush(heap, (-self.similarity(m, k), m, k))
            out.append(np.array(self.boxes[k]))
        return out


def _dedup(boxes: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices of (N, 4) boxes (in rank order) kept after dropping near-duplicates of better-ranked kept ones:
    greedy NMS with the rank as the score."""
    from ..ops.nms import nms

    rank = -torch.arange(boxes.shape[0], dtype=boxes.dtype)
    return torch.sort(nms(boxes, rank, iou))[0]


def selective_search(
    image, cfg: SelectiveSearchConfig = SelectiveSearchConfig()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-agnostic proposals of one image.

    Args:
        image: (3, H, W) uint8 tensor or (H, W, 3) uint8 array, RGB.
    Returns:
        boxes (K, 4) float32 XYXY in the image's pixels, inside it, K <= cfg.max_proposals; and scores (K,)
        in (0, 1]: 1 / the region's level in its hierarchy (1: the last merge), the order of the proposals; a
        rank, not an objectness probability.
    """
    rgb = _to_hwc(image)
    h0, w0 = rgb.shape[:2]
    s = cfg.max_side / max(h0, w0)
    h, w = max(1, round(h0 * s)), max(1, round(w0 * s))
    if (h, w) != (h0, w0):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    found: list[np.ndarray] = []
    level: list[float] = []
    for frac in cfg.grid_fractions:
        labels = superpixels(rgb, max(2, round(frac * max(h, w))))
        n = int(labels.max()) + 1
        feats = _features(rgb, labels, n)
        pairs = _neighbours(labels)
        for strategy in cfg.strategies:
            merged = _Grouping(*feats, float(h * w), strategy).run(pairs)
            found += merged
            level += list(range(len(merged), 0, -1))  # 1: the last merge (the whole image)
    if not found:  # a single superpixel: the whole image is the one region
        found, level = [np.array([0.0, 0.0, w - 1.0, h - 1.0])], [1]
    boxes = torch.tensor(np.stack(found), dtype=torch.float64)
    boxes[:, 2:] += 1.0  # inclusive pixel bounds → XYXY edges
    # selective search's ranking without its random factor: by level in each hierarchy, the last merges (the
    # largest regions) first, the hierarchies interleaved; the score is 1 / level
    score = 1.0 / torch.tensor(level, dtype=torch.float64)
    big = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_size_frac * w) & (
        (boxes[:, 3] - boxes[:, 1]) >= cfg.min_size_frac * h
    )
    boxes, score = boxes[big], score[big]
    order = torch.argsort(-score, stable=True)
    boxes, score = boxes[order], score[order]
    keep = _dedup(boxes.float(), cfg.dedup_iou)[: cfg.max_proposals]
    scale = torch.tensor([w0 / w, h0 / h, w0 / w, h0 / h], dtype=torch.float64)
    out = (boxes[keep] * scale).clamp(min=0)
    out[:, 0::2] = out[:, 0::2].clamp(max=w0)
    out[:, 1::2] = out[:, 1::2].clamp(max=h0)
    return out.float(), score[keep].float()
