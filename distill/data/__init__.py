"""Datasets: COCO / LVIS loaders, open-vocabulary splits, the synthetic benchmark."""

from .datasets import (
    BOX_MODE_XYWH_ABS,
    DatasetMetadata,
    filter_empty,
    load_coco_json,
    load_lvis_json,
    synthetic_dataset,
    validate_instances_json,
)
from .ov_splits import CategorySplit, ov_coco_categories, ov_coco_split, ov_lvis_split, split_from_categories

__all__ = [
    "BOX_MODE_XYWH_ABS",
    "CategorySplit",
    "DatasetMetadata",
    "filter_empty",
    "load_coco_json",
    "load_lvis_json",
    "ov_coco_categories",
    "ov_coco_split",
    "ov_lvis_split",
    "split_from_categories",
    "synthetic_dataset",
    "validate_instances_json",
]
