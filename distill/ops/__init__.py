"""Custom ops: fused multi-level RoIAlign, fused crop resampling and CPU NMS (compiled kernels, with pure-PyTorch
or torchvision fallbacks)."""

from .nms import batched_nms, nms
from .resample_crops import resample_crops, resample_crops_reference
from .roi_align import has_compiled_ops, multilevel_roi_align

__all__ = [
    "batched_nms",
    "has_compiled_ops",
    "multilevel_roi_align",
    "nms",
    "resample_crops",
    "resample_crops_reference",
]
