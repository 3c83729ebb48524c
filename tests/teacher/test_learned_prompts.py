import json

import pytest
import torch
import torch.nn.functional as F

from distill.teacher import create_teacher
from distill.teacher.learned_prompts import PromptLearner, TextAdapter, encode_learned, load_learned
from distill.teacher.prompt_training import (
    PromptTrainConfig,
    box_iou,
    store_samples,
    train_prompts,
    uniform_ce_loss,
)
from distill.utils import DistillInputError

NAMES = ["circle", "square", "arrow", "ellipse"]


def test_zero_steps_equal_the_hand_template(tiny_teacher):
    hand = tiny_teacher.encode_text(NAMES, ["a photo of a {}."])
    for specific in (False, True):
        per = PromptLearner(tiny_teacher, NAMES, init="a photo of a", num_prompts=2, class_specific=specific)(
            tiny_teacher.model
        )
        assert per.shape == (2, len(NAMES), tiny_teacher.dim)
        torch.testing.assert_close(per[0], hand, atol=1e-6, rtol=0)
        torch.testing.assert_close(per[1], hand, atol=1e-6, rtol=0)


def _fake_data(dim, n=64, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(c, dim, generator=g), dim=-1)
    label = torch.arange(n) % c
    emb = F.normalize(centres[label] + 0.3 * torch.randn(n, dim, generator=g), dim=-1)
    return {"emb": emb, "label": label, "iou": torch.full((n,), 0.75)}


@pytest.mark.parametrize("method", ["coop", "detpro", "clip-adapter"])
def test_zero_step_file_matches_and_training_fits(tiny_teacher, tmp_path, method):
    data = _fake_data(tiny_teacher.dim)
    data["label"][::8] = -1  # some background for DetPro
    cfg = PromptTrainConfig(method=method, steps=0, alpha=0.0 if method == "clip-adapter" else 0.2)
    path = train_prompts(
        tiny_teacher, data, NAMES, cfg, tmp_path / "p0.safetensors", tmp_path / "w0", {"x": 1}, progress=False
    )
    hand = tiny_teacher.encode_text(NAMES, "vild" if method == "clip-adapter" else ["a photo of a {}."])
    torch.testing.assert_close(tiny_teacher.encode_text(NAMES, str(path)), hand, atol=1e-6, rtol=0)
    meta = json.loads((tmp_path / "p0.safetensors.json").read_text())
    assert meta["method"] == method and meta["training_data"] == {"x": 1} and len(meta["sha256"]) == 64
    assert meta["teacher"]["arch"] == "distill-tiny-vit"
    fg = data["label"] >= 0

    def acc(p):
        emb = tiny_teacher.encode_text(NAMES, str(p))
        return ((data["emb"][fg] @ emb.t()).argmax(1) == data["label"][fg]).float().mean().item()

    cfg = PromptTrainConfig(method=method, steps=60, lr=0.02, batch_size=64, iou_bins=(0.5, 0.7, 1.01))
    fitted = train_prompts(
        tiny_teacher, data, NAMES, cfg, tmp_path / "p.safetensors", tmp_path / "w", {}, progress=False
    )
    assert acc(fitted) > acc(path) + 0.2


def test_class_specific_prompts_follow_names_and_reject_unknown(tiny_teacher, tmp_path):
    cfg = PromptTrainConfig(method="coop", steps=0, class_specific=True)
    path = train_prompts(
        tiny_teacher,
        _fake_data(tiny_teacher.dim),
        NAMES,
        cfg,
        tmp_path / "c.safetensors",
        tmp_path / "w",
        {},
        progress=False,
    )
    a = encode_learned(tiny_teacher, NAMES, path)
    b = encode_learned(tiny_teacher, NAMES[::-1], path)
    torch.testing.assert_close(a.flip(0), b)
    with pytest.raises(DistillInputError, match="no context"):
        encode_learned(tiny_teacher, ["hexagon"], path)


def test_load_checks_teacher_and_hash(tiny_teacher, tmp_path):
    path = train_prompts(
        tiny_teacher,
        _fake_data(tiny_teacher.dim),
        NAMES,
        PromptTrainConfig(steps=0),
        tmp_path / "p.safetensors",
        tmp_path / "w",
        {},
        progress=False,
    )
    other = create_teacher("distill-tiny-vit")  # same arch; random weights are seeded: made other here
    with torch.no_grad():
        next(other.model.transformer.parameters()).add_(0.5)
    with pytest.raises(DistillInputError, match="text-tower weights differ"):
        other.encode_text(NAMES, str(path))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DistillInputError, match="sha256"):
        load_learned(path)


def test_uniform_background_loss_is_lowest_at_equal_similarity():
    equal = torch.zeros(3, 5)
    peaked = torch.tensor([[4.0, 0, 0, 0, 0]] * 3)
    assert uniform_ce_loss(equal).item() == pytest.approx(torch.log(torch.tensor(5.0)).item(), abs=1e-6)
    assert uniform_ce_loss(peaked) > uniform_ce_loss(equal)
    assert uniform_ce_loss(torch.zeros(0, 5)).item() == 0


def test_adapter_residual_ratio():
    t = F.normalize(torch.randn(4, 16), dim=-1)
    torch.testing.assert_close(TextAdapter(16, alpha=0.0)(t), t)
    assert not torch.allclose(TextAdapter(16, alpha=0.5)(t), t)


class _Store(dict):
    pass


def test_store_samples_labels_by_iou_with_base_boxes():
    from types import SimpleNamespace

    meta = SimpleNamespace(thing_classes=["circle", "diamond", "square"])
    d = {
        "image_id": 7,
        "annotations": [
            {"bbox": [0, 0, 10, 10], "category_id": 2},
            {"bbox": [50, 50, 10, 10], "category_id": 1},
        ],
    }  # diamond: not base
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 16], [50, 50, 60, 60], [30, 30, 40, 40]], dtype=torch.float32
    )
    store = _Store({7: (boxes, torch.randn(4, 8).half())})
    out = store_samples(store, [d], meta, ["circle", "square"])
    assert out["label"].tolist() == [1, 1, -1, -1]
    torch.testing.assert_close(out["iou"], box_iou(boxes, torch.tensor([[0.0, 0, 10, 10]]))[:, 0])
    assert out["emb"].shape == (4, 8)


def test_config_templates_key_takes_a_learned_file(tiny_teacher, tmp_path):
    from distill.config import load_config

    path = train_prompts(
        tiny_teacher,
        _fake_data(tiny_teacher.dim),
        NAMES,
        PromptTrainConfig(steps=3, lr=0.05),
        tmp_path / "p.safetensors",
        tmp_path / "w",
        {},
        progress=False,
    )
    cfg = load_config(None, ["MODEL.DISTILL.TEACHER.TEMPLATES", str(path)])
    emb = tiny_teacher.encode_text(NAMES, cfg.MODEL.DISTILL.TEACHER.TEMPLATES)
    torch.testing.assert_close(emb, encode_learned(tiny_teacher, NAMES, path))
    assert not torch.allclose(emb, tiny_teacher.encode_text(NAMES, ["a photo of a {}."]), atol=1e-4)


def test_vocabulary_cache_follows_a_retrained_file(tiny_teacher, tiny_weights, tmp_path, monkeypatch):
    from distill.teacher.vocabulary import vocabulary_embeddings

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    path, data = tmp_path / "p.safetensors", _fake_data(tiny_teacher.dim)
    train_prompts(
        tiny_teacher, data, NAMES, PromptTrainConfig(steps=0), path, tmp_path / "w0", {}, progress=False
    )
    a = vocabulary_embeddings(NAMES, "distill-tiny-vit", str(tiny_weights), str(path)).embeddings
    train_prompts(
        tiny_teacher,
        data,
        NAMES,
        PromptTrainConfig(steps=3, lr=0.05),
        path,
        tmp_path / "w1",
        {},
        progress=False,
    )
    b = vocabulary_embeddings(NAMES, "distill-tiny-vit", str(tiny_weights), str(path)).embeddings
    torch.testing.assert_close(b, encode_learned(tiny_teacher, NAMES, path))
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_step_and_resume_ends_the_same(tiny_teacher, tmp_path, monkeypatch, signum):
    import os
    import signal

    from distill.teacher import prompt_training
    from distill.utils.errors import TrainingInterrupted

    data = _fake_data(tiny_teacher.dim)
    cfg = PromptTrainConfig(method="clip-adapter", steps=6, checkpoint_every=100, batch_size=16)
    whole = train_prompts(
        tiny_teacher, data, NAMES, cfg, tmp_path / "a.safetensors", tmp_path / "wa", {}, progress=False
    )
    loss, calls = prompt_training._ce_loss, []

    def signalled(*a, **k):  # the signal arrives during the third step
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), getattr(signal, signum))
        return loss(*a, **k)

    monkeypatch.setattr(prompt_training, "_ce_loss", signalled)
    out, work = tmp_path / "b.safetensors", tmp_path / "wb"
    with pytest.raises(
        TrainingInterrupted, match=f"{signum} at step 3/6: checkpoint saved to {work / 'last.pt'}"
    ):
        train_prompts(tiny_teacher, data, NAMES, cfg, out, work, {}, progress=False)
    assert not out.exists() and torch.load(work / "last.pt", weights_only=False)["step"] == 3
    monkeypatch.setattr(prompt_training, "_ce_loss", loss)
    train_prompts(tiny_teacher, data, NAMES, cfg, out, work, {}, resume=True, progress=False)
    assert (
        json.loads(out.with_name(out.name + ".json").read_text())["sha256"]
        == json.loads(whole.with_name(whole.name + ".json").read_text())["sha256"]
    )
