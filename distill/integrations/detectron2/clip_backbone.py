"""MODEL.BACKBONE.NAME build_clip_fpn_backbone on detectron2: the teacher's frozen image tower
(`distill.modeling.clip_backbone.CLIPTower`) under detectron2's FPN (P2-P6), and the tower's `VLMRegions` under
`VLM_KEY` beside the levels (detectron2's RPN and RoI heads read only the levels they name)."""

from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from ...modeling.clip_backbone import CLIP_BACKBONE, STRIDES, VLM_KEY, build_clip_tower
from ...utils.errors import DistillInputError

_NAMES = ("res2", "res3", "res4", "res5")


class CLIPBottomUp(Backbone):
    """The tower as detectron2's bottom-up backbone: res2-res5. A dict passes through unchanged (`CLIPFPN` runs the
    tower itself, to keep its `VLMRegions`)."""

    def __init__(self, tower):
        super().__init__()
        self.tower = tower
        self._out_features = list(_NAMES)
        self._out_feature_strides = dict(zip(_NAMES, STRIDES))
        self._out_feature_channels = dict(zip(_NAMES, tower.out_channels))

    def forward(self, x):
        if isinstance(x, dict):
            return x
        return dict(zip(_NAMES, self.tower(x)[0]))


class CLIPFPN(FPN):
    """detectron2's FPN over `CLIPBottomUp`; its output also holds the tower's `VLMRegions` under `VLM_KEY`."""

    def forward(self, x):
        feats, vlm = self.bottom_up.tower(x)
        out = super().forward(dict(zip(_NAMES, feats)))
        out[VLM_KEY] = vlm
        return out


@BACKBONE_REGISTRY.register()  # the name CLIP_BACKBONE
def build_clip_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    del input_shape  # the tower takes RGB at its own normalisation, converted from the student's
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    if not set(in_features) <= set(_NAMES):
        raise DistillInputError(f"MODEL.FPN.IN_FEATURES of {CLIP_BACKBONE} must be among {list(_NAMES)}")
    return CLIPFPN(
        bottom_up=CLIPBottomUp(build_clip_tower(cfg)),
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


assert build_clip_fpn_backbone.__name__ == CLIP_BACKBONE  # the registry names it after the function
