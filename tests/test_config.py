import pytest

from distill.config import add_distill_config, get_cfg, load_config
from distill.utils import DistillInputError


def test_defaults_follow_vild():
    cfg = get_cfg()
    d = cfg.MODEL.DISTILL
    assert d.TEMPERATURE == 0.01 and d.BG_INIT_STD == 0.01 and d.IMAGE_LOSS_WEIGHT == 0.5
    assert d.ENSEMBLE.BASE_TEXT_WEIGHT == pytest.approx(2 / 3) and d.TEACHER.TEMPLATES == "vild"
    assert cfg.MODEL.RPN.IOU_THRESHOLDS == (0.3, 0.7) and cfg.MODEL.RPN.IOU_LABELS == (0, -1, 1)


def test_add_to_foreign_cfg():
    from fvcore.common.config import CfgNode

    cfg = CfgNode({"MODEL": CfgNode({"X": 1})})
    add_distill_config(cfg)
    assert cfg.MODEL.X == 1 and cfg.MODEL.DISTILL.NOVEL_LOGIT_MODE == "zero"


def test_yaml_base_chain_and_overrides(tmp_path):
    (tmp_path / "Base.yaml").write_text("MODEL:\n  DISTILL:\n    IMAGE_LOSS_WEIGHT: 1.0\nSOLVER:\n  MAX_ITER: 10\n")
    (tmp_path / "child.yaml").write_text("_BASE_: Base.yaml\nSOLVER:\n  BASE_LR: 0.5\n")
    cfg = load_config(str(tmp_path / "child.yaml"), ["SOLVER.MAX_ITER", "20"])
    assert cfg.MODEL.DISTILL.IMAGE_LOSS_WEIGHT == 1.0 and cfg.SOLVER.BASE_LR == 0.5 and cfg.SOLVER.MAX_ITER == 20
    assert cfg.is_frozen()


def test_bad_keys_are_clear(tmp_path):
    (tmp_path / "bad.yaml").write_text("MODEL:\n  DISTILL:\n    TEMPERATUR: 0.1\n")
    with pytest.raises(DistillInputError, match="unknown config key MODEL.DISTILL.TEMPERATUR"):
        load_config(str(tmp_path / "bad.yaml"))
    with pytest.raises(DistillInputError, match="unknown config key SOLVER.NOPE on the command line"):
        load_config(None, ["SOLVER.NOPE", "1"])
    with pytest.raises(DistillInputError, match="KEY VALUE pairs"):
        load_config(None, ["SOLVER.MAX_ITER"])
    with pytest.raises(DistillInputError, match="config file not found"):
        load_config(str(tmp_path / "none.yaml"))


# keys whose default here is not detectron2's, and why
D2_DIFFERENCES = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN in both; kept for the listing",
    "MODEL.DEVICE": "cpu: this backend's default machine",
    "MODEL.PIXEL_MEAN": "RGB 0-255 (torchvision), detectron2 BGR",
    "MODEL.PIXEL_STD": "torchvision's ImageNet std, detectron2 (1, 1, 1) for MSRA weights",
    "MODEL.ROI_HEADS.NAME": "ViLDRoIHeads",
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead (detectron2: empty string)",
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": "ViLD: class-agnostic",
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2 in both",
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": "ViLD: class-agnostic",
    "MODEL.ROI_BOX_HEAD.NUM_FC": "2fc (detectron2's default 0 is set by its FPN yamls)",
    "MODEL.BACKBONE.NAME": "ResNet-FPN (detectron2: build_resnet_backbone)",
    "MODEL.RPN.IN_FEATURES": "P2-P6 (detectron2: res4, set by its FPN yamls)",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": "1000 as detectron2's FPN yamls",
    "MODEL.ROI_HEADS.IN_FEATURES": "P2-P5 (detectron2: res4)",
    "MODEL.FPN.IN_FEATURES": "res2-res5 (detectron2: [])",
    "MODEL.RESNETS.OUT_FEATURES": "res2-res5 (detectron2: res4)",
    "MODEL.MASK_ON": "masks on",
    "INPUT.MIN_SIZE_TRAIN": "(800,) (detectron2: (800,) too; kept for its type)",
    "INPUT.FORMAT": "RGB (torchvision)",
    "SOLVER.BASE_LR": "0.02 (detectron2: 0.001)",
    "SOLVER.IMS_PER_BATCH": "16 as detectron2's 1x schedule (detectron2: 16)",
    "SOLVER.MAX_ITER": "90000 as the 1x schedule (detectron2: 40000)",
    "SOLVER.STEPS": "(60000, 80000) as the 1x schedule (detectron2: (30000,))",
    "SOLVER.WARMUP_ITERS": "1000 in both",
    "SOLVER.CHECKPOINT_PERIOD": "5000 in both",
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "value in detectron2",
    "SOLVER.WEIGHT_DECAY_BIAS": "None in both",
    "DATALOADER.NUM_WORKERS": "2 (detectron2: 4)",
    "SEED": "-1 in both",
}


def test_defaults_equal_detectron2_except_the_listed_keys():
    pytest.importorskip("detectron2", reason="detectron2 not installed: the backends' defaults are not compared")
    from distill.integrations.detectron2 import get_detectron2_cfg

    d2 = get_detectron2_cfg()
    ours = _flat(get_cfg())
    theirs = _flat(d2)
    missing = sorted(k for k in ours if k not in theirs)
    assert not missing, f"keys detectron2 has not: {missing}"
    differ = {k for k in ours if _norm(ours[k]) != _norm(theirs[k])}
    assert differ <= set(D2_DIFFERENCES), sorted(differ - set(D2_DIFFERENCES))


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        if hasattr(v, "items"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _norm(v):
    return tuple(_norm(x) for x in v) if isinstance(v, (list, tuple)) else v
