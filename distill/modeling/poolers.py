"""Multi-level RoI pooler on the fused `distill.ops.multilevel_roi_align` op."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill.ops import multilevel_roi_align
from distill.ops.roi_align import check_strides


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """Per-image boxes [(N_i, 4) x0, y0, x1, y1] -> (sum N_i, 5) rois [image index, x0, y0, x1, y1].

    No host synchronisation: the image indices are built with tensor ops on the boxes' device.
    """
    if len(boxes) == 0:
        raise ValueError("boxes must hold one (N_i, 4) tensor per image, got an empty list")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(
                f"boxes[{i}] must be an (N, 4) tensor, got "
                f"{tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__}"
            )
    dtype = boxes[0].dtype if boxes[0].is_floating_point() else torch.float32
    index = torch.cat(
        [torch.full((b.shape[0], 1), i, dtype=dtype, device=b.device) for i, b in enumerate(boxes)]
    )
    return torch.cat([index, torch.cat([b.to(dtype) for b in boxes])], dim=1)


def strides_from_scales(scales: Sequence[float]) -> list[int]:
    """detectron2-style scales (1 / stride) -> integer strides; scales must be exact powers of 1/2."""
    strides = []
    for s in scales:
        stride = 1.0 / s if s > 0 else float("inf")
        if not math.isfinite(stride) or abs(stride - round(stride)) > 1e-6 * stride:
            raise ValueError(f"scales must be 1 / (power of two), got {list(scales)!r}")
        strides.append(int(round(stride)))
    return strides


class MultiScaleRoIPooler(nn.Module):
    """RoIAlign over a feature pyramid with FPN level assignment (detectron2 ROIPooler semantics).

    Args:
        output_size: out_h, out_w (or one int).
        strides: per-level strides, finest first, consecutive powers of two (e.g. (4, 8, 16, 32));
            or give ``scales`` (1 / stride) instead, detectron2 style.
        sampling_ratio: samples per bin per axis; 0 = adaptive.
        aligned: half-pixel offset (ROIAlignV2); False is the legacy ROIAlign.
        canonical_box_size: FPN eq. 1: a box of sqrt(area) = canonical_box_size goes to canonical_level.
        canonical_level: that level, log2 of its stride.
    """

    def __init__(
        self,
        output_size: int | Sequence[int],
        strides: Sequence[int] | None = None,
        *,
        scales: Sequence[float] | None = None,
        sampling_ratio: int = 0,
        aligned: bool = True,
        canonical_box_size: float = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        if (strides is None) == (scales is None):
            raise ValueError("give exactly one of strides or scales")
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.strides = list(strides) if strides is not None else strides_from_scales(scales)
        check_strides(self.strides, len(self.strides))
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """features: L tensors (B, C, H_l, W_l); boxes: B tensors (N_i, 4) in input-image pixels.

        Returns (sum N_i, C, out_h, out_w), RoIs in image order.
        """
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature levels, got {len(features)}")
        if len(boxes) != features[0].shape[0]:
            raise ValueError(f"boxes has {len(boxes)} entries for a batch of {features[0].shape[0]} images")
        return multilevel_roi_align(
            features,
            boxes_to_rois(boxes),
            self.output_size,
            self.strides,
            self.sampling_ratio,
            self.aligned,
            self.canonical_box_size,
            self.canonical_level,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, strides={self.strides}, sampling_ratio={self.sampling_ratio}, "
            f"aligned={self.aligned}"
        )
