"""One source of defaults. `DistillConfig` (dataclasses) holds the ViLD settings; `add_distill_config(cfg)`
puts them under `cfg.MODEL.DISTILL` of any yacs / fvcore / detectron2 CfgNode, and `get_cfg()` builds the
torchvision backend's full config with detectron2's key names, so one yaml serves both backends.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from fvcore.common.config import CfgNode

from .utils.errors import DistillInputError


@dataclass
class EnsembleConfig:
    ENABLED: bool = False
    # exponent of p_text in the geometric mean (ViLD: 2/3 base, 1/3 novel); p_image gets the rest
    BASE_TEXT_WEIGHT: float = 2 / 3
    NOVEL_TEXT_WEIGHT: float = 1 / 3


@dataclass
class TeacherConfig:
    ARCH: str = "ViT-B-32"
    PRETRAINED: str = "openai"
    TEMPLATES: str = "vild"


@dataclass
class SemSegConfig:
    """cfg.MODEL.DISTILL.SEM_SEG: the open-vocabulary semantic segmenter (both backends read these keys)."""

    # Panoptic FPN semantic branch on P2-P5 → a D-dim embedding per pixel at 1 / COMMON_STRIDE
    CONVS_DIM: int = 64
    COMMON_STRIDE: int = 4
    NORM: str = "GN"
    IGNORE_VALUE: int = 255
    LOSS_WEIGHT: float = 1.0  # cross entropy on base-class pixels (pixel distillation: MODEL.DISTILL.PIXEL_*)
    # pixel value of each class of the training / test vocabulary, in vocabulary order (() = 0..C-1), and of
    # the background (-1: the dataset has no background class, no background embedding is scored)
    TRAIN_LABEL_VALUES: tuple = ()
    TEST_LABEL_VALUES: tuple = ()
    BACKGROUND_VALUE: int = 0
    # dense teacher targets: "windows" (sliding-window crops painted back), "pixels" (MaskCLIP encode_pixels) or
    # "regions" (crops of the class-agnostic boxes in PROPOSALS, COCO-results json, painted back)
    DENSE_TARGETS: str = "pixels"
    DENSE_TARGET_STRIDE: int = 8
    PIXELS_INPUT_SCALE: float = 2.0
    WINDOW_SIZES: tuple = (32, 48, 64)
    WINDOW_STRIDE: int = 16
    DENSE_TARGET_CACHE: str = ""  # folder of cached targets ("" = computed online from the frozen teacher)
    # distill cells labelled background too (off: the teacher's targets there drag a class onto the background)
    DISTILL_BACKGROUND: bool = False
    PROPOSALS: str = ""  # "regions": boxes per training image (MODEL.DISTILL.NUM_DISTILL_PROPOSALS best each)
    # "regions": paint from this region-embedding store (the ViLD step's, same teacher, scales and geometry)
    # instead of cropping again; its boxes replace PROPOSALS for the images it holds
    REGION_STORE: str = ""


@dataclass
class DistillConfig:
    """cfg.MODEL.DISTILL: ViLD settings (see VILD_FACTS: temperature 0.01, bg N(0, 0.01), image weight 0.5)."""

    TEACHER: TeacherConfig = field(default_factory=TeacherConfig)
    # class embeddings files (C, D) with sidecars: training vocabulary (base) and test vocabulary (all)
    TRAIN_CLASS_EMBEDDINGS: str = ""
    TEST_CLASS_EMBEDDINGS: str = ""
    TEMPERATURE: float = 0.01
    BG_INIT_STD: float = 0.01
    TEXT_LOSS_WEIGHT: float = 1.0
    IMAGE_LOSS_WEIGHT: float = 0.5
    # "zero" (ViLD: novel logits × 0, kept in the softmax) or "neg_inf" (DetPro), when training classes include novel
    NOVEL_LOGIT_MODE: str = "zero"
    REGION_STORE: str = ""  # region-embedding store of the training set ("" = no ViLD-image loss)
    NUM_DISTILL_PROPOSALS: int = 300  # per image, padded and masked
    ENSEMBLE: EnsembleConfig = field(default_factory=EnsembleConfig)
    # pixel distillation (segmenter)
    PIXEL_LOSS_WEIGHT: float = 1.0
    PIXEL_LOSS: str = "l1"
    SEM_SEG: SemSegConfig = field(default_factory=SemSegConfig)
    # settings detectron2's config has no key for, used by both backends where they apply
    OPTIMIZER: str = "SGD"  # or "AdamW"
    DATASETS_ROOT: str = ""  # default: $DISTILL_DATASETS, else ./datasets
    FUSED_POOLER: bool = True  # RoI pooling on distill.ops (detectron2 backend: FusedROIPooler)
    # torchvision backend: backbone initialisation, "imagenet" (torchvision's weights), a file, or "" (scratch)
    BACKBONE_WEIGHTS: str = "imagenet"


def _to_cfg(obj: Any, node_cls: type = CfgNode) -> Any:
    if dataclasses.is_dataclass(obj):
        return node_cls({f.name: _to_cfg(getattr(obj, f.name), node_cls) for f in dataclasses.fields(obj)})
    if isinstance(obj, list):
        return tuple(obj)
    return obj


def add_distill_config(cfg: CfgNode) -> CfgNode:
    """Add MODEL.DISTILL (and nothing else) to an existing config, e.g. detectron2's get_cfg()."""
    cfg.MODEL.DISTILL = _to_cfg(DistillConfig(), type(cfg))  # detectron2's CfgNode is a subclass: keep its type
    return cfg


def get_cfg() -> CfgNode:
    """Full default config of the torchvision backend. Every key is detectron2's (same name, same meaning),
    so a yaml written for one backend loads in the other; backend-specific settings live in MODEL.DISTILL."""
    c = CfgNode()
    c.MODEL = CfgNode()
    c.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    c.MODEL.DEVICE = "cpu"
    c.MODEL.WEIGHTS = ""
    c.MODEL.MASK_ON = True
    c.MODEL.PIXEL_MEAN = (123.675, 116.28, 103.53)  # in INPUT.FORMAT channel order, 0-255
    c.MODEL.PIXEL_STD = (58.395, 57.12, 57.375)
    c.MODEL.BACKBONE = CfgNode({"NAME": "build_resnet_fpn_backbone", "FREEZE_AT": 2})
    c.MODEL.RESNETS = CfgNode({"DEPTH": 50, "NORM": "FrozenBN", "OUT_FEATURES": ("res2", "res3", "res4", "res5"),
                               "RES2_OUT_CHANNELS": 256, "STRIDE_IN_1X1": True})
    c.MODEL.FPN = CfgNode({"IN_FEATURES": ("res2", "res3", "res4", "res5"), "OUT_CHANNELS": 256, "NORM": ""})
    c.MODEL.ANCHOR_GENERATOR = CfgNode({"SIZES": ((32,), (64,), (128,), (256,), (512,)),
                                        "ASPECT_RATIOS": ((0.5, 1.0, 2.0),)})
    c.MODEL.PROPOSAL_GENERATOR = CfgNode({"NAME": "RPN"})
    c.MODEL.RPN = CfgNode({
        "IN_FEATURES": ("p2", "p3", "p4", "p5", "p6"), "PRE_NMS_TOPK_TRAIN": 2000, "PRE_NMS_TOPK_TEST": 1000,
        "POST_NMS_TOPK_TRAIN": 1000, "POST_NMS_TOPK_TEST": 1000, "NMS_THRESH": 0.7, "BATCH_SIZE_PER_IMAGE": 256,
        "POSITIVE_FRACTION": 0.5,
    })
    c.MODEL.ROI_HEADS = CfgNode({
        "NAME": "ViLDRoIHeads", "NUM_CLASSES": 80, "IN_FEATURES": ("p2", "p3", "p4", "p5"),
        "BATCH_SIZE_PER_IMAGE": 512, "POSITIVE_FRACTION": 0.25, "IOU_THRESHOLDS": (0.5,),
        "SCORE_THRESH_TEST": 0.05, "NMS_THRESH_TEST": 0.5,
    })
    c.MODEL.ROI_BOX_HEAD = CfgNode({"NAME": "FastRCNNConvFCHead", "POOLER_TYPE": "ROIAlignV2",
                                    "POOLER_RESOLUTION": 7, "POOLER_SAMPLING_RATIO": 0, "FC_DIM": 1024,
                                    "NUM_FC": 2, "CLS_AGNOSTIC_BBOX_REG": True,
                                    "BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0), "SMOOTH_L1_BETA": 0.0})
    c.MODEL.ROI_MASK_HEAD = CfgNode({"NAME": "MaskRCNNConvUpsampleHead", "POOLER_TYPE": "ROIAlignV2",
                                     "POOLER_RESOLUTION": 14, "POOLER_SAMPLING_RATIO": 0, "CONV_DIM": 256,
                                     "NUM_CONV": 4, "CLS_AGNOSTIC_MASK": True})
    add_distill_config(c)
    c.DATASETS = CfgNode({"TRAIN": (), "TEST": ()})
    c.DATALOADER = CfgNode({"NUM_WORKERS": 2, "FILTER_EMPTY_ANNOTATIONS": True})
    c.INPUT = CfgNode({"MIN_SIZE_TRAIN": (800,), "MAX_SIZE_TRAIN": 1333, "MIN_SIZE_TEST": 800,
                       "MAX_SIZE_TEST": 1333, "RANDOM_FLIP": "horizontal", "FORMAT": "RGB"})
    c.SOLVER = CfgNode({
        "BASE_LR": 0.02, "MOMENTUM": 0.9, "NESTEROV": False, "WEIGHT_DECAY": 1e-4, "WEIGHT_DECAY_NORM": 0.0,
        "WEIGHT_DECAY_BIAS": None, "IMS_PER_BATCH": 16, "MAX_ITER": 90000,
        "LR_SCHEDULER_NAME": "WarmupMultiStepLR", "STEPS": (60000, 80000), "GAMMA": 0.1, "WARMUP_ITERS": 1000,
        "WARMUP_FACTOR": 0.001, "CHECKPOINT_PERIOD": 5000,
        "CLIP_GRADIENTS": CfgNode({"ENABLED": False, "CLIP_TYPE": "norm", "CLIP_VALUE": 1.0, "NORM_TYPE": 2.0}),
        "AMP": CfgNode({"ENABLED": False}),
    })
    # TEST.AUG: detectron2's test-time augmentation keys; the segmenter reads ENABLED and FLIP (average of the
    # image's and its mirror's class probabilities), the torchvision detector has no TTA
    c.TEST = CfgNode({"EVAL_PERIOD": 0, "DETECTIONS_PER_IMAGE": 100,
                      "AUG": CfgNode({"ENABLED": False, "MIN_SIZES": (400, 500, 600, 700, 800, 900, 1000, 1100, 1200),
                                      "MAX_SIZE": 4000, "FLIP": True})})
    c.OUTPUT_DIR = "./output"
    c.SEED = -1
    return c


def load_config(config_file: str | None = None, overrides: Sequence[str] = (), base: CfgNode | None = None) -> CfgNode:
    """Defaults ← yaml (with `_BASE_` chains) ← KEY VALUE overrides; unknown keys are one clear error."""
    cfg = (base or get_cfg()).clone()
    if config_file:
        if not os.path.isfile(config_file):
            raise DistillInputError("config file not found", config_file)
        try:
            cfg.merge_from_file(config_file, allow_unsafe=False)
        except KeyError as e:
            raise DistillInputError(f"unknown config key {_key(e)}", config_file) from None
        except (ValueError, TypeError) as e:
            raise DistillInputError(f"bad config value ({e})", config_file) from None
    if overrides:
        if len(overrides) % 2:
            raise DistillInputError(f"overrides come in KEY VALUE pairs; got {len(overrides)} items")
        try:
            cfg.merge_from_list(list(overrides))
        except (KeyError, AssertionError) as e:
            raise DistillInputError(f"unknown config key {_key(e)} on the command line") from None
        except (ValueError, TypeError) as e:
            raise DistillInputError(f"bad command-line config value ({e})") from None
    cfg.freeze()
    return cfg


def _key(e: BaseException) -> str:
    msg = str(e.args[0]) if e.args else str(e)
    for prefix in ("Non-existent config key: ", "Non-existent key: "):
        msg = msg.replace(prefix, "")
    return msg.strip("'\"")
