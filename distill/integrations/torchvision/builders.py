"""cfg → open-vocabulary detector on torchvision (ResNet-FPN of any depth, torchvision RPN, the core's box
predictor with MODEL.DISTILL.METHOD)."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ...methods import build_method
from ...modeling.clip_backbone import CLIP_BACKBONE, VLM_KEY, build_clip_tower
from ...modeling.heads import ClassAgnosticMaskHead, FastRCNNConvFCHead
from ...modeling.ov_predictor import OpenVocabBoxPredictor
from ...modeling.poolers import MultiScaleRoIPooler
from ...teacher.embeddings import ClassEmbeddings
from ...utils.checkpoint import load_torch_file
from ...utils.errors import DistillInputError
from .meta_arch import OpenVocabDetector
from .roi_heads import OpenVocabROIHeads
from .rpn import RPN

logger = logging.getLogger(__name__)
_DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}
STRIDES = (4, 8, 16, 32)
LEGACY_NAMES = ("ViLDRCNN", "ViLDRoIHeads")  # the names of these classes in earlier configs


def _norm_layer(name: str):
    if name == "FrozenBN":
        return FrozenBatchNorm2d
    if name == "BN":
        return nn.BatchNorm2d
    if name == "GN":
        return lambda c: nn.GroupNorm(32, c)
    raise DistillInputError(f"MODEL.BACKBONE.NORM must be FrozenBN, BN or GN, got {name!r}")


class CLIPBackboneWithFPN(nn.Module):
    """The teacher's frozen image tower (`distill.modeling.clip_backbone.CLIPTower`) under a trainable FPN: P2-P5
    and a max-pooled P6 (keys "0".."3", "pool", as `BackboneWithFPN`), plus the tower's `VLMRegions` under
    `VLM_KEY` (the detector hands it to the RoI heads, not to the RPN)."""

    def __init__(self, tower, out_channels: int):
        super().__init__()
        self.tower = tower
        self.fpn = FeaturePyramidNetwork(tower.out_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x):
        feats, vlm = self.tower(x)
        out = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        out[VLM_KEY] = vlm
        return out


def build_backbone(cfg) -> nn.Module:
    """ResNet-FPN: P2-P5 from layer1-4 plus a max-pooled P6 for the RPN; `out_channels` per level. With
    MODEL.BACKBONE.NAME build_clip_fpn_backbone, the teacher's frozen tower under the FPN instead."""
    if cfg.MODEL.BACKBONE.NAME == CLIP_BACKBONE:
        return CLIPBackboneWithFPN(build_clip_tower(cfg), cfg.MODEL.FPN.OUT_CHANNELS)
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _DEPTHS:
        raise DistillInputError(f"MODEL.RESNETS.DEPTH must be one of {sorted(_DEPTHS)}, got {r.DEPTH}")
    net = getattr(resnet, _DEPTHS[r.DEPTH])(weights=None, norm_layer=_norm_layer(r.NORM))
    if cfg.MODEL.BACKBONE.WEIGHTS:
        _load_backbone_weights(net, cfg.MODEL.BACKBONE.WEIGHTS, r.DEPTH)
    # detectron2's FREEZE_AT: 0 trains everything, 1 freezes the stem, k freezes the stem and res2..res{k}
    stages = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]
    frozen = [n for stage in stages[: cfg.MODEL.BACKBONE.FREEZE_AT] for n in stage]
    for name, p in net.named_parameters():
        if any(name.startswith(f) for f in frozen):
            p.requires_grad_(False)
    c = 64 if r.DEPTH < 50 else 256
    return BackboneWithFPN(
        net,
        {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        [c, 2 * c, 4 * c, 8 * c],
        cfg.MODEL.FPN.OUT_CHANNELS,
        extra_blocks=LastLevelMaxPool(),
    )


def _load_backbone_weights(net: nn.Module, spec: str, depth: int) -> None:
    """ "imagenet": torchvision's ImageNet weights (downloaded where there is network); else a file path."""
    if spec == "imagenet":
        enum = getattr(resnet, f"ResNet{depth}_Weights").DEFAULT
        try:
            state = enum.get_state_dict(progress=True)
        except Exception as e:  # noqa: BLE001 - no network, proxy, ...: one clear message
            raise DistillInputError(
                f"cannot fetch torchvision's ImageNet ResNet-{depth} weights ({e}); set "
                'MODEL.BACKBONE.WEIGHTS to a local file or to "" to train from scratch'
            ) from None
    else:
        if not os.path.isfile(spec):
            raise DistillInputError("backbone weights not found", spec)
        state = load_torch_file(spec, "backbone weights")
        state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else {}
    missing, unexpected = net.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False
    )
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise DistillInputError(
            f"backbone weights miss {len(missing)} tensors (e.g. {missing[0]}): not a ResNet-{depth}?",
            spec if spec != "imagenet" else None,
        )


def _check_supported(cfg) -> None:
    """Settings of the shared yaml this backend does not implement: say so rather than ignore them."""
    m = cfg.MODEL
    if m.META_ARCHITECTURE not in ("GeneralizedRCNN", "OpenVocabRCNN", *LEGACY_NAMES):
        raise DistillInputError(
            f"MODEL.META_ARCHITECTURE {m.META_ARCHITECTURE!r} is not an open-vocabulary detector"
        )
    if m.BACKBONE.NAME not in ("build_resnet_fpn_backbone", CLIP_BACKBONE) or m.ROI_HEADS.NAME not in (
        "OpenVocabROIHeads",
        *LEGACY_NAMES,
    ):
        raise DistillInputError(
            f"the torchvision backend builds ResNet-FPN or {CLIP_BACKBONE} + OpenVocabROIHeads only; got "
            f"{m.BACKBONE.NAME} / {m.ROI_HEADS.NAME}"
        )
    if m.ROI_BOX_HEAD.POOLER_TYPE != "ROIAlignV2" or (
        m.MASK_ON and m.ROI_MASK_HEAD.POOLER_TYPE != "ROIAlignV2"
    ):
        raise DistillInputError("the torchvision backend pools with ROIAlignV2 only")
    if not m.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG or not m.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK:
        raise DistillInputError(
            "open-vocabulary detection needs class-agnostic box regression and masks (novel classes)"
        )
    if cfg.TEST.AUG.ENABLED:
        raise DistillInputError(
            "TEST.AUG (test-time augmentation) is not implemented by the torchvision detector"
        )
    if cfg.INPUT.FORMAT != "RGB":
        raise DistillInputError("the torchvision backend reads RGB images: set INPUT.FORMAT RGB")


def build_detector(cfg, vocabulary: ClassEmbeddings) -> OpenVocabDetector:
    """The full detector of MODEL.DISTILL.METHOD; `vocabulary` is the training vocabulary (base classes for OV
    training)."""
    m, d = cfg.MODEL, cfg.MODEL.DISTILL
    backbone = build_backbone(cfg)
    _check_supported(cfg)
    ch = backbone.out_channels
    sizes = tuple(tuple(s) for s in m.ANCHOR_GENERATOR.SIZES)
    ratios = tuple(tuple(r) for r in m.ANCHOR_GENERATOR.ASPECT_RATIOS)
    anchors = AnchorGenerator(sizes, ratios * len(sizes) if len(ratios) == 1 else ratios)
    if tuple(m.RPN.IOU_LABELS) != (0, -1, 1) or len(m.RPN.IOU_THRESHOLDS) != 2:
        raise DistillInputError(
            "the torchvision RPN reads two MODEL.RPN.IOU_THRESHOLDS (negative below the first, "
            "positive from the second) with IOU_LABELS [0, -1, 1]"
        )
    bg_iou, fg_iou = m.RPN.IOU_THRESHOLDS
    rpn = RPN(
        anchors,
        RPNHead(ch, anchors.num_anchors_per_location()[0]),
        fg_iou,
        bg_iou,
        m.RPN.BATCH_SIZE_PER_IMAGE,
        m.RPN.POSITIVE_FRACTION,
        {"training": m.RPN.PRE_NMS_TOPK_TRAIN, "testing": m.RPN.PRE_NMS_TOPK_TEST},
        {"training": m.RPN.POST_NMS_TOPK_TRAIN, "testing": m.RPN.POST_NMS_TOPK_TEST},
        m.RPN.NMS_THRESH,
    )
    bh = m.ROI_BOX_HEAD
    box_head = FastRCNNConvFCHead(ch, bh.POOLER_RESOLUTION, bh.FC_DIM, bh.NUM_FC)
    mh = m.ROI_MASK_HEAD
    predictor = OpenVocabBoxPredictor(
        box_head.out_dim, vocabulary, build_method(cfg), d.TEMPERATURE, d.BG_INIT_STD
    )
    roi_heads = OpenVocabROIHeads(
        MultiScaleRoIPooler(bh.POOLER_RESOLUTION, STRIDES, sampling_ratio=bh.POOLER_SAMPLING_RATIO),
        box_head,
        predictor,
        MultiScaleRoIPooler(mh.POOLER_RESOLUTION, STRIDES, sampling_ratio=mh.POOLER_SAMPLING_RATIO)
        if m.MASK_ON
        else None,
        ClassAgnosticMaskHead(ch, mh.CONV_DIM, mh.NUM_CONV) if m.MASK_ON else None,
        fg_iou_thresh=m.ROI_HEADS.IOU_THRESHOLDS[0],
        bg_iou_thresh=m.ROI_HEADS.IOU_THRESHOLDS[0],
        batch_size_per_image=m.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
        positive_fraction=m.ROI_HEADS.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(bh.BBOX_REG_WEIGHTS),
        score_thresh=m.ROI_HEADS.SCORE_THRESH_TEST,
        nms_thresh=m.ROI_HEADS.NMS_THRESH_TEST,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
        smooth_l1_beta=bh.SMOOTH_L1_BETA,
    )
    return OpenVocabDetector(backbone, rpn, roi_heads, m.PIXEL_MEAN, m.PIXEL_STD)
