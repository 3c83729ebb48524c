"""Custom ops: fused multi-level RoIAlign (compiled kernels, with a pure-PyTorch fallback)."""
from .roi_align import has_compiled_ops, multilevel_roi_align

__all__ = ["has_compiled_ops", "multilevel_roi_align"]
