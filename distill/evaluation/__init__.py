"""Open-vocabulary evaluators: COCO / LVIS box and mask AP split into base and novel (streaming), and mIoU."""

from .detection import (
    evaluate_detections,
    format_ov_table,
    load_ground_truth,
    numpy_float_alias,
    validate_predictions,
)
from .evaluator import DetectionEvaluator
from .results_file import ResultsWriter
from .sem_seg import SEM_SEG_TABLE_KEYS, SemSegEvaluator, format_sem_seg_table, read_sem_seg_png

__all__ = [
    "DetectionEvaluator",
    "ResultsWriter",
    "evaluate_detections",
    "format_ov_table",
    "load_ground_truth",
    "numpy_float_alias",
    "validate_predictions",
    "SemSegEvaluator",
    "read_sem_seg_png",
    "SEM_SEG_TABLE_KEYS",
    "format_sem_seg_table",
]
