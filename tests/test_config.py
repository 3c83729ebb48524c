import pytest

from distill.config import add_distill_config, get_cfg, load_config
from distill.utils import DistillInputError


def test_defaults_follow_vild():
    cfg = get_cfg()
    d = cfg.MODEL.DISTILL
    assert d.METHOD == "vild" and d.TEMPERATURE == 0.01 and d.BG_INIT_STD == 0.01
    assert d.VILD.IMAGE_LOSS_WEIGHT == 0.5 and d.VILD.TEXT_LOSS_WEIGHT == 1.0
    assert d.VILD.BASE_TEXT_WEIGHT == pytest.approx(2 / 3) and d.TEACHER.TEMPLATES == "vild"
    assert cfg.MODEL.RPN.IOU_THRESHOLDS == (0.3, 0.7) and cfg.MODEL.RPN.IOU_LABELS == (0, -1, 1)


def test_add_to_foreign_cfg():
    from fvcore.common.config import CfgNode

    cfg = CfgNode({"MODEL": CfgNode({"X": 1})})
    add_distill_config(cfg)
    assert cfg.MODEL.X == 1 and cfg.MODEL.DISTILL.VILD.NOVEL_LOGIT_MODE == "zero"


def test_yaml_base_chain_and_overrides(tmp_path):
    (tmp_path / "Base.yaml").write_text(
        "MODEL:\n  DISTILL:\n    VILD:\n      IMAGE_LOSS_WEIGHT: 1.0\nSOLVER:\n  MAX_ITER: 10\n"
    )
    (tmp_path / "child.yaml").write_text("_BASE_: Base.yaml\nSOLVER:\n  BASE_LR: 0.5\n")
    cfg = load_config(str(tmp_path / "child.yaml"), ["SOLVER.MAX_ITER", "20"])
    assert (
        cfg.MODEL.DISTILL.VILD.IMAGE_LOSS_WEIGHT == 1.0
        and cfg.SOLVER.BASE_LR == 0.5
        and cfg.SOLVER.MAX_ITER == 20
    )
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


# keys whose default here is not detectron2's get_cfg(), and why
_FPN = "the value of detectron2's Base-RCNN-FPN.yaml (its get_cfg() is the C4 model)"
_1X = "the value of detectron2's 1x schedule (mask_rcnn_R_50_FPN_1x.yaml)"
D2_DIFFERENCES = {
    "DATALOADER.NUM_WORKERS": "2: CPU machines",
    "INPUT.FORMAT": "RGB: torchvision's images and weights",
    "MODEL.PIXEL_MEAN": "torchvision's ImageNet mean, RGB",
    "MODEL.PIXEL_STD": "torchvision's ImageNet std (detectron2's MSRA weights use 1)",
    "MODEL.DEVICE": "cpu: runs where there is no GPU",
    "MODEL.MASK_ON": "ViLD trains masks",
    "MODEL.ROI_HEADS.NAME": "OpenVocabROIHeads",
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": "ViLD: boxes for classes never trained",
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": "ViLD: masks for classes never trained",
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "norm (only read when CLIP_GRADIENTS.ENABLED)",
    **{
        k: _FPN
        for k in (
            "MODEL.ANCHOR_GENERATOR.SIZES",
            "MODEL.BACKBONE.NAME",
            "MODEL.FPN.IN_FEATURES",
            "MODEL.RESNETS.OUT_FEATURES",
            "MODEL.ROI_BOX_HEAD.NAME",
            "MODEL.ROI_BOX_HEAD.NUM_FC",
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
            "MODEL.ROI_HEADS.IN_FEATURES",
            "MODEL.ROI_MASK_HEAD.NUM_CONV",
            "MODEL.RPN.IN_FEATURES",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN",
            "MODEL.RPN.PRE_NMS_TOPK_TEST",
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
        )
    },
    **{k: _1X for k in ("SOLVER.BASE_LR", "SOLVER.MAX_ITER", "SOLVER.STEPS")},
}


def test_defaults_equal_detectron2_except_the_listed_keys():
    pytest.importorskip(
        "detectron2", reason="detectron2 not installed: the backends' defaults are not compared"
    )
    from detectron2.config import get_cfg as d2_get_cfg

    from distill.integrations.detectron2 import add_distill_config as d2_add_distill_config

    d2 = d2_add_distill_config(d2_get_cfg())
    ours = _flat(get_cfg())
    theirs = _flat(d2)
    missing = sorted(k for k in ours if k not in theirs)  # every key of ours is detectron2's
    assert not missing, f"keys detectron2 has not: {missing}"
    differ = {k for k in ours if not k.startswith("MODEL.DISTILL.") and _norm(ours[k]) != _norm(theirs[k])}
    assert differ == set(D2_DIFFERENCES), (
        sorted(differ - set(D2_DIFFERENCES)),
        sorted(set(D2_DIFFERENCES) - differ),
    )
    assert _flat(d2.MODEL.DISTILL) == _flat(get_cfg().MODEL.DISTILL)  # added to detectron2's config as it is


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
