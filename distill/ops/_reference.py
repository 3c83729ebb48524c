"""Pure-PyTorch multi-level RoIAlign: the readable definition of the compiled op and its fallback.

Same semantics as detectron2's ROIPooler with ROIAlignV2. Bilinear RoIAlign is separable: a RoI's
output plane is Wy @ F[window] @ Wx^T, with Wy (out_h, S_y) and Wx (out_w, S_x) the summed sample
weights over the window of rows and columns the samples touch. Unlike the compiled op this
synchronises with the host (to size the sampling grid and the windows) and is much slower.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Gathered windows are processed in RoI chunks of at most this many elements.
_CHUNK_ELEMENTS = 1 << 24


def assign_levels(
    boxes: Tensor, min_level: int, num_levels: int, canonical_box_size: float, canonical_level: int
) -> Tensor:
    """Level index in [0, num_levels) per box, as detectron2's `assign_boxes_to_levels`.

    boxes: (K, 4) x0, y0, x1, y1 in image pixels. Returns (K,) int64. Empty, inverted or NaN boxes
    go to the finest level.
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    level = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_box_size + 1e-8))
    level = torch.where(area > 0, level, torch.full_like(level, min_level))
    level = level.clamp(min=min_level, max=min_level + num_levels - 1)
    return level.to(torch.int64) - min_level


def _axis_weights(
    lo: Tensor, hi: Tensor, scale: Tensor, size: Tensor, bins: int, sampling_ratio: int, aligned: bool
):
    """Per-RoI sampling weights along one axis.

    lo, hi, scale: (K,) RoI edges in image pixels and the RoI level's scale; size: (K,) map size along
    the axis. Returns (weights (K, bins, S), start (K,) int64) where weights[k, p, s] is the weight of
    pixel start[k] + s in output bin p, with the 1/grid sample average folded in.
    """
    offset = 0.5 if aligned else 0.0
    start = lo * scale - offset
    length = hi * scale - offset - start
    if not aligned:
        length = length.clamp(min=1.0)
    bin_size = length / bins
    if sampling_ratio > 0:
        grid = torch.full_like(length, float(sampling_ratio))
    else:
        grid = torch.ceil(length / bins)
    max_grid = max(int(grid.max().item()), 1) if grid.numel() else 1
    b = torch.arange(bins, device=lo.device, dtype=lo.dtype)[None, :, None]
    i = torch.arange(max_grid, device=lo.device, dtype=lo.dtype)[None, None, :]
    g = grid[:, None, None]
    pos = (
        start[:, None, None]
        + b * bin_size[:, None, None]
        + (i + 0.5) * bin_size[:, None, None] / g.clamp(min=1)
    )
    size_f = size.to(lo.dtype)[:, None, None]
    valid = (i < g) & (pos >= -1) & (pos <= size_f)
    pos = pos.clamp(min=0)
    low = pos.to(torch.int64)
    at_edge = low >= size[:, None, None] - 1
    low = torch.where(at_edge, size[:, None, None] - 1, low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(pos), pos - low.to(pos.dtype))
    inv_grid = torch.where(valid, 1.0 / g.clamp(min=1), torch.zeros_like(pos))
    w_low, w_high = (1 - frac) * inv_grid, frac * inv_grid

    big = torch.iinfo(torch.int64).max
    first = torch.where(valid, low, big).amin(dim=(1, 2))
    first = torch.where(first == big, 0, first)
    last = torch.where(valid, high, -1).amax(dim=(1, 2))
    span = max(int((last - first + 1).max().item()), 1) if lo.numel() else 1
    index = torch.cat([low - first[:, None, None], high - first[:, None, None]], dim=2)
    index = torch.where(torch.cat([valid, valid], dim=2), index, 0).flatten(1)
    value = torch.cat([w_low, w_high], dim=2).flatten(1)
    rows = (torch.arange(bins, device=lo.device)[:, None] * span).expand(bins, 2 * max_grid).flatten()
    weights = torch.zeros(lo.shape[0], bins * span, dtype=lo.dtype, device=lo.device)
    weights.scatter_add_(1, index + rows[None, :], value)
    return weights.view(-1, bins, span), first


def multilevel_roi_align_reference(
    features: list[Tensor],
    rois: Tensor,
    output_size: tuple[int, int],
    strides: list[int],
    sampling_ratio: int = 0,
    aligned: bool = True,
    canonical_box_size: float = 224,
    canonical_level: int = 4,
) -> Tensor:
    """Reference multi-level RoIAlign. Arguments as `distill.ops.multilevel_roi_align` (already
    validated); returns (K, C, out_h, out_w) in the features' dtype, accumulated in fp32 or fp64."""
    out_h, out_w = output_size
    dtype = features[0].dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    channels = features[0].shape[1]
    rois = rois.to(acc)
    device = rois.device
    min_level = int(math.log2(strides[0]))
    level = assign_levels(rois[:, 1:], min_level, len(features), canonical_box_size, canonical_level)
    scale = torch.tensor([1.0 / s for s in strides], dtype=acc, device=device)[level]
    heights = torch.tensor([f.shape[2] for f in features], device=device)
    widths = torch.tensor([f.shape[3] for f in features], device=device)
    wy, y0 = _axis_weights(rois[:, 2], rois[:, 4], scale, heights[level], out_h, sampling_ratio, aligned)
    wx, x0 = _axis_weights(rois[:, 1], rois[:, 3], scale, widths[level], out_w, sampling_ratio, aligned)

    # All levels as one (B, N, C) table, so every RoI gathers its window with one index.
    table = torch.cat([f.flatten(2) for f in features], dim=2).transpose(1, 2)
    sizes = torch.tensor([0] + [f.shape[2] * f.shape[3] for f in features[:-1]], device=device)
    level_offset = torch.cumsum(sizes, 0)[level]
    span_y, span_x = wy.shape[2], wx.shape[2]
    rows = torch.minimum(y0[:, None] + torch.arange(span_y, device=device), heights[level][:, None] - 1)
    cols = torch.minimum(x0[:, None] + torch.arange(span_x, device=device), widths[level][:, None] - 1)
    index = level_offset[:, None, None] + rows[:, :, None] * widths[level][:, None, None] + cols[:, None, :]
    batch_index = rois[:, 0].to(torch.int64)

    chunk = max(1, _CHUNK_ELEMENTS // max(1, span_y * span_x * channels))
    outputs = []
    for k in range(0, rois.shape[0], chunk):
        sl = slice(k, k + chunk)
        window = table[batch_index[sl, None, None], index[sl]].to(acc)  # (k, S_y, S_x, C)
        outputs.append(torch.einsum("kpy,kyxc,kqx->kcpq", wy[sl], window, wx[sl]))
    if not outputs:
        return features[0].new_zeros((0, channels, out_h, out_w))
    return torch.cat(outputs).to(dtype)
