"""distill: open-vocabulary detection and segmentation by distilling an open_clip teacher (ViLD-style)."""

__version__ = "0.1.0"
