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

from distill.ops import _loader, has_compiled_ops
from distill.ops.resample_crops import compiled_for as resample_crops_compiled
from distill.ops.resample_crops import resample_crops, resample_crops_reference

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


def _taps(
    start: torch.Tensor,
    length: torch.Tensor,
    resized: torch.Tensor,
    offset: torch.Tensor,
    size: int,
    limit: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's 1-D resampling coefficients for output pixels offset .. offset + size of each crop.

    Args: (N,) crop start (image pixels), crop length, resized length, centre-crop offset; `limit` is the
    image size along this axis (pixels outside it are black).
    Returns: idx (N, size, K) image coordinates clamped into the image, w (N, size, K) weights.
    """
    scale = length / resized
    filt = scale.clamp(min=1.0)  # downscaling widens the filter: antialiasing
    support = 2.0 * filt
    center = (offset[:, None] + torch.arange(size, dtype=scale.dtype, device=scale.device) + 0.5) * scale[
        :, None
    ]
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


def crop_taps(image: torch.Tensor, boxes: torch.Tensor, size: int, geometry: str = "center"):
    """PIL-exact taps of every box's crop, for `distill.ops.resample_crops`.

    Args: image (3, H, W); boxes (N, 4) XYXY in pixels of `image` (float64 keeps PIL's rounding exact).
    Returns: y_index, y_weight (N, size, K_y) and x_index, x_weight (N, size, K_x): int64 image rows /
        columns and float32 weights.
    """
    _, height, width = image.shape
    b, w, h, new_w, new_h, left, top = _geometry(boxes.to(image.device, torch.float64), size, geometry)
    if image.device.type == "cpu" and has_compiled_ops():  # the same taps, without ~40 small tensor ops
        iy, wy = torch.ops.distill.crop_taps(b[:, 1].contiguous(), h, new_h, top, size, height)
        ix, wx = torch.ops.distill.crop_taps(b[:, 0].contiguous(), w, new_w, left, size, width)
        return iy, wy, ix, wx
    iy, wy = _taps(b[:, 1], h, new_h, top, size, height)
    ix, wx = _taps(b[:, 0], w, new_w, left, size, width)
    return iy, wy.float(), ix, wx.float()


def crop_resize_normalize(
    image: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    geometry: str = "center",
    chunk: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop every box of one image, resize to (size, size) and normalise, as the PIL path would.

    Runs the fused `distill.ops.resample_crops` kernel where it is compiled for the image's device, else
    `crop_resize_normalize_reference`; both give the same values.

    Args:
        image: (3, H, W) uint8 or float in [0, 1].
        boxes: (N, 4) XYXY in pixels of `image`; may extend past the image (black there).
        geometry: "center" or "stretch" (see module doc).
        chunk: crops resampled together (bounds the (N, size, K) taps here, the intermediates on the
            reference path; default depends on the path).
        out: optional (N, 3, size, size) float32 on the image's device, e.g. a slice of the encoder's
            reused batch buffer: the crops are written there (no allocation, no copy).
    Returns:
        (N, 3, size, size) float32, normalised with mean / std (`out` when given).
    """
    _check_inputs(image, boxes, geometry)
    n = boxes.shape[0]
    if not resample_crops_compiled(image.device):
        if image.device.type == "cpu":
            _loader.require_or_warn()
        crops = crop_resize_normalize_reference(image, boxes, size, mean, std, geometry, chunk)
        return crops if out is None else out.copy_(crops)
    if out is None:
        out = torch.empty((n, image.shape[0], size, size), device=image.device)
    chunk = chunk or 256
    for s in range(0, n, chunk):
        resample_crops(
            image, *crop_taps(image, boxes[s : s + chunk], size, geometry), mean, std, out=out[s : s + chunk]
        )
    return out


def crop_resize_normalize_reference(
    image: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    geometry: str = "center",
    chunk: int | None = None,
) -> torch.Tensor:
    """Pure-PyTorch `crop_resize_normalize` (same arguments and result), the definition the fused kernel
    reproduces. `chunk` default keeps the (3, chunk, size, W) intermediate near 1M values (the vertical
    pass runs over the union of the chunk's columns, so big chunks waste work)."""
    _check_inputs(image, boxes, geometry)
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
        out[e] = resample_crops_reference(img, iy, wy.float(), ix, wx.float(), mean, std)
    return out


def _check_inputs(image: torch.Tensor, boxes: torch.Tensor, geometry: str) -> None:
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown crop geometry {geometry!r}; expected one of {GEOMETRIES}")
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a (3, H, W) tensor, got {_shape(image)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"image must be uint8 or floating, got {image.dtype}")
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) XYXY tensor, got {_shape(boxes)}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be floating (pixels), got {boxes.dtype}")


def _shape(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


class CropBatcher:
    """Cuts the crops of successive images' boxes into one reused (batch, 3, size, size) buffer, so the
    encoder reads full batches straight from it: no per-image tensors, no concatenation, no page faults.

        for image, boxes in items:
            for batch in batcher.add(image, boxes):   # each full batch, a view valid until the next step
                encode(batch)
        last = batcher.flush()                        # the partial batch (or None)
    """

    def __init__(
        self,
        batch_size: int,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        geometry: str = "center",
        device: str | torch.device = "cpu",
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.size, self.mean, self.std, self.geometry = size, tuple(mean), tuple(std), geometry
        self.buffer = torch.empty((batch_size, 3, size, size), device=device)
        self.filled = 0

    def add(self, image: torch.Tensor, boxes: torch.Tensor):
        """Crops of (N, 4) XYXY `boxes` of the (3, H, W) `image`; yields (batch, 3, S, S) views when full."""
        image = image.to(self.buffer.device)
        boxes = boxes.to(self.buffer.device)
        j, n, cap = 0, boxes.shape[0], self.buffer.shape[0]
        while j < n:
            m = min(n - j, cap - self.filled)
            crop_resize_normalize(
                image,
                boxes[j : j + m],
                self.size,
                self.mean,
                self.std,
                self.geometry,
                out=self.buffer[self.filled : self.filled + m],
            )
            self.filled += m
            j += m
            if self.filled == cap:
                self.filled = 0
                yield self.buffer

    def flush(self) -> torch.Tensor | None:
        """The crops added since the last full batch, (k, 3, S, S), or None."""
        k, self.filled = self.filled, 0
        return self.buffer[:k] if k else None
