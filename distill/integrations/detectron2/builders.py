"""cfg → open-vocabulary detector on detectron2 (any registered backbone, detectron2's RPN, `OpenVocabROIHeads`).

Configs: detectron2's `get_cfg()` plus `MODEL.DISTILL` (`distill.config.add_distill_config`). The shared
yaml files under configs/ load here unchanged, and a torchvision-backend config converts with
`to_detectron2_cfg` (its keys are detectron2's).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from detectron2.config import CfgNode
from detectron2.config import get_cfg as d2_get_cfg
from detectron2.modeling import META_ARCH_REGISTRY, build_model

from ...config import add_distill_config as _add_distill_config
from ...config import load_config
from ...utils.device import check_device
from ...utils.errors import DistillInputError
from . import clip_backbone, meta_arch, roi_heads  # noqa: F401  (registers OpenVocabRCNN, OpenVocabROIHeads, ...)

logger = logging.getLogger(__name__)


def add_distill_config(cfg: CfgNode) -> CfgNode:
    """`distill.config.add_distill_config`: MODEL.DISTILL made of detectron2's CfgNode nodes."""
    return _add_distill_config(cfg)


def get_detectron2_cfg() -> CfgNode:
    """detectron2's defaults + MODEL.DISTILL; MODEL.DEVICE defaults to "cpu" where there is no GPU."""
    cfg = d2_get_cfg()
    add_distill_config(cfg)
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def load_detectron2_config(config_file: str | None = None, overrides: Sequence[str] = ()) -> CfgNode:
    """Defaults ← yaml (with `_BASE_`) ← KEY VALUE overrides, frozen; unknown keys are one clear error."""
    return imagenet_backbone(load_config(config_file, overrides, base=get_detectron2_cfg()))


# detectron2's ImageNet ResNets (MSRA's Caffe2 weights): BGR 0-255 input, mean subtracted, std 1
_MSRA_BGR_MEAN = [103.530, 116.280, 123.675]


def imagenet_backbone(cfg: CfgNode) -> CfgNode:
    """MODEL.BACKBONE.WEIGHTS "imagenet" on this backend: MSRA's R-50 / R-101 (MODEL.WEIGHTS, when unset)
    and the input they were trained with (BGR, std 1, stride in the 1x1 conv), for training and testing alike."""
    r = cfg.MODEL.RESNETS
    if (
        cfg.MODEL.BACKBONE.WEIGHTS != "imagenet"
        or r.DEPTH not in (50, 101)
        or "resnet" not in cfg.MODEL.BACKBONE.NAME
    ):
        return cfg
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.INPUT.FORMAT, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = "BGR", list(_MSRA_BGR_MEAN), [1.0, 1.0, 1.0]
    r.STRIDE_IN_1X1 = True
    if not cfg.MODEL.WEIGHTS:
        cfg.MODEL.WEIGHTS = f"detectron2://ImageNetPretrained/MSRA/R-{r.DEPTH}.pkl"
    if frozen:
        cfg.freeze()
    return cfg


def is_detectron2_cfg(cfg) -> bool:
    return "VERSION" in cfg  # detectron2's config carries its version; the torchvision backend's has none


def to_detectron2_cfg(cfg) -> CfgNode:
    """A torchvision-backend config (detectron2 key names) → the same settings on detectron2's defaults."""
    if is_detectron2_cfg(cfg):
        return cfg
    out = get_detectron2_cfg()
    try:
        out.merge_from_other_cfg(cfg)
    except KeyError as e:
        raise DistillInputError(
            f"config key {e.args[0] if e.args else e} has no detectron2 counterpart"
        ) from None
    out.freeze()
    return imagenet_backbone(out)


def build_detector(cfg) -> torch.nn.Module:
    """detectron2's `build_model`; a GeneralizedRCNN with OpenVocabROIHeads is built as `OpenVocabRCNN`, the same
    model that also feeds the distillation proposals to the RoI heads (same parameters, same checkpoints)."""
    cfg = to_detectron2_cfg(cfg)
    check_device(cfg.MODEL.DEVICE, "MODEL.DEVICE")
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and cfg.MODEL.ROI_HEADS.NAME in (
        "OpenVocabROIHeads",
        "ViLDRoIHeads",
    ):
        model = META_ARCH_REGISTRY.get("OpenVocabRCNN")(cfg)
        model.to(torch.device(cfg.MODEL.DEVICE))
    else:
        model = build_model(cfg)
    logger.info(
        "%s model: %s + %s, %.1fM parameters",
        cfg.MODEL.DISTILL.METHOD,
        type(model).__name__,
        cfg.MODEL.ROI_HEADS.NAME,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model
