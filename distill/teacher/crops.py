"""Batched crop geometry for region embeddings: every box of an image cropped, resized and normalised
in one sampling call on the image tensor (no Python loop over boxes, no PIL).

Geometries:
- "center": what CLIP's preprocessing does to a PIL crop of the box (shortest side resized to the input
  size, then a centre crop): about the central square of side min(w, h), with that path's rounding.
- "stretch": the whole box warped to a square.
Parts of a (grown) box outside the image are black, as a PIL crop pads them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

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


def pil_center_boxes(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 4) XYXY → the source rectangle that a PIL crop + Resize(size) + CenterCrop(size) samples.

    Reproduces the rounding of that path: PIL rounds the crop box to integers, torchvision's Resize makes the
    long side int(size * long / short), and CenterCrop offsets by round((side - size) / 2).
    """
    b = torch.round(boxes)  # PIL's Image.crop rounds (half to even, like torch.round)
    w = (b[:, 2] - b[:, 0]).clamp(min=1)
    h = (b[:, 3] - b[:, 1]).clamp(min=1)
    short, long = torch.minimum(w, h), torch.maximum(w, h)
    new_long = torch.floor(size * long / short)
    new_w = torch.where(w <= h, torch.full_like(w, size), new_long)
    new_h = torch.where(w <= h, new_long, torch.full_like(h, size))
    left = torch.round((new_w - size) / 2)
    top = torch.round((new_h - size) / 2)
    sx, sy = w / new_w, h / new_h
    return torch.stack([b[:, 0] + left * sx, b[:, 1] + top * sy, b[:, 0] + (left + size) * sx,
                        b[:, 1] + (top + size) * sy], 1)


def _sampling_grid(boxes: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """(N, S, S, 2) grid_sample coordinates (align_corners=False) of pixel centres inside each box."""
    t = (torch.arange(size, dtype=boxes.dtype, device=boxes.device) + 0.5) / size  # (S,)
    xs = boxes[:, 0:1] + t[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (N, S) continuous x of each column
    ys = boxes[:, 1:2] + t[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    gx = (2 * xs / width - 1)[:, None, :].expand(-1, size, -1)
    gy = (2 * ys / height - 1)[:, :, None].expand(-1, -1, size)
    return torch.stack([gx, gy], -1)


def crop_resize_normalize(image: torch.Tensor, boxes: torch.Tensor, size: int, mean: Sequence[float],
                          std: Sequence[float], geometry: str = "center", mode: str = "bicubic",
                          antialias: bool = True) -> torch.Tensor:
    """Crop every box of one image, resize to (size, size) and normalise.

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
        boxes = pil_center_boxes(boxes, size)
    n = boxes.shape[0]
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    out = image.new_empty((n, 3, size, size))
    if n == 0:
        return out
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    level = torch.floor(torch.log2(side / size)).clamp(min=0).long() if antialias else torch.zeros_like(side).long()
    _, height, width = image.shape
    pyramid = [image]  # level k: the image halved k times (each level from the one above: cheap)
    for lvl in torch.unique(level).tolist():
        idx = torch.nonzero(level == lvl).flatten()
        while len(pyramid) <= lvl:
            prev = pyramid[-1]
            h, w = max(1, math.ceil(prev.shape[1] / 2)), max(1, math.ceil(prev.shape[2] / 2))
            pyramid.append(F.interpolate(prev[None], size=(h, w), mode="bilinear", antialias=True,
                                         align_corners=False)[0])
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
