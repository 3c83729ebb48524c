"""The open-vocabulary semantic segmenter on torchvision parts, by job: `model` (the network, its start from a
detector's backbone, checkpoints), `targets` (samples and dense teacher targets), `train` (on the engine),
`inference` (prediction, evaluation, any vocabulary) and `synthetic` (the benchmark's ablation and the
quickstart's stage). Torchvision-only, outside the Backend protocol: the tools and the web demo refuse a
detectron2 segmenter checkpoint in one line (detectron2/sem_seg.py is a head for detectron2's own trainer).

    from distill.integrations.torchvision.sem_seg import train_and_evaluate_segmenter
    result = train_and_evaluate_segmenter("output/quickstart/synthetic", "output/quickstart/semseg", teacher)
    result["rows"]["CE + pixel distillation"]["mIoU_novel"]
"""

from .inference import evaluate_segmenter, fit_test_size, predict_sem_seg, segment_images
from .model import (
    OpenVocabSegmenter,
    build_sem_seg_model,
    load_segmenter,
    load_student_backbone,
    save_segmenter,
)
from .synthetic import (
    SEMSEG_NAME,
    VARIANTS,
    load_semseg_config,
    semseg_config_file,
    synthetic_evaluator,
    synthetic_vocab,
    train_and_evaluate_segmenter,
)
from .targets import dense_target_config, dense_targets_for, load_region_boxes, load_sem_seg_samples
from .train import SegmenterData, body_feature_cache, train_segmenter

__all__ = [
    "OpenVocabSegmenter",
    "SEMSEG_NAME",
    "SegmenterData",
    "VARIANTS",
    "body_feature_cache",
    "fit_test_size",
    "build_sem_seg_model",
    "dense_target_config",
    "dense_targets_for",
    "evaluate_segmenter",
    "load_region_boxes",
    "load_sem_seg_samples",
    "load_segmenter",
    "load_semseg_config",
    "load_student_backbone",
    "predict_sem_seg",
    "save_segmenter",
    "semseg_config_file",
    "segment_images",
    "synthetic_evaluator",
    "synthetic_vocab",
    "train_and_evaluate_segmenter",
    "train_segmenter",
]
