"""Multi-level RoIAlign (detectron2 ROIPooler + ROIAlignV2 semantics) on the fused `distill` op."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from . import _loader
from ._reference import multilevel_roi_align_reference

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def has_compiled_ops() -> bool:
    """True when the compiled extension is loaded and `multilevel_roi_align` runs its kernels."""
    return _loader.ops_available()


def multilevel_roi_align(
    features: Sequence[Tensor],
    rois: Tensor,
    output_size: int | Sequence[int],
    strides: Sequence[int],
    sampling_ratio: int = 0,
    aligned: bool = True,
    canonical_box_size: float = 224,
    canonical_level: int = 4,
    *,
    check_inputs: bool | None = None,
) -> Tensor:
    """RoIAlign over a feature pyramid, each RoI pooled from the level FPN eq. 1 assigns it.

    Args:
        features: L tensors (B, C, H_l, W_l), one dtype and device; level l has stride strides[l].
        rois: (K, 5) float [batch_index, x0, y0, x1, y1] in input-image pixels, any order.
        output_size: out_h, out_w (or one int for both).
        strides: L consecutive powers of two, finest first (e.g. 4, 8, 16, 32).
        sampling_ratio: samples per bin along each axis; 0 = adaptive ceil(roi_size / output_size).
        aligned: half-pixel offset (detectron2 ROIAlignV2); False is the legacy ROIAlign.
        canonical_box_size: a box of sqrt(area) = canonical_box_size goes to level canonical_level.
        canonical_level: that level, log2 of its stride.
        check_inputs: check batch indices are in range, which reads the rois on the host. Default:
            only for CPU tensors outside torch.compile, so the op never synchronises a GPU by default.

    Returns:
        (K, C, out_h, out_w) in the features' dtype (accumulated in fp32 for fp16/bf16). Differentiable
        with respect to the features.
    """
    out_h, out_w = _check_args(features, rois, output_size, strides, sampling_ratio, canonical_box_size)
    f0 = features[0]
    rois = rois.to(torch.float64 if f0.dtype == torch.float64 else torch.float32)
    if check_inputs is None:
        check_inputs = f0.device.type == "cpu" and not torch.compiler.is_compiling()
    if check_inputs:
        _check_batch_indices(rois, f0.shape[0])
    min_level = int(math.log2(strides[0]))
    if _loader.ops_available():
        return torch.ops.distill.multilevel_roi_align(
            list(features),
            rois,
            out_h,
            out_w,
            int(sampling_ratio),
            bool(aligned),
            min_level,
            float(canonical_box_size),
            int(canonical_level),
        )
    _loader.require_or_warn()
    return multilevel_roi_align_reference(
        list(features),
        rois,
        (out_h, out_w),
        list(strides),
        int(sampling_ratio),
        bool(aligned),
        canonical_box_size,
        canonical_level,
    )


def _check_args(features, rois, output_size, strides, sampling_ratio, canonical_box_size):
    """Raises TypeError/ValueError naming the bad argument; returns (out_h, out_w)."""
    _check_features(features)
    _check_rois(rois, features[0])
    check_strides(strides, len(features))
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if len(output_size) != 2 or not all(isinstance(s, int) and s > 0 for s in output_size):
        raise ValueError(f"output_size must be a positive int or (h, w), got {output_size!r}")
    if not isinstance(sampling_ratio, int) or sampling_ratio < 0:
        raise ValueError(f"sampling_ratio must be an int >= 0, got {sampling_ratio!r}")
    if not canonical_box_size > 0:
        raise ValueError(f"canonical_box_size must be positive, got {canonical_box_size!r}")
    return int(output_size[0]), int(output_size[1])


def _check_features(features) -> None:
    if isinstance(features, Tensor) or not isinstance(features, Sequence) or len(features) == 0:
        raise TypeError("features must be a non-empty list of (B, C, H, W) tensors, one per level")
    f0 = features[0]
    for i, f in enumerate(features):
        if not isinstance(f, Tensor):
            raise TypeError(f"features[{i}] must be a Tensor, got {type(f).__name__}")
        if f.dim() != 4:
            raise ValueError(f"features[{i}] must be 4-D (B, C, H, W), got shape {tuple(f.shape)}")
        if f.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"features[{i}] must be a floating tensor, got {f.dtype}")
        if f.dtype != f0.dtype:
            raise TypeError(f"features[{i}] has dtype {f.dtype}, features[0] has {f0.dtype}")
        if f.device != f0.device:
            raise ValueError(f"features[{i}] is on {f.device}, features[0] on {f0.device}")
        if torch.jit.is_tracing():
            continue  # traced shapes are graph values: a Python test of them is baked in (TracerWarning)
        if f.shape[:2] != f0.shape[:2]:
            raise ValueError(
                f"features[{i}] has (B, C) = {tuple(f.shape[:2])}, features[0] has {tuple(f0.shape[:2])}"
            )
        if f.shape[2] == 0 or f.shape[3] == 0:
            raise ValueError(f"features[{i}] has an empty spatial size {tuple(f.shape[2:])}")


def _check_rois(rois, f0: Tensor) -> None:
    if not isinstance(rois, Tensor):
        raise TypeError(f"rois must be a (K, 5) Tensor, got {type(rois).__name__}")
    if rois.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"rois must be a floating tensor, got {rois.dtype}")
    if rois.dim() != 2 or (not torch.jit.is_tracing() and rois.shape[1] != 5):
        raise ValueError(f"rois must be (K, 5) [batch_index, x0, y0, x1, y1], got shape {tuple(rois.shape)}")
    if rois.device != f0.device:
        raise ValueError(f"rois is on {rois.device}, features on {f0.device}")


def check_strides(strides, num_levels: int) -> None:
    if isinstance(strides, (int, float)) or len(strides) != num_levels:
        raise ValueError(f"strides must list one stride per feature level ({num_levels}), got {strides!r}")
    for i, s in enumerate(strides):
        if isinstance(s, bool) or not float(s).is_integer() or s < 1 or int(s) & (int(s) - 1):
            raise ValueError(f"strides must be powers of two, got strides[{i}] = {s!r}")
        if i and int(s) != 2 * int(strides[i - 1]):
            raise ValueError(
                f"strides must be consecutive powers of two (each twice the previous), got {list(strides)!r}"
            )


def _check_batch_indices(rois: Tensor, batch_size: int) -> None:
    """Host-side range check of rois[:, 0] (one small device-to-host copy)."""
    if rois.shape[0] == 0:
        return
    index = rois[:, 0]
    bad = (index < 0) | (index >= batch_size) | (index != index.floor())
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(f"rois[{k}, 0] = {float(index[k])} is not a batch index in [0, {batch_size})")
