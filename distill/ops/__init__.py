"""Custom ops: fused multi-level RoIAlign and fused crop resampling (compiled kernels, with pure-PyTorch
fallbacks)."""
from .resample_crops import resample_crops, resample_crops_reference
from .roi_align import has_compiled_ops, multilevel_roi_align

__all__ = ["has_compiled_ops", "multilevel_roi_align", "resample_crops", "resample_crops_reference"]
