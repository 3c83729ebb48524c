"""The BARON recipes (benchmarks/workloads/recipes.py `baron_recipe`, GETTING_STARTED.md), every command in order on
COCO- / LVIS-shaped trees at the configs' real shapes with random weights and one iteration: R50-FPN at 1024 px
with LSJ, the ViT-B/32 teacher's text tower over the bags' pseudo-words and its image tower on their crops, online.
One dataset per backend keeps `make test` short: OV-COCO on torchvision (65 classes, top 300 proposals, 3 groups),
OV-LVIS on detectron2 (1,203 classes, mask head, top 500, 6 groups). Random weights leave the RPN unconfident, but
the ground-truth boxes join the bags, so the step has bags and a bag loss. No proposal or region stage."""

import json
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import yaml

from benchmarks.workloads.recipes import (
    DATASETS,
    Rehearsal,
    baron_recipe,
    command_line,
    dataset_paths,
    recipe,
    run_stage,
)
from distill.data.shaped import write_shaped_tree
from distill.teacher import ClassEmbeddings
from tests.conftest import REPO
from tests.recipes.test_rehearsal import (
    CLASSES,
    NUM_TRAIN,
    NUM_VAL,
    _has_detectron2,
    check_demo,
    check_metrics,
)

DATASET = {"torchvision": "ov_coco", "detectron2": "ov_lvis"}  # one dataset per backend
TOPK = {"ov_coco": 300, "ov_lvis": 500}  # the configs' BARON values the rehearsal runs at
STAGES = ["prepare", "text", "train", "evaluate", "demo"]
CONFIG = "baron_r50_fpn_lsj.yaml"


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    return write_shaped_tree(tmp_path_factory.mktemp("datasets"), NUM_TRAIN, NUM_VAL)


@pytest.fixture(scope="module")
def rehearsal_env(tmp_path_factory):
    """One thread per stage process (the two backends run side by side) and a text-embedding cache of this module
    (the demos' vocabularies)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "DISTILL_CACHE": str(tmp_path_factory.mktemp("cache"))}


def _check_training(dataset: str, run) -> None:
    """Trained at the config's shapes, with bags: a finite bag loss, one draw, teacher crops made."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    d = cfg["MODEL"]["DISTILL"]
    assert d["METHOD"] == "baron" and d["TEACHER"]["ARCH"] == "ViT-B-32"
    assert d["BARON"]["TOPK"] == TOPK[dataset]
    assert cfg["INPUT"]["LSJ"]["SIZE"] == 1024 and cfg["MODEL"]["MASK_ON"] == (dataset == "ov_lvis")
    lines = [json.loads(x) for x in (run / "metrics.json").read_text().splitlines() if x.strip()]
    bag = [x["loss_bag"] for x in lines if "loss_bag" in x]
    assert bag and all(math.isfinite(v) for v in bag), lines
    state = torch.load(run / "model_final.pth", map_location="cpu", weights_only=False)
    state = state.get("model", state)
    counts = ("step", "images_seen", "images_without_bags", "teacher_crops")
    buffer = {n: int(v) for k, v in state.items() for n in counts if k.endswith(f"method.{n}")}
    # one iteration at batch 1: one draw; crops only come from bags (an image without bags makes none)
    assert buffer["step"] == 1 and buffer["images_seen"] == 1, buffer
    assert buffer["teacher_crops"] > 0 and buffer["images_without_bags"] == 0, buffer
    assert not any(".visual." in k or ".transformer." in k for k in state)  # the teacher is not saved


def _check(stage: str, dataset: str, out) -> None:
    if stage == "text":
        for split, n in zip(("all", "base"), CLASSES[dataset]):
            emb = ClassEmbeddings.load(out / "text" / f"{dataset}_{split}_vitb32.npy").embeddings
            assert emb.shape == (n, 512)
    elif stage == "train":
        _check_training(dataset, out / "baron")
    elif stage == "evaluate":
        check_metrics(out / "baron_eval", dataset)
    elif stage == "demo":
        check_demo(out / "baron_demo")


def _rehearse(dataset, backend, shaped, cwd, env, slots) -> list[str]:
    """Every stage in order, each checked, each run holding one of `slots`; returns a line of seconds per stage."""
    cwd.mkdir(parents=True, exist_ok=True)
    os.symlink(REPO / "configs", cwd / "configs")  # the configs' relative paths, as in a checkout
    out = cwd / "output" / dataset
    demo = str(shaped / "coco" / "val2017" / f"{NUM_TRAIN + 1:012d}.jpg")
    stages = baron_recipe(dataset, backend, str(shaped), Rehearsal(demo_image=demo))
    assert [s.name for s in stages] == STAGES
    times = []
    for stage in stages:
        with slots:
            r = run_stage(stage, str(REPO), str(cwd), str(shaped), env)
        times.append(f"{dataset} baron {backend} {stage.name}: {r.seconds:.1f} s")
        assert r.returncode == 0, f"{stage.name}: {r.stderr}"
        _check(stage.name, dataset, out)
    return times


def _wanted(backend: str, request) -> bool:
    collected = any(f"rehearsal_{backend}" in i.name for i in request.session.items)
    return collected and (backend != "detectron2" or _has_detectron2())


@pytest.fixture(scope="module")
def rehearsals(shaped, rehearsal_env, tmp_path_factory, request):
    """backend → (output folder, future of its lines of seconds). The collected backends' runs start together,
    two stage processes at a time (one per core, the memory of two stages at most)."""
    backends = [b for b in ("detectron2", "torchvision") if _wanted(b, request)]  # the longest run first
    slots, runs = threading.Semaphore(2), {}
    pool = ThreadPoolExecutor(max(len(backends), 1), thread_name_prefix="rehearsal-baron")
    for backend in backends:
        dataset = DATASET[backend]
        cwd = tmp_path_factory.mktemp(f"{dataset}_{backend}")
        args = (dataset, backend, shaped, cwd, rehearsal_env, slots)
        runs[backend] = (cwd / "output" / dataset, pool.submit(_rehearse, *args))
    yield runs
    pool.shutdown(wait=True)


def _result(runs, backend):
    out, future = runs[backend]
    print("\n".join(future.result()))  # pytest -rP shows where time goes
    return out


def test_baron_recipe_rehearsal_torchvision(rehearsals):
    assert (_result(rehearsals, "torchvision") / "baron_demo").is_dir()


@pytest.mark.skipif(not _has_detectron2(), reason="detectron2 is not installed (INSTALL.md: detectron2)")
def test_baron_recipe_rehearsal_detectron2(rehearsals):
    assert (_result(rehearsals, "detectron2") / "baron_demo").is_dir()


def test_baron_recipes_name_their_configs_and_files():
    from distill.config import load_config

    for dataset in DATASETS:
        stages = {s.name: s for s in baron_recipe(dataset)}
        assert list(stages) == STAGES  # no proposal network, no proposals, no region store
        config_dir = REPO / dataset_paths(dataset).config_dir
        cfg = load_config(str(config_dir / CONFIG))
        d = cfg.MODEL.DISTILL
        assert d.METHOD == "baron" and (d.TEACHER.ARCH, d.TEACHER.PRETRAINED) == ("ViT-B-32", "openai")
        assert d.BARON.TOPK == TOPK[dataset]
        # ViLD's text files (step 2 is ViLD's: skipped when made already)
        vild = {s.name: s for s in recipe(dataset)}
        assert stages["text"] == vild["text"]
        assert stages["text"].outputs == [d.TEST_CLASS_EMBEDDINGS, d.TRAIN_CLASS_EMBEDDINGS]
        train = stages["train"]
        assert train.args[train.args.index("--config-file") + 1] == f"configs/{dataset}/{CONFIG}"
        assert train.outputs == [cfg.OUTPUT_DIR]
        for name in ("evaluate", "demo"):
            assert f"{cfg.OUTPUT_DIR}/model_final.pth" in stages[name].args
        # GETTING_STARTED: ViLD's schedule from ImageNet R-50
        ref = load_config(str(config_dir / "vild_r50_fpn_lsj.yaml"))
        assert cfg.SOLVER == ref.SOLVER and cfg.INPUT == ref.INPUT
        assert cfg.MODEL.BACKBONE.WEIGHTS == "imagenet"


def test_baron_configs_load_on_detectron2():
    pytest.importorskip("detectron2", reason="detectron2 is not installed (INSTALL.md: detectron2)")
    d2 = pytest.importorskip("distill.integrations.detectron2")
    for dataset in DATASETS:
        cfg = d2.load_detectron2_config(str(REPO / "configs" / dataset / CONFIG))
        assert cfg.MODEL.DISTILL.METHOD == "baron" and cfg.MODEL.DISTILL.BARON.TOPK == TOPK[dataset]
        assert cfg.MODEL.MASK_ON == (dataset == "ov_lvis")


def test_getting_started_lists_every_command_of_the_baron_recipes():
    page = re.sub(r"\s+", " ", (REPO / "GETTING_STARTED.md").read_text().replace("\\\n", " "))
    section = page[page.index("## BARON recipes") :]
    for dataset in DATASETS:
        for stage in baron_recipe(dataset):
            assert command_line(stage) in section, command_line(stage)


def test_baron_rehearsal_overrides():
    # ViLD's: random teacher and R50, batch 1 at the learning rate of batch 64 scaled linearly, no workers
    for dataset in DATASETS:
        stages = {s.name: s for s in baron_recipe(dataset, "torchvision", rehearsal=Rehearsal())}
        train = stages["train"].args
        assert float(train[train.index("SOLVER.BASE_LR") + 1]) == pytest.approx(0.08 / 64)
        assert train[train.index("SOLVER.IMS_PER_BATCH") + 1] == "1"
        assert train[train.index("SOLVER.MAX_ITER") + 1] == "1"
        for name in ("train", "evaluate", "demo"):
            a = stages[name].args
            assert a[a.index("MODEL.DISTILL.TEACHER.PRETRAINED") + 1] == "none"
            assert a[a.index("MODEL.BACKBONE.WEIGHTS") + 1] == ""
            assert "--num-gpus" not in a
        text = stages["text"].args
        assert (
            text[text.index("--pretrained") + 1] == "none" and text[text.index("--templates") + 1] == "simple"
        )
    real = baron_recipe("ov_lvis", gpus=4)
    assert "none" not in " ".join(a for s in real for a in s.args)
    assert all(s.args[s.args.index("--num-gpus") + 1] == "4" for s in real if s.name in ("train", "evaluate"))
