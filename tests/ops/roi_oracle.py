"""Test helpers for the multi-level RoIAlign: a literal float64 scalar oracle, the detectron2-style
per-level torchvision baseline and random inputs with awkward boxes."""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

STRIDES = [4, 8, 16, 32]


def oracle_level(box, min_level, num_levels, canonical_box_size=224, canonical_level=4):
    """FPN eq. 1 as detectron2 computes it (float64 here), clamped to the available levels."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    if not area > 0:
        return 0
    level = math.floor(canonical_level + math.log2(math.sqrt(area) / canonical_box_size + 1e-8))
    return min(max(level, min_level), min_level + num_levels - 1) - min_level


def oracle_bilinear(plane, y, x):
    height, width = len(plane), len(plane[0])
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * plane[y_low][x_low]
        + hy * lx * plane[y_low][x_high]
        + ly * hx * plane[y_high][x_low]
        + ly * lx * plane[y_high][x_high]
    )


def oracle_roi_align(features, rois, output_size, strides, sampling_ratio=0, aligned=True):
    """Plain Python loops over RoIs, channels, bins and samples, in float64. Returns a nested list."""
    out_h, out_w = output_size
    min_level = int(math.log2(strides[0]))
    planes = [f.double().tolist() for f in features]
    result = []
    for roi in rois.double().tolist():
        b = int(roi[0])
        level = oracle_level(roi[1:], min_level, len(features))
        scale = 1.0 / strides[level]
        offset = 0.5 if aligned else 0.0
        x0, y0 = roi[1] * scale - offset, roi[2] * scale - offset
        roi_w, roi_h = roi[3] * scale - offset - x0, roi[4] * scale - offset - y0
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(grid_h * grid_w, 1)
        channels = []
        for plane in planes[level][b]:
            bins = [[0.0] * out_w for _ in range(out_h)]
            for ph in range(out_h):
                for pw in range(out_w):
                    total = 0.0
                    for iy in range(grid_h):
                        y = y0 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = x0 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            total += oracle_bilinear(plane, y, x)
                    bins[ph][pw] = total / count
            channels.append(bins)
        result.append(channels)
    return result


def torchvision_levels(features, rois, output_size, strides, sampling_ratio=0, aligned=True):
    """detectron2's ROIPooler, in plain torchvision: level assignment, one roi_align per level."""
    from distill.ops._reference import assign_levels

    min_level = int(math.log2(strides[0]))
    level = assign_levels(rois[:, 1:].float(), min_level, len(features), 224, 4)
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], *output_size))
    for i, (f, s) in enumerate(zip(features, strides)):
        idx = torch.nonzero(level == i).squeeze(1)
        if idx.numel():
            out[idx] = roi_align(f, rois[idx].to(f.dtype), output_size, 1.0 / s, sampling_ratio, aligned)
    return out


def random_features(batch=2, channels=3, image=(96, 128), strides=STRIDES, dtype=torch.float32, seed=0):
    """Feature maps with detectron2's FPN sizes ceil(image / stride)."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(
            batch, channels, math.ceil(image[0] / s), math.ceil(image[1] / s), generator=g, dtype=dtype
        )
        for s in strides
    ]


def random_rois(num, batch=2, image=(96, 128), seed=0, dtype=torch.float32):
    """(num, 5) RoIs: ordinary, tiny, huge, border-crossing and out-of-image boxes, batch indices
    shuffled."""
    g = torch.Generator().manual_seed(seed)
    h, w = image
    kinds = torch.randint(0, 5, (num,), generator=g)
    xy = torch.rand(num, 2, generator=g) * torch.tensor([w, h])
    size = torch.rand(num, 2, generator=g) * torch.tensor([w, h])
    size = torch.where(kinds[:, None] == 1, size * 0.02, size)  # tiny
    size = torch.where(kinds[:, None] == 2, size * 6.0, size)  # huge (beyond the image)
    xy = torch.where(kinds[:, None] == 3, xy - size * 0.7, xy)  # across the top-left border
    xy = torch.where(kinds[:, None] == 4, torch.tensor([w, h]) - size * 0.3, xy)  # bottom-right border
    boxes = torch.cat([xy, xy + size], dim=1)
    index = torch.randint(0, batch, (num, 1), generator=g).float()
    return torch.cat([index, boxes], dim=1).to(dtype)
