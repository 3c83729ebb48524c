"""Fused crop resampling (`distill::resample_crops`): N crops of one image resampled with precomputed
separable taps, quantised to 8 bits and normalised, without per-crop intermediates.

The taps (which pixels each output row / column reads, with what weight) come from the caller, e.g.
distill.teacher.crops for PIL-exact bicubic crops. The compiled kernels reproduce
`resample_crops_reference` bit for bit (float32 sums in the same order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _loader


def compiled_for(device: torch.device) -> bool:
    """True when `resample_crops` runs compiled kernels for tensors on `device`."""
    if device.type == "cpu":
        return _loader.ops_available()
    return device.type == "cuda" and _loader.cuda_compiled()


def resample_crops(
    image: Tensor,
    y_index: Tensor,
    y_weight: Tensor,
    x_index: Tensor,
    x_weight: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    out: Tensor | None = None,
) -> Tensor:
    """Separable resampling + 8-bit quantisation + normalisation of N crops of one image.

    Args:
        image: (C, H, W) uint8 (read as value / 255) or float.
        y_index, y_weight: (N, S_y, K_y) int64 image rows in [0, H) and float32 weights: output row i of
            crop n is sum_k y_weight[n, i, k] * image row y_index[n, i, k].
        x_index, x_weight: (N, S_x, K_x) int64 columns in [0, W) and float32 weights, likewise.
        mean, std: C floats.
        out: optional (N, C, S_y, S_x) float32 tensor on the image's device (e.g. a slice of a reused batch
            buffer) that receives the result; written in place without a temporary where compiled.
    Returns:
        (N, C, S_y, S_x) float32 (`out` when given): (round(255 * clamp(v, 0, 1)) / 255 - mean) / std, where
        v is the vertical pass then the horizontal pass, summed in float32 in tap order.
    """
    image, mean, std = _check(image, y_index, y_weight, x_index, x_weight, mean, std)
    if out is not None:
        shape = (y_index.shape[0], image.shape[0], y_index.shape[1], x_index.shape[1])
        if out.dtype != torch.float32 or tuple(out.shape) != shape or out.device != image.device:
            raise ValueError(
                f"out must be float32 of shape {shape} on {image.device}, got {out.dtype} "
                f"{tuple(out.shape)} on {out.device}"
            )
        if image.device.type == "cpu" and out.is_contiguous() and _has_out_kernel():
            torch.ops.distill.resample_crops_out(image, y_index, y_weight, x_index, x_weight, mean, std, out)
            return out
        return out.copy_(resample_crops(image, y_index, y_weight, x_index, x_weight, mean, std))
    if compiled_for(image.device):
        return torch.ops.distill.resample_crops(image, y_index, y_weight, x_index, x_weight, mean, std)
    if image.device.type == "cpu":
        _loader.require_or_warn()
    return resample_crops_reference(image, y_index, y_weight, x_index, x_weight, mean, std)


def _has_out_kernel() -> bool:
    return _loader.ops_available() and hasattr(torch.ops.distill, "resample_crops_out")


def resample_crops_reference(
    image: Tensor,
    y_index: Tensor,
    y_weight: Tensor,
    x_index: Tensor,
    x_weight: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """Pure-PyTorch `resample_crops` (same arguments and result); memory grows as N * C * S_y * W."""
    img = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    channels = img.shape[0]
    n, size_y, size_x = y_index.shape[0], y_index.shape[1], x_index.shape[1]
    if n == 0:
        return img.new_empty((0, channels, size_y, size_x))
    x0, x1 = int(x_index.min()), int(x_index.max()) + 1  # only the columns these crops touch
    cols = img[:, :, x0:x1]
    rows = torch.zeros(channels, n, size_y, x1 - x0, dtype=img.dtype, device=img.device)
    for k in range(y_index.shape[-1]):  # vertical pass: a few taps, each a row gather
        rows += y_weight[None, :, :, k, None].to(img.dtype) * cols[:, y_index[:, :, k]]
    acc = torch.zeros(channels, n, size_y, size_x, dtype=img.dtype, device=img.device)
    for k in range(x_index.shape[-1]):  # horizontal pass
        idx = (x_index[:, :, k] - x0)[None, :, None, :].expand(channels, -1, size_y, -1)
        acc += x_weight[None, :, None, :, k].to(img.dtype) * torch.gather(rows, 3, idx)
    out = acc.transpose(0, 1)
    out = torch.round(out.clamp(0.0, 1.0) * 255) / 255  # 8-bit, like PIL's output
    mean_t = torch.tensor(mean, dtype=out.dtype, device=out.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=out.dtype, device=out.device).view(1, -1, 1, 1)
    return (out - mean_t) / std_t


def _check(image, y_index, y_weight, x_index, x_weight, mean, std):
    """Raises TypeError/ValueError naming the bad argument; returns (image, mean, std) for the op."""
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a (C, H, W) Tensor, got {type(image).__name__}")
    if image.dim() != 3 or 0 in image.shape:
        raise ValueError(f"image must be a non-empty (C, H, W) tensor, got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"image must be uint8 or floating, got {image.dtype}")
    if image.dtype not in (torch.uint8, torch.float32):
        image = image.float()
    for axis, index, weight in (("y", y_index, y_weight), ("x", x_index, x_weight)):
        if not isinstance(index, Tensor) or not isinstance(weight, Tensor):
            raise TypeError(f"{axis}_index and {axis}_weight must be Tensors")
        if index.dim() != 3:
            raise ValueError(f"{axis}_index must be (N, S, K), got shape {tuple(index.shape)}")
        if index.dtype != torch.int64:
            raise TypeError(f"{axis}_index must be int64, got {index.dtype}")
        if weight.dtype != torch.float32:
            raise TypeError(f"{axis}_weight must be float32, got {weight.dtype}")
        if weight.shape != index.shape:
            raise ValueError(
                f"{axis}_weight has shape {tuple(weight.shape)}, {axis}_index {tuple(index.shape)}"
            )
        if index.device != image.device or weight.device != image.device:
            raise ValueError(f"{axis} taps are on {index.device}, image on {image.device}")
    if y_index.shape[0] != x_index.shape[0]:
        raise ValueError(f"y taps for {y_index.shape[0]} crops, x taps for {x_index.shape[0]}")
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) != image.shape[0] or len(std) != image.shape[0]:
        raise ValueError(
            f"mean and std need one value per image channel ({image.shape[0]}), "
            f"got {len(mean)} and {len(std)}"
        )
    return image, mean, std
