import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from distill.config import load_config
from distill.data import synthetic_dataset
from distill.data.synthetic import SYNTHETIC_CATEGORIES
from distill.integrations.torchvision.builders import build_detector
from distill.integrations.torchvision.mapper import DatasetMapper, MapperConfig
from distill.integrations.torchvision.trainer import lr_at
from distill.methods import METHOD_TARGETS, RegionTargets
from distill.teacher import ClassEmbeddings
from tests.conftest import REPO, SMALL_MODEL

CONFIG = str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml")


@pytest.fixture(scope="module")
def vocab_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    g = torch.Generator().manual_seed(0)
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    emb = F.normalize(torch.randn(len(names), 32, generator=g), dim=1)
    base = [i for i, c in enumerate(SYNTHETIC_CATEGORIES) if c["split"] == "base"]
    ClassEmbeddings(emb, names).save(d / "all.npy")
    ClassEmbeddings(emb[base], [names[i] for i in base]).save(d / "base.npy")
    return d / "base.npy", d / "all.npy"


def test_forward_losses_and_inference_with_another_vocabulary(synthetic_root, vocab_files):
    torch.manual_seed(0)
    cfg = load_config(CONFIG, SMALL_MODEL)
    base = ClassEmbeddings.load(vocab_files[0])
    model = build_detector(cfg, base)
    dicts, _ = synthetic_dataset(synthetic_root, "train")
    mapper = DatasetMapper(MapperConfig(min_sizes=(96,), max_size=200), seed=0)
    batch = [mapper(d) for d in dicts[:2]]
    for b in batch:
        boxes = b["boxes"][:3].clone()
        b[METHOD_TARGETS] = RegionTargets(boxes, F.normalize(torch.randn(boxes.shape[0], 32), dim=1).half())
    model.train()
    losses = model(batch)
    assert set(losses) == {
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_vild_text",
        "loss_box_reg",
        "loss_vild_image",
        "loss_mask",
    }
    sum(losses.values()).backward()
    assert model.roi_heads.classifier.bg_embedding.grad is not None
    assert model.roi_heads.box_predictor.embed_head.proj.weight.grad.abs().sum() > 0
    model.eval()
    allv = ClassEmbeddings.load(vocab_files[1])
    model.roi_heads.set_vocabulary(allv, torch.tensor([c["split"] == "novel" for c in SYNTHETIC_CATEGORIES]))
    with torch.no_grad():
        out = model([DatasetMapper(MapperConfig(min_sizes=(96,), is_train=False))(dicts[0])])[0]
    assert out["labels"].max() < len(allv) and out["masks"].shape[1:] == (
        dicts[0]["height"],
        dicts[0]["width"],
    )
    assert (out["boxes"][:, 2:] <= torch.tensor([dicts[0]["width"], dicts[0]["height"]]) + 1e-3).all()


@pytest.mark.parametrize("method", ["vild_text", "vild", "vild_ensemble"])
def test_each_vild_method_trains_its_own_terms(synthetic_root, vocab_files, method):
    """The method key alone picks the losses, the heads that learn and the scores (no loss-weight switch)."""
    torch.manual_seed(0)
    cfg = load_config(CONFIG, [*SMALL_MODEL, "MODEL.DISTILL.METHOD", method])
    model = build_detector(cfg, ClassEmbeddings.load(vocab_files[0]))
    dicts, _ = synthetic_dataset(synthetic_root, "train")
    mapper = DatasetMapper(MapperConfig(min_sizes=(96,), max_size=200), seed=0)
    batch = [mapper(d) for d in dicts[:2]]
    for b in batch:
        boxes = b["boxes"][:3].clone()
        b[METHOD_TARGETS] = RegionTargets(boxes, F.normalize(torch.randn(boxes.shape[0], 32), dim=1).half())
    model.train()
    torch.manual_seed(1)  # the same sampled RoIs in both forwards
    losses = model(batch)
    assert ("loss_vild_image" in losses) == (method != "vild_text") and "loss_vild_text" in losses
    sum(losses.values()).backward()
    own = dict(model.roi_heads.box_predictor.method.named_parameters())
    assert bool(own) == (method == "vild_ensemble")  # the ensemble's separate image head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own.values())
    text = model.roi_heads.box_predictor.embed_head.proj.weight.grad.clone()
    model.zero_grad()
    torch.manual_seed(1)
    model(batch)["loss_vild_text"].backward()
    only_text = model.roi_heads.box_predictor.embed_head.proj.weight.grad
    # ViLD distils the text branch's own head; the ensemble leaves it to the text loss
    assert torch.equal(text, only_text) == (method != "vild")
    model.eval()
    x = torch.randn(5, model.roi_heads.box_head.out_dim)
    with torch.no_grad():
        scores, _ = model.roi_heads.box_predictor.predict(x)
        text_scores = model.roi_heads.box_predictor(x)[2].softmax(-1)
    assert torch.allclose(scores, text_scores) == (method != "vild_ensemble")


def test_dataset_proposals_batched_equal_one_by_one(synthetic_root, vocab_files):
    from distill.integrations.torchvision.proposals import dataset_proposals

    torch.manual_seed(0)
    model = build_detector(load_config(CONFIG, SMALL_MODEL), ClassEmbeddings.load(vocab_files[0]))
    dicts, _ = synthetic_dataset(synthetic_root, "train")  # one image size: a batch pads nothing
    one = dataset_proposals(model, dicts[:5], 96, 200, top_k=7, progress=False, batch_size=1)
    batched = dataset_proposals(model, dicts[:5], 96, 200, top_k=7, progress=False, batch_size=3)
    assert len(one) == 35 and [r["image_id"] for r in one] == [r["image_id"] for r in batched]
    for a, b in zip(one, batched):
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3) and a["score"] == pytest.approx(
            b["score"], abs=1e-5
        )


def test_lr_schedule_warmup_then_cosine():
    cfg = load_config(
        CONFIG,
        [
            "SOLVER.MAX_ITER",
            "100",
            "SOLVER.WARMUP_ITERS",
            "10",
            "SOLVER.BASE_LR",
            "1.0",
            "SOLVER.WARMUP_FACTOR",
            "0.1",
        ],
    )
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 10) == pytest.approx(
        0.5 * (1 + torch.cos(torch.tensor(0.1 * torch.pi))).item(), rel=1e-3
    )
    assert lr_at(cfg, 99) < 0.01
    cfg = load_config(
        CONFIG,
        [
            "SOLVER.MAX_ITER",
            "100",
            "SOLVER.WARMUP_ITERS",
            "0",
            "SOLVER.BASE_LR",
            "1.0",
            "SOLVER.LR_SCHEDULER_NAME",
            "WarmupMultiStepLR",
            "SOLVER.STEPS",
            "(50, 80)",
        ],
    )
    assert [round(lr_at(cfg, i), 6) for i in (0, 49, 50, 80)] == [1.0, 1.0, 0.1, 0.01]


def train_net(tmp_path, synthetic_root, vocab_files, flags=(), opts=(), check=True):
    args = [
        sys.executable,
        str(REPO / "tools/train_net.py"),
        "--config-file",
        CONFIG,
        "--no-progress",
        "--backend",
        "torchvision",
        *flags,
        *SMALL_MODEL,
        "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
        str(vocab_files[0]),
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        str(vocab_files[1]),
        "MODEL.DISTILL.METHOD",
        "vild_text",
        "DATASETS.ROOT",
        str(synthetic_root.parent),
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
        *opts,
    ]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # the checkout under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_train_resume_eval_only_and_bad_input(tmp_path, synthetic_root, vocab_files):
    bench = synthetic_root.parent / "synthetic"
    if not bench.exists():
        bench.symlink_to(synthetic_root)
    train_net(tmp_path, synthetic_root, vocab_files, opts=["SOLVER.MAX_ITER", "4"])
    out = tmp_path / "out"
    lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
    assert lines[-1]["iteration"] == 4 and "loss_vild_text" in lines[-1]
    assert (out / "model_final.pth").exists() and (out / "config.yaml").exists()
    # resume from the last checkpoint (iteration 4) to 6: only two more iterations are run
    r = train_net(tmp_path, synthetic_root, vocab_files, ["--resume"], ["SOLVER.MAX_ITER", "6"])
    lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
    assert lines[-1]["iteration"] == 6 and len(lines) == 2
    r = train_net(
        tmp_path,
        synthetic_root,
        vocab_files,
        ["--eval-only"],
        ["MODEL.WEIGHTS", str(out / "model_final.pth")],
    )
    assert "| box |" in r.stdout and "box_AP50_novel" in r.stdout.splitlines()[-1]
    demo = [
        sys.executable,
        str(REPO / "tools/demo.py"),
        "--config-file",
        CONFIG,
        "--backend",
        "torchvision",
        "--weights",
        str(out / "model_final.pth"),
        "--output",
        str(tmp_path / "demo"),
        "--score-thresh",
        "0.0",
    ]
    opts = [
        *SMALL_MODEL,
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        str(vocab_files[1]),
        "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
        str(vocab_files[0]),
    ]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # the checkout under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    r = subprocess.run(
        demo + ["--input", str(synthetic_root / "images/val/000001.png"), *opts],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    pred = json.loads((tmp_path / "demo" / "predictions.json").read_text())
    assert (
        len(pred["categories"]) == len(SYNTHETIC_CATEGORIES) and (tmp_path / "demo" / "000001.png").is_file()
    )
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = subprocess.run(demo + ["--input", str(bad), *opts], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "cannot decode image" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        demo + ["--input", str(bad), "--vocabulary", "custom", "--custom-vocabulary", " , ", *opts],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 2 and "empty vocabulary" in r.stderr
    # a key that does not exist; a checkpoint of another architecture
    r = train_net(tmp_path, synthetic_root, vocab_files, opts=["MODEL.NOPE", "1"], check=False)
    assert r.returncode == 2 and "unknown config key MODEL.NOPE" in r.stderr and "Traceback" not in r.stderr
    r = train_net(
        tmp_path,
        synthetic_root,
        vocab_files,
        ["--eval-only"],
        ["MODEL.WEIGHTS", str(out / "model_final.pth"), "MODEL.RESNETS.DEPTH", "34"],
        check=False,
    )
    assert r.returncode == 2 and "does not fit this model" in r.stderr


def test_two_process_gloo_training(tmp_path, synthetic_root, vocab_files):
    bench = synthetic_root.parent / "synthetic"
    if not bench.exists():
        bench.symlink_to(synthetic_root)
    r = train_net(tmp_path, synthetic_root, vocab_files, ["--num-gpus", "2"], ["SOLVER.MAX_ITER", "2"])
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.json").read_text().splitlines()]
    assert lines[-1]["iteration"] == 2 and "| box |" in r.stdout
    assert (tmp_path / "out" / "model_final.pth").exists()
    # the streaming evaluator: both ranks' detections joined into one results file, no part left behind
    inference = tmp_path / "out" / "inference"
    results = [json.loads(f.read_text()) for f in inference.glob("*/coco_instances_results.json")]
    assert results and all(isinstance(x, list) for x in results) and not list(inference.glob("*/.*.partial"))
    metrics = json.loads(next(inference.glob("*/metrics.json")).read_text())
    assert metrics["num_predictions"] == len(results[0])
