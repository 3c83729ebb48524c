"""Drop-in for detectron2's ROIPooler on the fused multi-level RoIAlign op.

    from distill.integrations.detectron2.poolers import FusedROIPooler
    pooler = FusedROIPooler(output_size=7, scales=(1/4, 1/8, 1/16, 1/32), sampling_ratio=0,
                            pooler_type="ROIAlignV2")

Same constructor and forward as `detectron2.modeling.poolers.ROIPooler`, one kernel for all levels
instead of one roi_align per level plus a gather/scatter (and a host sync) per level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from distill.modeling.poolers import boxes_to_rois, strides_from_scales
from distill.ops import multilevel_roi_align
from distill.ops.roi_align import check_strides

_ALIGNED = {"ROIAlignV2": True, "ROIAlign": False}


class FusedROIPooler(nn.Module):
    """detectron2 `ROIPooler` for pooler_type "ROIAlignV2" (aligned) or "ROIAlign" (legacy)."""

    def __init__(
        self, output_size, scales, sampling_ratio, pooler_type, canonical_box_size=224, canonical_level=4
    ):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if len(output_size) != 2 or not all(isinstance(s, int) for s in output_size):
            raise ValueError(f"output_size must be an int or (h, w), got {output_size!r}")
        if pooler_type not in _ALIGNED:
            raise ValueError(
                f"FusedROIPooler supports pooler_type {sorted(_ALIGNED)}, got {pooler_type!r}; "
                "use detectron2's ROIPooler for ROIPool or ROIAlignRotated"
            )
        self.output_size = tuple(output_size)
        self.strides = strides_from_scales(scales)
        self.sampling_ratio = sampling_ratio
        self.aligned = _ALIGNED[pooler_type]
        check_strides(self.strides, len(self.strides))
        self.min_level = int(math.log2(self.strides[0]))
        self.max_level = int(math.log2(self.strides[-1]))
        if canonical_box_size <= 0:
            raise ValueError(f"canonical_box_size must be positive, got {canonical_box_size!r}")
        self.canonical_level = canonical_level
        self.canonical_box_size = canonical_box_size

    def forward(self, x: list[Tensor], box_lists: list) -> Tensor:
        """x: L feature maps (N, C, H_l, W_l); box_lists: N detectron2 `Boxes`.

        Returns (M, C, out_h, out_w), M the total number of boxes, in box_lists order.
        """
        if not isinstance(x, list) or not isinstance(box_lists, list):
            raise TypeError("FusedROIPooler takes a list of feature maps and a list of Boxes")
        if len(x) != len(self.strides):
            raise ValueError(f"number of feature maps ({len(x)}) != number of scales ({len(self.strides)})")
        if len(box_lists) != x[0].size(0):
            raise ValueError(f"len(box_lists) ({len(box_lists)}) != batch size ({x[0].size(0)})")
        if len(box_lists) == 0:
            return torch.zeros((0, x[0].shape[1], *self.output_size), device=x[0].device, dtype=x[0].dtype)
        rois = boxes_to_rois([b.tensor if hasattr(b, "tensor") else b for b in box_lists])
        return multilevel_roi_align(
            x,
            rois,
            self.output_size,
            self.strides,
            self.sampling_ratio,
            self.aligned,
            self.canonical_box_size,
            self.canonical_level,
        )
