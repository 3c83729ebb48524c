"""Batched crops for region embeddings: every box of an image cropped, resized and normalised in a few
tensor ops on the image (no Python loop over boxes, no PIL), reproducing the per-box PIL path.

Geometries:
- "center": what CLIP's preprocessing does to a PIL crop of the box (shortest side resized to the input
  size, then a centre crop), rounding included: PIL rounds the box, Resize floors the long side,
  CenterCrop rounds its offsets.
- "stretch": the whole (rounded) box resized to a square.
Resampling is PIL's: separable bicubic with a = -0.5, the support widened by the downscale factor
(antialiasing), taps limited to the crop and renormalised; parts of a box outside the image are black, as
a PIL crop pads them; the result is quantised to 8 bits like PIL's output.
"""
from __future__ import annotations

from typing import Sequence

import torch

GEOMETRIES = ("center", "stretch")


def scale_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, 4) XYXY → boxes grown about their centre by `scale` (1.5: each side moves out by w/4 or h/4).

    Returns a new tensor: the input is never modified.
    """
    if scale == 1.0:
        return boxes.clone()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    dx, dy = 0.5 * (scale - 1.0) * w, 0.5 * (scale - 1.0) * h
    return torch.stack([boxes[:, 0] - dx, boxes[:, 1] - dy, boxes[:, 2] + dx, boxes[:, 3] + dy], 1)


def center_square(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) XYXY → the central square of side min(w, h) of each box."""
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
    half = 0.5 * torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return torch.stack([cx - half, cy - half, cx + half, cy + half], 1)


def _bicubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """PIL's bicubic filter (support 2)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _taps(start: torch.Tensor, length: torch.Tensor, resized: torch.Tensor, offset: torch.Tensor, size: int,
          limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's 1-D resampling coefficients for output pixels offset .. offset + size of each crop.

    Args: (N,) crop start (image pixels), crop length, resized length, centre-crop offset; `limit` is the
    image size along this axis (pixels outside it are black).
    Returns: idx (N, size, K) image coordinates clamped into the image, w (N, size, K) weights.
    """
    scale = length / resized
    filt = scale.clamp(min=1.0)  # downscaling widens the filter: antialiasing
    support = 2.0 * filt
    center = (offset[:, None] + torch.arange(size, dtype=scale.dtype, device=scale.device) + 0.5) * scale[:, None]
    lo = torch.floor(center - support[:, None] + 0.5).clamp(min=0)
    hi = torch.minimum(torch.floor(center + support[:, None] + 0.5), length[:, None])
    k = int(torch.ceil(support.max()).item()) * 2 + 1
    tap = lo[..., None] + torch.arange(k, dtype=scale.dtype, device=scale.device)  # crop coordinates
    w = _bicubic((tap - center[..., None] + 0.5) / filt[:, None, None]) * (tap < hi[..., None])
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
    pos = start[:, None, None] + tap
    w = w * ((pos >= 0) & (pos < limit))  # black outside the image, still counted by the normalisation
    return pos.clamp(0, limit - 1).long(), w


def _geometry(boxes: torch.Tensor, size: int, geometry: str):
    """Rounded crop windows and where the output square sits in the resized crop (PIL path's rounding)."""
    b = torch.round(boxes)  # PIL's Image.crop rounds (half to even, like torch.round)
    w = (b[:, 2] - b[:, 0]).clamp(min=1)
    h = (b[:, 3] - b[:, 1]).clamp(min=1)
    if geometry == "stretch":
        full = torch.full_like(w, size)
        return b, w, h, full, full, torch.zeros_like(w), torch.zeros_like(h)
    new_long = torch.floor(size * torch.maximum(w, h) / torch.minimum(w, h))
    new_w = torch.where(w <= h, torch.full_like(w, size), new_long)
    new_h = torch.where(w <= h, new_long, torch.full_like(h, size))
    return b, w, h, new_w, new_h, torch.round((new_w - size) / 2), torch.round((new_h - size) / 2)


def crop_resize_normalize(image: torch.Tensor, boxes: torch.Tensor, size: int, mean: Sequence[float],
                          std: Sequence[float], geometry: str = "center", chunk: int | None = None) -> torch.Tensor:
    """Crop every box of one image, resize to (size, size) and normalise, as the PIL path would.

    Args:
        image: (3, H, W) uint8 or float in [0, 1].
        boxes: (N, 4) XYXY in pixels of `image`; may extend past the image (black there).
        geometry: "center" or "stretch" (see module doc).
        chunk: crops resampled together; default keeps the (3, chunk, size, W) intermediate near 1M values
            (the vertical pass runs over the union of the chunk's columns, so big chunks waste work).
    Returns:
        (N, 3, size, size) float, normalised with mean / std.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown crop geometry {geometry!r}; expected one of {GEOMETRIES}")
    img = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    _, height, width = img.shape
    n = boxes.shape[0]
    out = img.new_empty((n, 3, size, size))
    b, w, h, new_w, new_h, left, top = _geometry(boxes.to(img.device, torch.float64), size, geometry)
    chunk = chunk or max(1, 1_000_000 // (3 * size * width))
    for s in range(0, n, chunk):
        e = slice(s, min(n, s + chunk))
        iy, wy = _taps(b[e, 1], h[e], new_h[e], top[e], size, height)
        ix, wx = _taps(b[e, 0], w[e], new_w[e], left[e], size, width)
        x0, x1 = int(ix.min()), int(ix.max()) + 1  # only the columns these crops touch
        cols = img[:, :, x0:x1]
        rows = torch.zeros(3, iy.shape[0], size, x1 - x0, dtype=img.dtype, device=img.device)
        for k in range(iy.shape[-1]):  # vertical pass: a few taps, each a row gather
            rows += wy[None, :, :, k, None].to(img.dtype) * cols[:, iy[:, :, k]]
        acc = torch.zeros(3, iy.shape[0], size, size, dtype=img.dtype, device=img.device)
        for k in range(ix.shape[-1]):  # horizontal pass
            idx = (ix[:, :, k] - x0)[None, :, None, :].expand(3, -1, size, -1)
            acc += wx[None, :, None, :, k].to(img.dtype) * torch.gather(rows, 3, idx)
        out[e] = acc.transpose(0, 1)
    out = torch.round(out.clamp_(0.0, 1.0) * 255) / 255  # PIL's output is 8-bit
    mean_t = torch.tensor(mean, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
    return (out - mean_t) / std_t
