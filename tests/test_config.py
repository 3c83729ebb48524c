import pytest

from distill.config import DistillConfig, add_distill_config, get_cfg, load_config
from distill.utils import DistillInputError


def test_defaults_follow_vild():
    cfg = get_cfg()
    d = cfg.MODEL.DISTILL
    assert d.TEMPERATURE == 0.01 and d.BG_INIT_STD == 0.01 and d.IMAGE_LOSS_WEIGHT == 0.5
    assert d.ENSEMBLE.BASE_TEXT_WEIGHT == pytest.approx(2 / 3) and d.TEACHER.TEMPLATES == "vild"
    assert d.TEMPERATURE == DistillConfig().TEMPERATURE


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
