"""CLIPSelf (distill/teacher/clipself.py, tools/train_clipself.py) on the seeded random tiny ViT and a few
tiny images: grids, the loss, the averaging, resume identity, the ResNet refusal, the output as a teacher."""

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.teacher import clipself
from distill.utils.errors import DistillInputError, TrainingInterrupted

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp("clipself_images")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(48, 64), (64, 40), (56, 56), (30, 70)]):
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2] = rng.integers(0, 255, 3)  # two flat halves and noise: regions differ
        img[h // 2 :] = rng.integers(0, 255, 3)
        img = (img + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i + 1:03d}.png"), img)
    return folder


def _cfg(**kw):
    base = dict(
        pretrained="none", steps=4, batch_size=2, image_size=64, lr=1e-3, warmup=1, checkpoint_every=100
    )
    return clipself.CLIPSelfConfig(**(base | kw))


# ---------------------------------------------------------------------------------------------- grids
@pytest.mark.parametrize("hw", [(480, 640), (37, 101), (1, 1)])
def test_grid_boxes_tile_the_image(hw):
    h, w = hw
    choices = clipself.grid_choices(6, 20)
    assert (6, 3) in choices and (4, 5) in choices and (6, 4) not in choices and (2, 5) not in choices
    counts = set()
    for seed in range(60):
        b = clipself.grid_boxes(h, w, torch.Generator().manual_seed(seed))
        counts.add(b.shape[0])
        assert b.dtype == torch.float32 and b.shape[1] == 4 and 1 <= b.shape[0] <= 20
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
        # a tiling: the areas add up to the image's and no two cells overlap
        area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum()
        assert area == pytest.approx(h * w, rel=1e-5)
        ix = (
            torch.minimum(b[:, None, 2], b[None, :, 2]) - torch.maximum(b[:, None, 0], b[None, :, 0])
        ).clamp(min=0)
        iy = (
            torch.minimum(b[:, None, 3], b[None, :, 3]) - torch.maximum(b[:, None, 1], b[None, :, 1])
        ).clamp(min=0)
        assert ((ix * iy).sum() - (ix * iy).diagonal().sum()).item() == pytest.approx(0, abs=1e-3 * h * w)
        # m rows, n columns within CLIPSelf's range
        m, n = len(torch.unique(b[:, 1])), len(torch.unique(b[:, 0]))
        assert m * n == b.shape[0] and (m, n) in choices
    assert len(counts) > 5  # the draw varies
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(clipself.grid_boxes(h, w, g1), clipself.grid_boxes(h, w, g2))  # pure in the generator


# ---------------------------------------------------------------------------------------------- loss
def test_a_few_steps_bring_the_student_toward_the_teachers_crops(images):
    from distill.data.images import read_image_rgb
    from distill.teacher import create_teacher

    teacher = create_teacher("distill-tiny-vit", "none")
    head = clipself.RegionHead(copy.deepcopy(teacher.model.visual))
    for p in head.parameters():
        p.requires_grad_(True)
    ims = [read_image_rgb(p) for p in sorted(images.iterdir())[:2]]
    g = torch.Generator().manual_seed(0)
    boxes = [clipself.grid_boxes(im.shape[1], im.shape[2], g) for im in ims]
    target = clipself.teacher_targets(teacher, ims, boxes, "center")
    xs, sboxes = [], []
    for im, b in zip(ims, boxes):
        x, s = clipself.student_input(im, 64, head.patch, teacher.mean, teacher.std)
        xs.append(x)
        sboxes.append(b * s)
    x = torch.stack(xs)
    assert x.shape == (2, 3, 64, 64) and target.shape == (sum(len(b) for b in boxes), teacher.dim)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = clipself.clipself_loss(head(x, sboxes), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert 0 < losses[0] <= 2 and losses[-1] < 0.7 * losses[0], losses
    # the teacher is frozen and untouched
    assert all(not p.requires_grad for p in teacher.model.parameters())


# ---------------------------------------------------------------------------------------------- averaging
def test_averaging_ratio():
    t = {"visual.a": torch.zeros(3), "visual.n": torch.tensor([1, 2]), "text": torch.ones(2)}
    s = {"visual.a": torch.full((3,), 2.0), "visual.n": torch.tensor([5, 5])}
    assert torch.equal(clipself.average_state_dict(s, t, 1.0)["visual.a"], s["visual.a"])
    assert torch.equal(clipself.average_state_dict(s, t, 0.0)["visual.a"], t["visual.a"])
    mid = clipself.average_state_dict(s, t, 0.7)
    assert torch.allclose(mid["visual.a"], torch.full((3,), 1.4))
    assert torch.equal(mid["visual.n"], t["visual.n"]) and torch.equal(
        mid["text"], t["text"]
    )  # ints, text: teacher's


def _load(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_output_is_a_teacher_with_its_provenance_and_ratio_zero_is_the_teacher(images, tmp_path):
    import json

    from safetensors import safe_open

    from distill.teacher import create_teacher

    ims = clipself.ImageSet.from_folder(images)
    trained = clipself.train_clipself(tmp_path / "r1", _cfg(steps=2, student_ratio=1.0), ims, progress=False)
    same = clipself.train_clipself(tmp_path / "r0", _cfg(steps=2, student_ratio=0.0), ims, progress=False)
    assert trained.name == "teacher_fp16.safetensors"
    base = create_teacher("distill-tiny-vit", "none").model.state_dict()
    r0, r1 = _load(same), _load(trained)
    assert set(r0) == set(base)
    assert all(torch.equal(r0[k], base[k].half()) for k in base)  # r = 0: the teacher
    moved = [k for k in base if k.startswith("visual.") and not torch.equal(r1[k], base[k].half())]
    assert moved and all(torch.equal(r1[k], base[k].half()) for k in base if not k.startswith("visual."))
    # r = 1: the student's last checkpoint
    student = torch.load(tmp_path / "r1" / "last.pt", weights_only=False)["student"]
    assert all(torch.equal(r1["visual." + k], v.half()) for k, v in student.items())

    loaded = create_teacher("distill-tiny-vit", str(trained))
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k].half(), r1[k]) for k in r1)
    emb = loaded.encode_regions(
        [torch.zeros(3, 40, 40, dtype=torch.uint8)], [torch.tensor([[0.0, 0, 20, 20]])]
    )
    assert emb.shape == (1, loaded.dim)
    with safe_open(str(trained), "pt") as f:
        meta = f.metadata()
    assert meta["arch"] == "distill-tiny-vit" and json.loads(meta["recipe"])["student_ratio"] == 1.0
    prov = json.loads(trained.with_suffix(".json").read_text())
    assert prov["base"]["arch"] == "distill-tiny-vit" and prov["base"]["pretrained"] == "none"
    assert prov["sha256"] == clipself.sha256_file(trained)


def test_base_weights_file_sha256_is_recorded(images, tmp_path, tiny_weights):
    ims = clipself.ImageSet.from_folder(images)
    out = clipself.train_clipself(tmp_path, _cfg(steps=1, pretrained=str(tiny_weights)), ims, progress=False)
    import json

    base = json.loads(out.with_suffix(".json").read_text())["base"]
    assert base["sha256"] == clipself.sha256_file(tiny_weights)


def test_a_zoo_base_is_named_with_its_sha256_not_its_path():
    from distill.model_zoo import get_checkpoint
    from distill.teacher import create_teacher

    teacher = create_teacher("methods-tiny-vit", None)
    prov = clipself.base_provenance(teacher, _cfg(pretrained="methods-tiny-vit"))
    assert prov["zoo_name"] == "methods-tiny-vit" and "path" not in prov
    assert prov["sha256"] == clipself.sha256_file(get_checkpoint("methods-tiny-vit"))


# ---------------------------------------------------------------------------------------------- resume
def test_a_signal_saves_the_step_and_a_resume_ends_the_same(images, tmp_path, monkeypatch):
    ims = clipself.ImageSet.from_folder(images)
    cfg = _cfg(steps=4)
    whole_path = clipself.train_clipself(tmp_path / "a", cfg, ims, progress=False)
    whole = _load(whole_path)
    loss, calls = clipself.clipself_loss, []

    def signalled(*a, **k):  # SIGTERM during the second step
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(*a, **k)

    monkeypatch.setattr(clipself, "clipself_loss", signalled)
    out = tmp_path / "b"
    with pytest.raises(
        TrainingInterrupted, match=f"SIGTERM at step 2/4: checkpoint saved to {out / 'last.pt'}"
    ) as e:
        clipself.train_clipself(out, cfg, ims, progress=False)
    assert e.value.exit_code == 128 + signal.SIGTERM and not (out / "teacher_fp16.safetensors").exists()
    monkeypatch.setattr(clipself, "clipself_loss", loss)
    with pytest.raises(DistillInputError, match="pass --resume"):
        clipself.train_clipself(out, cfg, ims, resume=False, progress=False)
    with pytest.raises(DistillInputError, match="other settings.*steps 4 vs 5"):
        clipself.train_clipself(out, _cfg(steps=5), ims, progress=False)
    resumed_path = clipself.train_clipself(out, cfg, ims, progress=False)
    resumed = _load(resumed_path)
    assert set(whole) == set(resumed) and all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert resumed_path.read_bytes() == whole_path.read_bytes()  # the file too (sorted header)


# ---------------------------------------------------------------------------------------------- the tool
def test_tool_refuses_a_resnet_teacher_in_one_line(images, tmp_path):
    tool = str(REPO / "tools/train_clipself.py")
    argv = ["--images", str(images), "--arch", "distill-tiny-rn", "--pretrained", "none"]
    r = subprocess.run(
        [sys.executable, tool, *argv, "--output-dir", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs an open_clip ViT teacher" in lines[0] and "ResNet" in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_tool_trains_and_needs_one_data_source(images, tmp_path, capsys):
    tool = _tool()
    assert tool.main(["--arch", "distill-tiny-vit", "--pretrained", "none"]) == 2
    assert "--images DIR or --world" in capsys.readouterr().err
    argv = ["--images", str(images), "--pretrained", "none", "--steps", "2", "--batch-size", "2"]
    argv += ["--image-size", "48", "--output-dir", str(tmp_path / "t")]
    assert tool.main(argv) == 0
    assert (tmp_path / "t" / "teacher_fp16.safetensors").is_file()
    assert tool.main(argv) == 2 and "pass --resume" in capsys.readouterr().err
    assert tool.main(argv + ["--resume"]) == 0


def _tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_clipself", REPO / "tools/train_clipself.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_schedule_warms_up_then_cosine_or_constant():
    cos = clipself._lr_lambda(_cfg(steps=110, warmup=10))
    flat = clipself._lr_lambda(_cfg(steps=110, warmup=10, schedule="constant"))
    assert cos(0) == pytest.approx(0.1) and cos(4) == pytest.approx(0.5) and cos(10) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.5) and cos(110) == pytest.approx(0.0, abs=1e-9)
    assert flat(0) == pytest.approx(0.1) and flat(60) == flat(109) == 1.0
    with pytest.raises(DistillInputError, match="schedule must be one of"):
        _cfg(schedule="step")
    with pytest.raises(DistillInputError, match="student_ratio"):
        _cfg(student_ratio=1.5)


def test_proposals_replace_the_grid_top_k_per_image(images, tmp_path, monkeypatch):
    import json

    props = [{"image_id": 1, "bbox": [1, 2, 10 + k, 12], "score": 0.1 * k} for k in range(5)]
    props += [{"image_id": 2, "bbox": [0, 0, 20, 30], "score": 0.9}]
    (tmp_path / "p.json").write_text(json.dumps(props))
    seen, real = [], clipself.teacher_targets

    def record(teacher, ims, boxes, geometry):
        seen.extend((tuple(im.shape), b.clone()) for im, b in zip(ims, boxes))
        return real(teacher, ims, boxes, geometry)

    monkeypatch.setattr(clipself, "teacher_targets", record)
    ims = clipself.ImageSet.from_folder(images)
    cfg = _cfg(steps=2, batch_size=4, proposals=str(tmp_path / "p.json"), top_k=3)
    clipself.train_clipself(tmp_path / "o", cfg, ims, progress=False)
    by_shape = {s: b for s, b in seen}
    assert torch.equal(
        by_shape[(3, 48, 64)], torch.tensor([[1.0, 2, 15, 14], [1, 2, 14, 14], [1, 2, 13, 14]])
    )
    assert torch.equal(by_shape[(3, 64, 40)], torch.tensor([[0.0, 0, 20, 30]]))
    assert len(by_shape[(3, 56, 56)]) >= 1  # no proposals: a grid
    with pytest.raises(DistillInputError, match="need image ids"):
        named = clipself.ImageSet([p for p in ims.paths], [None] * len(ims.paths))
        clipself.train_clipself(tmp_path / "n", cfg, named, progress=False)


def test_the_recipe_module_is_torch_free_and_knows_the_crop_geometries():
    import subprocess
    import sys

    from distill.teacher import crops
    from distill.teacher.clipself_config import GEOMETRIES

    assert GEOMETRIES == crops.GEOMETRIES
    code = "import sys, distill.teacher.clipself_config; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )
