"""BARON as a method: bags from a step's proposals, the student's pseudo-words through the teacher's text tower,
the online teacher's crops, the losses and their queues; bad input; the tools end to end on both backends."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from distill.methods.base import RoIBatch, StepContext
from distill.modeling.heads import RegionEmbeddingHead, TextClassifier
from distill.utils import DistillInputError
from tests.methods.test_outside_method import REPO, _assert_export_matches_eager, run, tool_setup

FEAT = 32


def _method(seed=0, **options):
    from distill.config import get_cfg
    from distill.methods.baron.method import BARON
    from distill.teacher import create_teacher

    cfg = get_cfg()
    node = cfg.MODEL.DISTILL.BARON
    node.NUM_WORDS = 2
    for k, v in options.items():
        node[k] = v
    torch.manual_seed(seed)  # as the trainers seed the process with SEED before building the model
    m = BARON(node)
    m.set_teacher(create_teacher("distill-tiny-rn", "none"))
    m.build(FEAT, m.teacher.dim)
    return m.train()


def _context(objectness: float = 0.95, gt=True, size=(96, 128)) -> StepContext:
    g = torch.Generator().manual_seed(1)
    h, w = size
    boxes = torch.tensor([[20.0, 20.0, 50.0, 60.0], [60.0, 30.0, 100.0, 70.0], [5.0, 5.0, 30.0, 25.0]])
    return StepContext(
        proposals=[boxes],
        objectness=[torch.full((3,), objectness)],
        gt_boxes=[torch.tensor([[70.0, 10.0, 110.0, 40.0]])] if gt else None,
        images=[torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)],
        image_ids=torch.tensor([7]),
    )


def _batch(method, context, boxes) -> RoIBatch:
    torch.manual_seed(2)
    n = sum(b.shape[0] for b in boxes)
    emb = F.normalize(torch.randn(5, method.teacher.dim), dim=1)
    classifier = TextClassifier(emb)
    head = RegionEmbeddingHead(FEAT, method.teacher.dim)
    x = torch.randn(8, FEAT)
    e = head(x)
    return RoIBatch(
        x, e, classifier(e), torch.randint(0, 6, (8,)), torch.randn(n, FEAT, requires_grad=True), None,
        classifier, torch.zeros(5, dtype=torch.bool), head, context,
    )  # fmt: skip


def test_bags_are_pooled_distilled_and_queued():
    m = _method()
    ctx = _context()
    boxes = m.step_rois(ctx)
    bags = ctx.state["baron_bags"][0]
    assert bags and boxes[0].shape == (sum(b.boxes.shape[0] for b in bags), 4)
    h, w = ctx.images[0].shape[-2:]
    assert (
        (boxes[0][:, 0::2] >= 0).all() and (boxes[0][:, 0::2] <= w).all() and (boxes[0][:, 1::2] <= h).all()
    )
    batch = _batch(m, ctx, boxes)
    losses = m.losses(batch)
    assert set(losses) == {"loss_cls", "loss_bag", "loss_single"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_bag"] > 0
    (losses["loss_bag"] + losses["loss_single"]).backward()
    # gradients reach the pooled features and the pseudo-word projection, not the frozen teacher
    assert batch.extra_features.grad.abs().sum() > 0 and m.word_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.model.parameters())
    sequences = sum(b.permutations.shape[0] for b in bags)
    rows = sum(b.permutations.numel() for b in bags)
    assert len(m.queues["bag_teacher"]) == len(m.queues["bag_student"]) == sequences
    assert len(m.queues["single_teacher"]) == rows
    assert int(m.teacher_crops) == len(bags) and int(m.images_seen) == 1 and int(m.step) == 1
    # the queue and the step are in the state: a resumed run continues with them
    state = m.state_dict()
    assert int(state["step"]) == 1 and (state["queues.bag_teacher.image_ids"] == 7).sum() == sequences
    assert not any(k.startswith("teacher.") or "visual." in k or "transformer." in k for k in state)


def test_the_draws_are_a_function_of_the_step():
    a, b = _method(), _method()
    assert torch.equal(a.step_rois(_context())[0], b.step_rois(_context())[0])
    a.step_rois(_context())
    b.load_state_dict(a.state_dict())  # a resumed copy draws what the original draws next
    assert int(b.step) == 2
    assert torch.equal(a.step_rois(_context())[0], b.step_rois(_context())[0])
    # another seed (SEED) draws other bags at the same step
    other = _method(seed=1)
    assert int(other.draw_seed) == 1 and int(a.draw_seed) == 0
    assert other._generator().initial_seed() != _method(seed=0)._generator().initial_seed()


def test_teacher_bag_embedding_is_the_crop_of_the_spanning_box():
    m = _method(SINGLE_WEIGHT=0.0)
    ctx = _context()
    boxes = m.step_rois(ctx)
    bags = ctx.state["baron_bags"][0]
    plan = m._plan(ctx.state["baron_bags"], ctx.image_ids, "cpu")
    teacher_bag, single = m._teacher_embeddings(ctx, ctx.state["baron_bags"], plan)
    assert single is None and teacher_bag.shape == (plan["seq_bag"].shape[0], m.teacher.dim)
    t = m.teacher
    crop = t.crop_regions(ctx.images[0].float() / 255, bags[0].spanned_box[None], geometry="stretch")
    torch.testing.assert_close(teacher_bag[0], t.encode_image(crop)[0], atol=1e-5, rtol=1e-4)
    losses = m.losses(_batch(m, ctx, boxes))
    assert "loss_single" not in losses


def test_an_image_without_usable_boxes_is_a_counted_skip():
    m = _method()
    ctx = _context(objectness=0.1, gt=False)
    boxes = m.step_rois(ctx)
    assert boxes[0].shape == (0, 4) and int(m.images_without_bags) == 1
    losses = m.losses(_batch(m, ctx, boxes))
    assert losses["loss_bag"].item() == 0 and losses["loss_bag"].requires_grad
    assert int(m.teacher_crops) == 0


def test_too_many_words_for_the_text_tower_is_one_line():
    with pytest.raises(DistillInputError, match="NUM_WORDS 3.*29 text positions.*24"):
        _method(NUM_WORDS=3)


# ------------------------------------------------------------------------------------------------ the tools
CONFIG = REPO / "configs/synthetic/baron_tiny_rn.yaml"


@pytest.fixture(scope="module")
def baron_setup(synthetic_root, tmp_path_factory):
    """(KEY VALUE overrides for BARON on the quickstart's tiny teacher, vocabulary file)."""
    return tool_setup(synthetic_root, tmp_path_factory.mktemp("baron"), CONFIG)


def test_too_many_words_in_the_tool_is_one_line(baron_setup, tmp_path):
    opts, _ = baron_setup
    r = run("train_net.py", "--config-file", CONFIG, "--backend", "torchvision", *opts,
            "MODEL.DISTILL.BARON.NUM_WORDS", "4", "OUTPUT_DIR", tmp_path / "x")  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "NUM_WORDS 4" in r.stderr


@pytest.mark.parametrize("backend", ["torchvision", "detectron2"])
def test_baron_trains_demos_evaluates_exports(baron_setup, synthetic_root, tmp_path, backend):
    if backend == "detectron2":
        pytest.importorskip("detectron2", reason="detectron2 is not installed: its half of this test skips")
    opts, vocab = baron_setup
    out = tmp_path / "run"
    r = run("train_net.py", "--config-file", CONFIG, "--backend", backend, "--no-progress", *opts,
            "OUTPUT_DIR", out)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines() if x.strip()]
    assert any(x.get("loss_bag", 0) > 0 for x in lines) and any(x.get("loss_single", 0) > 0 for x in lines)
    weights = out / "model_final.pth"
    state = torch.load(weights, map_location="cpu", weights_only=False)
    state = state.get("model", state)
    step = next(v for k, v in state.items() if k.endswith("method.step"))
    assert int(step) == 3  # one draw per iteration, saved: a resumed run draws on from here
    ids = next(v for k, v in state.items() if k.endswith("method.queues.bag_teacher.image_ids"))
    assert (ids >= 0).any()  # the queue is in the checkpoint
    assert not any(".visual." in k or ".transformer." in k for k in state)  # the teacher is not saved

    demo = tmp_path / "demo"
    r = run("demo.py", "--weights", weights, "--input", synthetic_root / "images" / "val", "--output", demo,
            "--vocabulary", vocab, "--score-thresh", "0.0")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("evaluate.py", "--gt", synthetic_root / "annotations" / "instances_val.json",
            "--predictions", demo / "predictions.json", "--output", tmp_path / "metrics.json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "AP50_novel" in (tmp_path / "metrics.json").read_text()
    if backend == "detectron2":
        return
    onnx_dir = tmp_path / "onnx"
    r = run("export_model.py", "--weights", weights, "--vocabulary", vocab, "--output", onnx_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_export_matches_eager(onnx_dir, weights, vocab, synthetic_root, method="baron")


def test_a_killed_baron_run_resumes_to_the_same_weights_and_queues(baron_setup, tmp_path):
    """The bags, the word dropout and the queues continue from the checkpoint: bit-identical to one run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    opts, _ = baron_setup
    opts = [*opts, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0"]

    def cmd(out, *flags):
        return [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(CONFIG), "--backend",
                "torchvision", "--no-progress", *flags, *opts, "OUTPUT_DIR", str(out)]  # fmt: skip

    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"} | {
        k: v for k, v in os.environ.items() if k == "PYTHONPATH"
    }
    a = subprocess.run(cmd(tmp_path / "a"), capture_output=True, text=True, env=env, timeout=900)
    assert a.returncode == 0, a.stderr[-3000:]
    b = tmp_path / "b"
    p = subprocess.Popen(cmd(b), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 600
    while not (b / "model_0000001.pth").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (b / "model_final.pth").exists(), "the run finished before it was killed"
    r = subprocess.run(cmd(b, "--resume"), capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    wa = torch.load(tmp_path / "a" / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    wb = torch.load(b / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert wa.keys() == wb.keys() and any("method.queues.bag_teacher.embeddings" in k for k in wa)
    diff = {k: (wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].numel()}
    assert max(diff.values()) == 0.0, sorted(diff.items(), key=lambda kv: -kv[1])[:3]


def test_a_bgr_backend_s_images_reach_the_teacher_as_rgb():
    rgb, bgr = _context(), _context()
    bgr.images, bgr.image_format = [im.flip(0) for im in bgr.images], "BGR"  # detectron2's channel order
    m = _method(SINGLE_WEIGHT=0.0)
    m.step_rois(rgb)
    bags = rgb.state["baron_bags"]
    plan = m._plan(bags, rgb.image_ids, "cpu")
    want, _ = m._teacher_embeddings(rgb, bags, plan)
    got, _ = m._teacher_embeddings(bgr, bags, plan)
    torch.testing.assert_close(got, want)
    flipped = StepContext(images=bgr.images, image_format="RGB")  # the same pixels read as RGB differ
    assert not torch.allclose(m._teacher_embeddings(flipped, bags, plan)[0], want)
