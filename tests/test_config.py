import importlib.util
import re

import pytest
import yaml

from distill.config import MOVED_KEYS, add_distill_config, check_config_values, get_cfg, load_config
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


# keys detectron2's config has not, outside MODEL.DISTILL: each beside detectron2's keys of its kind
ADDED_OUTSIDE_DISTILL = {
    "MODEL.BACKBONE.WEIGHTS",  # backbone initialisation ("imagenet", a file, or "" for scratch)
    "MODEL.BACKBONE.CLIP_VIT_BLOCKS",  # the ViT blocks of the frozen teacher-tower backbone (F-ViT)
    "MODEL.ROI_HEADS.FUSED_POOLER",  # the box and mask heads' RoI pooling on distill.ops
    "DATASETS.ROOT",  # where the registered datasets' files are
    "INPUT.LSJ.ENABLED",  # large-scale jitter (detectron2 has it in its LazyConfig baselines only)
    "INPUT.LSJ.SIZE",
    "INPUT.LSJ.MIN_SCALE",
    "INPUT.LSJ.MAX_SCALE",
    "SOLVER.OPTIMIZER",  # SGD or AdamW
    "SOLVER.LOG_PERIOD",  # beside SOLVER.CHECKPOINT_PERIOD (detectron2's trainer writes every 20)
    "SOLVER.CHECKPOINT_MAX_TO_KEEP",
}


def test_added_keys_exist_on_a_foreign_config_too():
    from fvcore.common.config import CfgNode

    cfg = add_distill_config(CfgNode({"MODEL": CfgNode({"X": 1}), "SOLVER": CfgNode({"BASE_LR": 0.5})}))
    flat = _flat(cfg)
    assert ADDED_OUTSIDE_DISTILL <= set(flat) and flat["MODEL.X"] == 1 and flat["SOLVER.BASE_LR"] == 0.5


@pytest.mark.parametrize("old", sorted(MOVED_KEYS))
def test_a_moved_key_says_where_it_went(old, tmp_path):
    new = MOVED_KEYS[old]
    assert new in _flat(get_cfg()) or any(k.startswith(new + ".") for k in _flat(get_cfg()))
    if old.endswith(".LSJ"):  # a node: in a yaml only
        yaml = tmp_path / "old.yaml"
        yaml.write_text("MODEL:\n  DISTILL:\n    LSJ:\n      ENABLED: True\n")
        with pytest.raises(
            DistillInputError, match=f": config key {re.escape(old)} is now {re.escape(new)}$"
        ):
            load_config(str(yaml))
        return
    value = str(_lookup(get_cfg(), new))
    with pytest.raises(
        DistillInputError, match=f"^config key {re.escape(old)} on the command line is now {re.escape(new)}$"
    ):
        load_config(None, [old, value])
    assert str(_lookup(load_config(None, [new, value]), new)) == value


def test_defaults_equal_detectron2_except_the_listed_keys():
    pytest.importorskip(
        "detectron2", reason="detectron2 not installed: the backends' defaults are not compared"
    )
    from detectron2.config import get_cfg as d2_get_cfg

    from distill.integrations.detectron2 import add_distill_config as d2_add_distill_config

    added = set(_flat(get_cfg())) - set(_flat(d2_get_cfg()))
    assert {k for k in added if not k.startswith("MODEL.DISTILL.")} == ADDED_OUTSIDE_DISTILL
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
    assert {k: theirs[k] for k in added} == {k: ours[k] for k in added}  # added to detectron2's as they are


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


# every key whose range the config checks, with its range: a key dropped from the defaults' declarations (or
# moved without its range) fails here
RANGED = {
    "positive": (
        "SOLVER.MAX_ITER SOLVER.BASE_LR SOLVER.IMS_PER_BATCH SOLVER.CHECKPOINT_PERIOD SOLVER.GAMMA "
        "INPUT.MAX_SIZE_TRAIN INPUT.MAX_SIZE_TEST TEST.DETECTIONS_PER_IMAGE MODEL.DISTILL.TEMPERATURE "
        "SOLVER.LOG_PERIOD MODEL.RPN.PRE_NMS_TOPK_TRAIN MODEL.RPN.PRE_NMS_TOPK_TEST "
        "MODEL.RPN.POST_NMS_TOPK_TRAIN MODEL.RPN.POST_NMS_TOPK_TEST MODEL.RPN.BATCH_SIZE_PER_IMAGE "
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE INPUT.LSJ.SIZE INPUT.LSJ.MIN_SCALE INPUT.LSJ.MAX_SCALE"
    ).split(),
    "nonneg": (
        "SOLVER.WARMUP_ITERS SOLVER.WEIGHT_DECAY SOLVER.MOMENTUM DATALOADER.NUM_WORKERS TEST.EVAL_PERIOD "
        "INPUT.MIN_SIZE_TEST MODEL.DISTILL.PIXEL_LOSS_WEIGHT MODEL.DISTILL.BG_INIT_STD "
        "SOLVER.CHECKPOINT_MAX_TO_KEEP MODEL.DISTILL.SEM_SEG.LOSS_WEIGHT"
    ).split(),
    "unit": (
        "SOLVER.WARMUP_FACTOR MODEL.ROI_HEADS.SCORE_THRESH_TEST MODEL.ROI_HEADS.NMS_THRESH_TEST "
        "MODEL.RPN.NMS_THRESH MODEL.RPN.POSITIVE_FRACTION MODEL.ROI_HEADS.POSITIVE_FRACTION"
    ).split(),
}
OUT_OF_RANGE = {"positive": ("0", "-1", "nan"), "nonneg": ("-1", "nan"), "unit": ("-0.5", "1.5", "nan")}
RANGED_KEYS = [(key, kind) for kind, keys in RANGED.items() for key in keys]


@pytest.mark.parametrize("key, kind", RANGED_KEYS)
def test_every_ranged_key_refuses_a_value_out_of_its_range(key, kind, tmp_path):
    default = _lookup(get_cfg(), key)
    for bad in OUT_OF_RANGE[kind]:
        if bad == "nan" and isinstance(default, int):
            continue  # an integer key takes no nan (a type error, also one line)
        with pytest.raises(DistillInputError, match=f"config value {re.escape(key)} = .*: must be a number"):
            if bad == "nan":  # a yaml's .nan (the command line has no float nan)
                node = float("nan")
                for part in reversed(key.split(".")):
                    node = {part: node}
                (tmp_path / "nan.yaml").write_text(yaml.safe_dump(node))
                load_config(str(tmp_path / "nan.yaml"))
            else:
                load_config(None, [key, bad])


def test_ranges_are_declared_with_the_defaults_on_both_backends():
    from distill.config.defaults import KEY_RANGES

    assert {k: KEY_RANGES.get(k) for k, _ in RANGED_KEYS} == dict(RANGED_KEYS)
    ours = _flat(get_cfg())
    assert set(KEY_RANGES) <= set(ours)  # a range of a key that does not exist would never be checked
    check_config_values(get_cfg())  # the defaults are within their ranges (raises otherwise)
    if importlib.util.find_spec("detectron2"):
        from distill.integrations.detectron2 import load_detectron2_config

        assert set(KEY_RANGES) <= set(_flat(load_detectron2_config()))
        for key, kind in RANGED_KEYS[:: max(1, len(RANGED_KEYS) // 6)]:  # a sample: detectron2 is slow
            with pytest.raises(DistillInputError, match=f"config value {re.escape(key)} = "):
                load_detectron2_config(None, [key, OUT_OF_RANGE[kind][0]])


def _lookup(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


# what OV-COCO and OV-LVIS set on the recipe they share (configs/Base-ViLD-R50-FPN-LSJ.yaml), and nothing else
DATASET_KEYS = {
    "MODEL.MASK_ON",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
    "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
    "DATASETS.TRAIN",
    "DATASETS.TEST",
    "DATALOADER.SAMPLER_TRAIN",
    "DATALOADER.REPEAT_THRESHOLD",
    "TEST.DETECTIONS_PER_IMAGE",
}


def test_the_dataset_bases_share_one_recipe():
    from tests.conftest import REPO

    common = _flat(load_config(str(REPO / "configs/Base-ViLD-R50-FPN-LSJ.yaml")))
    resolved = {}
    for name in ("ov_coco", "ov_lvis"):
        path = REPO / "configs" / name / "Base-ViLD-R50-FPN.yaml"
        raw = yaml.safe_load(path.read_text())
        assert raw.pop("_BASE_") == "../Base-ViLD-R50-FPN-LSJ.yaml"
        assert set(_flat(raw)) <= DATASET_KEYS, f"{name}: set it in the common base"
        resolved[name] = _flat(load_config(str(path)))
        assert {k for k, v in common.items() if resolved[name][k] != v} <= DATASET_KEYS
    coco, lvis = resolved["ov_coco"], resolved["ov_lvis"]
    assert {k for k in coco if coco[k] != lvis[k]} == DATASET_KEYS
