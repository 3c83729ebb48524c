import types

import pytest
import torch
from torch import nn

from distill.methods import DistillMethod, Key, get_method_entry, method_names, register_lazy, register_method
from distill.modeling.ov_predictor import OpenVocabBoxPredictor
from distill.utils import DistillInputError


def test_builtin_methods_are_registered_without_torch_in_the_registry():
    import subprocess
    import sys

    code = (
        "import sys; from distill.methods import method_names; from distill.config import get_cfg; "
        "print(method_names(), get_cfg().MODEL.DISTILL.VILD.IMAGE_LOSS_WEIGHT, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'vild', 'vild_ensemble', 'vild_text'" in out and out.strip().endswith("0.5 False")


def test_registry_refuses_a_second_method_of_the_same_name_and_conflicting_node_defaults():
    assert "test_teacher_handle" not in method_names()  # a test's registration does not outlive it
    assert {"vild", "vild_text", "vild_ensemble"} <= set(method_names())
    with pytest.raises(DistillInputError, match="registered twice"):
        register_lazy("vild", "somewhere.else:Other", "VILD", {})
    with pytest.raises(DistillInputError, match="gives MODEL.DISTILL.VILD.TEXT_LOSS_WEIGHT the default"):
        register_lazy("vild_other_default", "x:Y", "VILD", {"TEXT_LOSS_WEIGHT": Key(2.0, "nonneg")})
    assert "vild_other_default" not in method_names()


def test_renamed_keys_say_where_they_went():
    from distill.config import load_config

    with pytest.raises(
        DistillInputError,
        match="IMAGE_LOSS_WEIGHT on the command line is now MODEL.DISTILL.VILD.IMAGE_LOSS_WEIGHT",
    ):
        load_config(None, ["MODEL.DISTILL.IMAGE_LOSS_WEIGHT", "0"])
    with pytest.raises(
        DistillInputError,
        match="ENSEMBLE.ENABLED on the command line is now MODEL.DISTILL.METHOD vild_ensemble",
    ):
        load_config(None, ["MODEL.DISTILL.ENSEMBLE.ENABLED", "True"])


class _Teacher:
    def __init__(self):
        self.model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))


class _WithTeacher(DistillMethod):
    """A method that reads the teacher inside the training graph."""

    uses_teacher = True

    def build(self, feature_dim, embed_dim):
        self.proj = nn.Linear(feature_dim, 4)

    def losses(self, batch):
        with torch.no_grad():
            target = self.teacher.model(
                torch.ones(1, 4, dtype=batch.features.dtype, device=batch.features.device)
            )
        return {"loss_t": self.option("WEIGHT") * (self.proj(batch.features) - target).pow(2).mean()}


@pytest.fixture
def with_teacher():
    register_method("test_teacher_handle", keys={"WEIGHT": Key(1.0, "nonneg")})(_WithTeacher)


def test_teacher_handle_is_frozen_kept_out_of_parameters_and_checkpoint_and_moves_with_the_student(
    with_teacher,
):
    assert get_method_entry("test_teacher_handle").node == "TEST_TEACHER_HANDLE"
    method = _WithTeacher()
    teacher = _Teacher()
    pred = OpenVocabBoxPredictor(8, torch.nn.functional.normalize(torch.randn(3, 4), dim=1), method)
    method.set_teacher(teacher)
    assert all(not p.requires_grad for p in teacher.model.parameters())
    ids = {id(p) for p in pred.parameters()}
    assert not any(id(p) in ids for p in teacher.model.parameters())  # not in any optimiser built from these
    assert not any(k.startswith("method._teacher") or "teacher" in k for k in pred.state_dict())
    pred.train()
    assert not teacher.model.training  # stays in eval
    pred.double()
    assert next(teacher.model.parameters()).dtype == torch.float64  # moved with the student
    losses, _, _ = pred.losses(
        torch.randn(5, 8, dtype=torch.float64), torch.zeros(5, dtype=torch.long), None, None
    )
    losses["loss_t"].backward()
    assert method.proj.weight.grad is not None and all(p.grad is None for p in teacher.model.parameters())


def test_build_method_hands_the_teacher_once(monkeypatch, with_teacher):
    import distill.methods as m
    from distill.config import load_config

    made = []
    fake = types.SimpleNamespace(
        create_teacher=lambda arch, pretrained: made.append((arch, pretrained)) or _Teacher()
    )
    monkeypatch.setitem(__import__("sys").modules, "distill.teacher", fake)
    method = m.build_method(load_config(None, ["MODEL.DISTILL.METHOD", "test_teacher_handle"]))
    assert len(made) == 1 and isinstance(method.teacher.model, nn.Sequential)
    assert (
        m.build_method(load_config(None, ["MODEL.DISTILL.METHOD", "vild"])).__dict__.get("_teacher") is None
    )
    assert len(made) == 1


def test_legacy_checkpoint_names_load_into_todays_model():
    from distill.utils.checkpoint import upgrade_state_dict

    old = {
        "roi_heads.embed_head.proj.weight": 1,
        "roi_heads.classifier.bg_embedding": 2,
        "roi_heads.box_regressor.bbox_pred.bias": 3,
        "roi_heads.image_embed_head.proj.weight": 4,
        "roi_heads.vild_mask_head.predictor.weight": 5,
        "roi_heads.box_predictor.image_embed_head.proj.bias": 6,
        "backbone.body.conv1.weight": 7,
    }
    assert upgrade_state_dict(old) == {
        "roi_heads.box_predictor.embed_head.proj.weight": 1,
        "roi_heads.box_predictor.classifier.bg_embedding": 2,
        "roi_heads.box_predictor.box_regressor.bbox_pred.bias": 3,
        "roi_heads.box_predictor.method.image_embed_head.proj.weight": 4,
        "roi_heads.mask_head.predictor.weight": 5,
        "roi_heads.box_predictor.method.image_embed_head.proj.bias": 6,
        "backbone.body.conv1.weight": 7,
    }


@pytest.mark.parametrize(
    "old, method",
    [
        ({"IMAGE_LOSS_WEIGHT": 0.0}, "vild_text"),
        ({}, "vild"),
        ({"ENSEMBLE": {"ENABLED": True}}, "vild_ensemble"),
    ],
)
def test_a_checkpoint_config_of_an_earlier_version_loads_with_todays_keys(old, method):
    """The config an older checkpoint carries (MODEL.DISTILL.IMAGE_LOSS_WEIGHT, ENSEMBLE, LSJ, OPTIMIZER, ...)
    loads for inference with the method its settings chose and every value in its new place."""
    import yaml

    from distill.integrations.inference import load_config_text

    d = {
        "TEXT_LOSS_WEIGHT": 1.0,
        "IMAGE_LOSS_WEIGHT": 0.5,
        "REGION_STORE": "regions",
        "NUM_DISTILL_PROPOSALS": 32,
        "OPTIMIZER": "AdamW",
        "DATASETS_ROOT": "somewhere",
        "LSJ": {"ENABLED": True, "SIZE": 640, "MIN_SCALE": 0.1, "MAX_SCALE": 2.0},
        "ENSEMBLE": {"ENABLED": False, "BASE_TEXT_WEIGHT": 0.5, "NOVEL_TEXT_WEIGHT": 0.25},
        "BACKBONE_WEIGHTS": "",
    }
    for k, v in old.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    cfg = load_config_text(yaml.safe_dump({"MODEL": {"DISTILL": d}}))
    m = cfg.MODEL.DISTILL
    assert m.METHOD == method and m.VILD.REGION_STORE == "regions" and m.VILD.NUM_DISTILL_PROPOSALS == 32
    assert m.VILD.BASE_TEXT_WEIGHT == 0.5 and m.VILD.NOVEL_TEXT_WEIGHT == 0.25
    assert cfg.SOLVER.OPTIMIZER == "AdamW" and cfg.DATASETS.ROOT == "somewhere" and cfg.INPUT.LSJ.SIZE == 640
    assert cfg.MODEL.BACKBONE.WEIGHTS == ""
    today = load_config_text(cfg.dump())  # today's config comes back as it is
    assert yaml.safe_load(today.dump()) == yaml.safe_load(cfg.dump())
