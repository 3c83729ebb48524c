"""F-VLM and F-ViT: the frozen teacher tower as backbone (`distill.modeling.clip_backbone`), the score ensemble,
and the tools end to end on both backends (train, demo, evaluate, export with parity to eager)."""

from __future__ import annotations

import json

import pytest
import torch

from distill.methods.fvlm.method import vlm_ensemble
from distill.modeling.clip_backbone import CLIPTower, default_vit_blocks
from distill.utils import DistillInputError, read_json
from tests.methods.test_outside_method import REPO, _assert_export_matches_eager, run, tool_setup

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
STUDENT_MEAN = [123.675, 116.28, 103.53]
STUDENT_STD = [58.395, 57.12, 57.375]


def _teacher(arch: str):
    from distill.teacher import create_teacher

    torch.manual_seed(0)
    return create_teacher(arch, "none")


def _tower(teacher, fmt="RGB", mean=STUDENT_MEAN, std=STUDENT_STD) -> CLIPTower:
    return CLIPTower(teacher.model.visual, teacher.mean, teacher.std, mean, std, fmt)


def test_the_backbone_name_is_one_name():
    from distill.methods.fvlm import BACKBONE
    from distill.modeling.clip_backbone import CLIP_BACKBONE

    assert BACKBONE == CLIP_BACKBONE  # fvlm's copy keeps config loading torch-free


# ------------------------------------------------------------------------------------------------ ensemble
def test_vlm_ensemble_by_hand():
    p_det = torch.tensor([[0.5, 0.3, 0.2]])  # two classes, background last
    p_vlm = torch.tensor([[0.2, 0.8]])
    novel = torch.tensor([False, True])
    got = vlm_ensemble(p_det, p_vlm, novel, 0.35, 0.65, renormalize=False)
    want = torch.tensor([[0.5**0.65 * 0.2**0.35, 0.3**0.35 * 0.8**0.65, 0.2]])
    torch.testing.assert_close(got, want)
    renorm = vlm_ensemble(p_det, p_vlm, novel, 0.35, 0.65, renormalize=True)
    torch.testing.assert_close(renorm, want / want.sum())
    # a = b = 0: the detector alone; a = b = 1: the VLM alone (with the detector's background)
    torch.testing.assert_close(vlm_ensemble(p_det, p_vlm, novel, 0.0, 0.0, False), p_det)
    torch.testing.assert_close(
        vlm_ensemble(p_det, p_vlm, novel, 1.0, 1.0, False), torch.tensor([[0.2, 0.8, 0.2]])
    )


# ------------------------------------------------------------------------------------------------ the tower
def test_resnet_tower_levels_frozen_and_full_image_box_is_the_image_embedding():
    t = _teacher("distill-tiny-rn")
    tower = _tower(t).train()
    assert not any(m.training for m in tower.visual.modules())  # norms stay in eval
    assert list(tower.parameters()) == [] and "visual" not in dict(tower.named_children())
    size = t.input_size  # the attention pool's native grid: the full-image box is exactly CLIP's image path
    rgb = torch.rand(1, 3, size, size) * 255
    x = (rgb - torch.tensor(STUDENT_MEAN).view(1, 3, 1, 1)) / torch.tensor(STUDENT_STD).view(1, 3, 1, 1)
    feats, vlm = tower(x)
    assert [f.shape[-1] for f in feats] == [size // s for s in (4, 8, 16, 32)]
    assert [f.shape[1] for f in feats] == tower.out_channels
    emb = vlm([torch.tensor([[0.0, 0.0, size, size]])])
    clip_in = (rgb / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    want = t.encode_image(clip_in)
    torch.testing.assert_close(emb, want, atol=1e-5, rtol=1e-4)
    # a box of the left half is another region (random weights: a small difference, well above the tolerance)
    assert (vlm([torch.tensor([[0.0, 0.0, size / 2, size]])]) - want).abs().max() > 1e-4


def test_query_only_attention_pool_is_clips():
    from distill.modeling.clip_backbone import attention_pool

    pool = _teacher("distill-tiny-rn").model.visual.attnpool
    x = torch.randn(5, pool.k_proj.in_features, 2, 2)
    torch.testing.assert_close(attention_pool(pool, x), pool(x), atol=1e-5, rtol=1e-5)


def test_bgr_student_input_reaches_the_tower_as_the_same_rgb():
    t = _teacher("distill-tiny-rn")
    rgb = torch.rand(1, 3, 64, 96) * 255
    bgr_mean = STUDENT_MEAN[::-1]
    x_rgb = (rgb - torch.tensor(STUDENT_MEAN).view(1, 3, 1, 1)) / 50.0
    x_bgr = (rgb.flip(1) - torch.tensor(bgr_mean).view(1, 3, 1, 1)) / 1.0
    a = _tower(t, "RGB", STUDENT_MEAN, [50.0] * 3).to_tower_input(x_rgb)
    b = _tower(t, "BGR", bgr_mean, [1.0] * 3).to_tower_input(x_bgr)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_vit_tower_simple_pyramid_and_dense_regions():
    t = _teacher("distill-tiny-vit")
    tower = _tower(t)
    depth = len(t.model.visual.transformer.resblocks)
    assert tower.vit_blocks == default_vit_blocks(depth)
    assert default_vit_blocks(12) == [3, 5, 7, 11] and default_vit_blocks(24) == [6, 10, 14, 23]
    x = torch.randn(2, 3, 96, 128)  # not the teacher's 64 px: positional embeddings interpolated
    feats, vlm = tower(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(96 // s, 128 // s) for s in (4, 8, 16, 32)]
    emb = vlm([torch.tensor([[0.0, 0.0, 40.0, 40.0]]), torch.tensor([[8.0, 8.0, 90.0, 60.0]] * 2)])
    assert emb.shape == (3, t.dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    # only the rescaling layers train; the tower gets no gradient
    sum(f.sum() for f in feats).backward()
    assert all(p.grad is None for p in t.model.visual.parameters())
    assert all(p.grad is not None for p in tower.rescale.parameters())
    with pytest.raises(DistillInputError, match="4 increasing indices"):
        CLIPTower(t.model.visual, t.mean, t.std, STUDENT_MEAN, STUDENT_STD, vit_blocks=[0, 1, 2])


def test_a_tower_that_is_no_resnet_or_vit_is_one_line():
    with pytest.raises(DistillInputError, match="cannot serve as the detector's backbone"):
        CLIPTower(torch.nn.Linear(3, 3), CLIP_MEAN, CLIP_STD, STUDENT_MEAN, STUDENT_STD)


def test_a_checkpoint_of_another_teachers_tower_is_refused():
    a, b = _teacher("distill-tiny-rn"), _teacher("distill-tiny-rn")
    with torch.no_grad():
        next(b.model.visual.parameters()).add_(1.0)  # same architecture, other weights
    ta, tb = _tower(a), _tower(b)
    state = ta.state_dict()
    assert list(state) == ["teacher_fingerprint"]  # the tower's weights are not saved, its fingerprint is
    _tower(a).load_state_dict(state)
    with pytest.raises(DistillInputError, match="another teacher's image tower"):
        tb.load_state_dict(state)


# ------------------------------------------------------------------------------------------------ the tools
@pytest.fixture(scope="module")
def fvlm_setup(synthetic_root, tmp_path_factory):
    """(KEY VALUE overrides for F-VLM on the quickstart's tiny teacher, vocabulary file)."""
    return tool_setup(
        synthetic_root, tmp_path_factory.mktemp("fvlm"), REPO / "configs/synthetic/fvlm_tiny_rn.yaml"
    )


CONFIG = REPO / "configs/synthetic/fvlm_tiny_rn.yaml"


def test_fvlm_without_the_frozen_backbone_is_one_line(fvlm_setup, tmp_path):
    opts, _ = fvlm_setup
    r = run("train_net.py", "--config-file", CONFIG, "--backend", "torchvision", *opts,
            "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone", "OUTPUT_DIR", tmp_path / "x")  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "MODEL.BACKBONE.NAME build_clip_fpn_backbone" in r.stderr


@pytest.mark.parametrize("backend", ["torchvision", "detectron2"])
def test_fvlm_trains_demos_evaluates_exports(fvlm_setup, synthetic_root, tmp_path, backend):
    if backend == "detectron2":
        pytest.importorskip("detectron2", reason="detectron2 is not installed: its half of this test skips")
    opts, vocab = fvlm_setup
    out = tmp_path / "run"
    r = run("train_net.py", "--config-file", CONFIG, "--backend", backend, "--no-progress", *opts,
            "OUTPUT_DIR", out)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines() if x.strip()]
    assert any(x.get("loss_cls", 0) > 0 for x in lines)
    weights = out / "model_final.pth"
    state = torch.load(weights, map_location="cpu", weights_only=False)
    state = state.get("model", state)
    assert not any(".visual." in k for k in state)  # the frozen tower comes from the teacher, not the file
    assert any(k.endswith("teacher_fingerprint") for k in state)

    demo = tmp_path / "demo"
    r = run("demo.py", "--weights", weights, "--input", synthetic_root / "images" / "val", "--output", demo,
            "--vocabulary", vocab, "--score-thresh", "0.0")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("evaluate.py", "--gt", synthetic_root / "annotations" / "instances_val.json",
            "--predictions", demo / "predictions.json", "--output", tmp_path / "metrics.json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "AP50_novel" in (tmp_path / "metrics.json").read_text()
    # any vocabulary at test time: the VLM branch scores the typed names, encoded by the same teacher
    r = run("demo.py", "--weights", weights, "--input", synthetic_root / "images" / "val", "--output",
            tmp_path / "custom", "--custom-vocabulary", "circle,square", "--score-thresh", "0.0")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    pred = read_json(tmp_path / "custom" / "predictions.json")
    assert [c["name"] for c in pred["categories"]] == ["circle", "square"]
    assert pred["annotations"] and {a["category_id"] for a in pred["annotations"]} <= {1, 2}
    if backend == "detectron2":
        return
    onnx_dir = tmp_path / "onnx"
    r = run("export_model.py", "--weights", weights, "--vocabulary", vocab, "--output", onnx_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_export_matches_eager(onnx_dir, weights, vocab, synthetic_root, method="fvlm")
