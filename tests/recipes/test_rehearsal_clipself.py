"""CLIPSelf, then F-ViT with it (benchmarks/workloads/recipes.py `clipself_recipe`, GETTING_STARTED.md), every
command in order on a COCO-shaped tree: CLIPSelf from a random ViT-B-16 for one step of one training image at its
real size, 1024 px (4,096 patch tokens, the grid's up-to-20 crops encoded by the teacher at 224 px), under
torchrun with one rank; the text embeddings and F-ViT on OV-COCO at 640 px (one iteration, evaluation, demo) all
loading the tower from the file that step wrote. OV-COCO and torchvision only: the CLIPSelf step alone is about
70 s on one core (2-core machine, a training on the other), the whole sequence about 2 minutes; OV-LVIS and
detectron2 differ from F-ViT's rehearsal (tests/recipes/test_rehearsal_fvlm.py) only in the teacher file, which
the structural tests below check."""

import json
import math
import os
import re

import pytest
import yaml

from benchmarks.workloads.recipes import (
    CLIPSELF_TEACHER,
    DATASETS,
    FROZEN_VARIANTS,
    Rehearsal,
    clipself_recipe,
    clipself_steps,
    command_line,
    dataset_paths,
    fvlm_recipe,
    run_stage,
)
from distill.data.shaped import write_shaped_tree
from distill.teacher import ClassEmbeddings
from tests.conftest import REPO
from tests.recipes.test_rehearsal import CLASSES, NUM_TRAIN, NUM_VAL, check_demo, check_metrics

STAGES = ["prepare", "clipself", "text", "train", "evaluate", "demo"]
RUN = "fvit_b16_clipself"
TAG = "vitb16_clipself"


def _arg(stage, flag: str) -> str:
    return stage.args[stage.args.index(flag) + 1]


def _check_teacher_file(cwd) -> None:
    """CLIPSelf wrote a ViT-B-16 teacher at 1024 px that create_teacher loads with the file's weights."""
    import torch
    from safetensors import safe_open

    from distill.teacher import create_teacher

    path = cwd / CLIPSELF_TEACHER
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["method"] == "clipself" and side["arch"] == "ViT-B-16"
    assert side["recipe"]["image_size"] == 1024 and side["steps_done"] == 1
    assert math.isfinite(side["final_loss"])
    teacher = create_teacher("ViT-B-16", str(path))
    assert teacher.dim == 512
    with safe_open(str(path), "pt") as f:
        proj = f.get_tensor("visual.proj")
    assert torch.equal(teacher.model.visual.proj.detach(), proj.float())  # loaded, not the random init


def _check(stage: str, cwd) -> None:
    out = cwd / "output" / "ov_coco"
    if stage == "clipself":
        _check_teacher_file(cwd)
    elif stage == "text":
        for split, n in zip(("all", "base"), CLASSES["ov_coco"]):
            emb = ClassEmbeddings.load(out / "text" / f"ov_coco_{split}_{TAG}.npy")
            assert emb.embeddings.shape == (n, 512)
            assert emb.provenance["teacher"]["pretrained"] == CLIPSELF_TEACHER  # the config checks this name
    elif stage == "train":
        assert (out / RUN / "model_final.pth").is_file()
        cfg = yaml.safe_load((out / RUN / "config.yaml").read_text())
        teacher = cfg["MODEL"]["DISTILL"]["TEACHER"]
        assert (teacher["ARCH"], teacher["PRETRAINED"]) == ("ViT-B-16", CLIPSELF_TEACHER)
        assert cfg["INPUT"]["LSJ"]["SIZE"] == 640 and cfg["MODEL"]["DISTILL"]["METHOD"] == "fvit"
        lines = [json.loads(x) for x in (out / RUN / "metrics.json").read_text().splitlines() if x.strip()]
        losses = [v for line in lines for k, v in line.items() if k.startswith(("loss", "total_loss"))]
        assert losses and all(math.isfinite(v) for v in losses), lines
    elif stage == "evaluate":
        check_metrics(out / f"{RUN}_eval", "ov_coco")
    elif stage == "demo":
        check_demo(out / f"{RUN}_demo")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The OV-COCO sequence, one stage process at a time (the CLIPSelf step at 1024 px peaks near 5 GB); returns
    its working folder and a line of seconds per stage."""
    shaped = write_shaped_tree(tmp_path_factory.mktemp("datasets"), NUM_TRAIN, NUM_VAL)
    cwd = tmp_path_factory.mktemp("ov_coco_clipself")
    os.symlink(REPO / "configs", cwd / "configs")  # the configs' relative paths, as in a checkout
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTILL_CACHE": str(tmp_path_factory.mktemp("cache"))}
    demo = str(shaped / "coco" / "val2017" / f"{NUM_TRAIN + 1:012d}.jpg")
    stages = clipself_recipe("ov_coco", "torchvision", str(shaped), Rehearsal(demo_image=demo))
    assert [s.name for s in stages] == STAGES
    times = []
    for stage in stages:
        r = run_stage(stage, str(REPO), str(cwd), str(shaped), env)
        times.append(f"ov_coco clipself torchvision {stage.name}: {r.seconds:.1f} s")
        assert r.returncode == 0, f"{stage.name}: {r.stderr}"
        _check(stage.name, cwd)
    return cwd, times


def test_clipself_recipe_rehearsal_torchvision(rehearsal):
    cwd, times = rehearsal
    print("\n".join(times))  # pytest -rP shows where time goes
    assert (cwd / "output" / "ov_coco" / f"{RUN}_demo").is_dir()


def test_clipself_recipes_name_their_configs_teacher_and_files():
    from distill.config import load_config

    clipself = set()
    for dataset in DATASETS:
        stages = {s.name: s for s in clipself_recipe(dataset)}
        assert list(stages) == STAGES
        cfg = load_config(str(REPO / dataset_paths(dataset).config_dir / f"{RUN}.yaml"))
        base = load_config(str(REPO / dataset_paths(dataset).config_dir / "fvit_b16.yaml"))
        d = cfg.MODEL.DISTILL
        assert (d.TEACHER.ARCH, d.TEACHER.PRETRAINED) == ("ViT-B-16", CLIPSELF_TEACHER)
        assert stages["clipself"].outputs == [CLIPSELF_TEACHER]  # the file the config's tower loads
        text = stages["text"]
        assert (_arg(text, "--teacher"), _arg(text, "--pretrained")) == ("ViT-B-16", CLIPSELF_TEACHER)
        assert text.outputs == [d.TEST_CLASS_EMBEDDINGS, d.TRAIN_CLASS_EMBEDDINGS]
        assert all(TAG in f for f in text.outputs)
        assert stages["train"].outputs == [cfg.OUTPUT_DIR] == [f"output/{dataset}/{RUN}"]
        assert _arg(stages["train"], "--config-file") == f"configs/{dataset}/{RUN}.yaml"
        # F-ViT's recipe otherwise: only the teacher, its class embeddings and the output folder differ
        for key in ("INPUT", "SOLVER", "MODEL.BACKBONE", "MODEL.DISTILL.FVIT", "MODEL.ROI_HEADS", "DATASETS"):
            a, b = cfg, base
            for k in key.split("."):
                a, b = a[k], b[k]
            assert a == b, key
        assert cfg.MODEL.MASK_ON == base.MODEL.MASK_ON == (dataset == "ov_lvis")
        clipself.add(command_line(stages["clipself"]))
    assert len(clipself) == 1  # one CLIPSelf run on COCO train2017 serves both datasets
    (line,) = clipself
    assert line.startswith(
        "torchrun --nproc-per-node 8 tools/train_clipself.py --images $DISTILL_DATASETS/coco/train2017"
    )
    a = clipself_recipe("ov_coco")[1]
    want = {
        "--arch": "ViT-B-16",
        "--pretrained": "openai",
        "--image-size": "1024",
        "--max-split": "6",
        "--max-cells": "20",
        "--lr": "1e-5",
        "--weight-decay": "0.1",
        "--warmup": "1000",
        "--student-ratio": "0.7",
        "--batch-size": "2",
        "--steps": "44358",
    }
    assert {k: _arg(a, k) for k in want} == want


def test_clipself_steps_are_six_epochs_of_coco():
    assert clipself_steps() == 44_358 == 6 * math.ceil(118_287 / 16)
    assert clipself_steps(gpus=4) == 6 * math.ceil(118_287 / 8)  # fewer GPUs: more steps, the same epochs
    assert _arg(clipself_recipe("ov_lvis", gpus=4)[1], "--steps") == str(clipself_steps(gpus=4))


def test_clipself_configs_load_on_detectron2():
    pytest.importorskip("detectron2", reason="detectron2 is not installed (INSTALL.md: detectron2)")
    d2 = pytest.importorskip("distill.integrations.detectron2")
    for dataset in DATASETS:
        cfg = d2.load_detectron2_config(str(REPO / "configs" / dataset / f"{RUN}.yaml"))
        assert cfg.MODEL.DISTILL.TEACHER.PRETRAINED == CLIPSELF_TEACHER
        assert cfg.MODEL.WEIGHTS == "" and cfg.INPUT.FORMAT == "RGB"


def test_getting_started_lists_every_command_of_the_clipself_recipes():
    page = re.sub(r"\s+", " ", (REPO / "GETTING_STARTED.md").read_text().replace("\\\n", " "))
    for dataset in DATASETS:
        for stage in clipself_recipe(dataset):
            assert command_line(stage) in page, command_line(stage)


def test_clipself_rehearsal_overrides():
    stages = {s.name: s for s in clipself_recipe("ov_lvis", "torchvision", rehearsal=Rehearsal())}
    cs = stages["clipself"]
    # random weights, one step of one image, at the real image size and grid
    assert (_arg(cs, "--pretrained"), _arg(cs, "--steps"), _arg(cs, "--batch-size")) == ("none", "1", "1")
    assert (_arg(cs, "--image-size"), _arg(cs, "--max-cells")) == ("1024", "20") and cs.torchrun
    assert _arg(stages["text"], "--pretrained") == CLIPSELF_TEACHER  # the file the CLIPSelf step wrote
    assert _arg(stages["text"], "--templates") == "simple"
    train = stages["train"].args
    assert float(train[train.index("SOLVER.BASE_LR") + 1]) == float(FROZEN_VARIANTS["fvit_b16"].rehearsal_lr)
    for name in ("train", "evaluate", "demo"):
        a = stages[name].args
        # the tower loads from the config's teacher file (no random-teacher override), batch 1, no workers
        assert "MODEL.DISTILL.TEACHER.PRETRAINED" not in a and "--num-gpus" not in a
        assert a[a.index("MODEL.DISTILL.TEACHER.TEMPLATES") + 1] == "simple"
    real = clipself_recipe("ov_lvis")
    assert "none" not in " ".join(a for s in real for a in s.args)
    # F-ViT's own rehearsal still draws a random tower
    fvit = {
        s.name: s for s in fvlm_recipe("ov_coco", "torchvision", rehearsal=Rehearsal(), variant="fvit_b16")
    }
    assert _arg(fvit["train"], "MODEL.DISTILL.TEACHER.PRETRAINED") == "none"
