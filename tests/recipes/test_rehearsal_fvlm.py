"""The F-VLM / F-ViT recipes (benchmarks/workloads/recipes.py `fvlm_recipe`, GETTING_STARTED.md), every command in
order on COCO- / LVIS-shaped trees at the configs' real shapes with random teacher weights and one iteration:
F-ViT with ViT-B/16 on OV-COCO at 640 px (65 classes, 512-d), F-VLM with RN50 on OV-LVIS at 1024 px (1,203 classes,
1024-d, mask head, the attention pool scoring 1,000 proposals per image). No proposal or region stage. RN50x64 is
too big to rehearse: its configs and commands are checked without running them. The backend-free stages
(splits, text embeddings) run once per dataset, on the torchvision half."""

import os
import re
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import yaml

from benchmarks.workloads.recipes import (
    DATASETS,
    FROZEN_VARIANTS,
    Rehearsal,
    command_line,
    dataset_paths,
    fvlm_recipe,
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

VARIANT = {"ov_coco": "fvit_b16", "ov_lvis": "fvlm_r50"}  # one teacher kind per dataset: ViT and ResNet
DIM = {"vitb16": 512, "rn50": 1024}
SIZE = {"ov_coco": 640, "ov_lvis": 1024}
SHARED = ("prepare", "text")  # no --backend: the torchvision half runs them for both
STAGES = ["prepare", "text", "train", "evaluate", "demo"]


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    return write_shaped_tree(tmp_path_factory.mktemp("datasets"), NUM_TRAIN, NUM_VAL)


@pytest.fixture(scope="module")
def rehearsal_env(tmp_path_factory):
    """One thread per stage process (the two datasets run side by side) and a text-embedding cache of this module
    (the demos' vocabularies: computed by the torchvision half, read by the detectron2 one)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "DISTILL_CACHE": str(tmp_path_factory.mktemp("cache"))}


def _check(stage: str, dataset: str, out) -> None:
    variant = VARIANT[dataset]
    v = FROZEN_VARIANTS[variant]
    if stage == "text":
        for split, n in zip(("all", "base"), CLASSES[dataset]):
            emb = ClassEmbeddings.load(out / "text" / f"{dataset}_{split}_{v.tag}.npy").embeddings
            assert emb.shape == (n, DIM[v.tag])
    elif stage == "train":
        assert (out / variant / "model_final.pth").is_file()
        cfg = yaml.safe_load((out / variant / "config.yaml").read_text())  # trained at the config's shapes
        assert cfg["MODEL"]["DISTILL"]["TEACHER"]["ARCH"] == v.teacher
        assert cfg["INPUT"]["LSJ"]["SIZE"] == SIZE[dataset] and cfg["MODEL"]["MASK_ON"] == (
            dataset == "ov_lvis"
        )
    elif stage == "evaluate":
        check_metrics(out / f"{variant}_eval", dataset)
    elif stage == "demo":
        check_demo(out / f"{variant}_demo")


def _rehearse(dataset, backend, shaped, cwd, env, slots, shared: Future) -> list[str]:
    """Every stage in order, each checked, each run holding one of `slots`; returns a line of seconds per stage.
    The torchvision run resolves `shared` to its output folder once the SHARED stages are done; the detectron2
    run waits for it and copies their outputs."""
    cwd.mkdir(parents=True, exist_ok=True)
    os.symlink(REPO / "configs", cwd / "configs")  # the configs' relative paths, as in a checkout
    out = cwd / "output" / dataset
    demo = str(shaped / "coco" / "val2017" / f"{NUM_TRAIN + 1:012d}.jpg")
    stages = fvlm_recipe(dataset, backend, str(shaped), Rehearsal(demo_image=demo), VARIANT[dataset])
    assert [s.name for s in stages] == STAGES
    makes_shared = backend == "torchvision"
    if not makes_shared:
        out.mkdir(parents=True)
        shutil.copytree(shared.result() / "text", out / "text")
    times = []
    try:
        for stage in stages:
            if stage.name in SHARED and not makes_shared:
                continue
            if stage.name not in SHARED and makes_shared and not shared.done():
                shared.set_result(out)
            with slots:
                r = run_stage(stage, str(REPO), str(cwd), str(shaped), env)
            times.append(f"{dataset} {VARIANT[dataset]} {backend} {stage.name}: {r.seconds:.1f} s")
            assert r.returncode == 0, f"{stage.name}: {r.stderr}"
            _check(stage.name, dataset, out)
    except BaseException as e:
        if makes_shared and not shared.done():
            shared.set_exception(e)  # the detectron2 run fails with it instead of waiting
        raise
    return times


def _wants_detectron2(request) -> bool:
    return _has_detectron2() and any("rehearsal_detectron2" in i.name for i in request.session.items)


@pytest.fixture(scope="module")
def rehearsals(shaped, rehearsal_env, tmp_path_factory, request):
    """(dataset, backend) → (output folder, future of its lines of seconds). All runs start together, two stage
    processes at a time (one per core: the 2-core machine is kept busy, the memory of two stages at most); each
    detectron2 run waits only for its dataset's text stage on the torchvision half. The detectron2 runs start
    only when their tests were collected."""
    backends = ["torchvision"] + (["detectron2"] if _wants_detectron2(request) else [])
    slots, runs = threading.Semaphore(2), {}
    pool = ThreadPoolExecutor(len(DATASETS) * len(backends), thread_name_prefix="rehearsal-fvlm")
    for dataset in sorted(DATASETS, key=lambda d: d != "ov_lvis"):  # the longest run first
        shared: Future = Future()
        for backend in backends:
            cwd = tmp_path_factory.mktemp(f"{dataset}_{backend}")
            args = (dataset, backend, shaped, cwd, rehearsal_env, slots, shared)
            runs[dataset, backend] = (cwd / "output" / dataset, pool.submit(_rehearse, *args))
    yield runs
    pool.shutdown(wait=True)


def _result(runs, dataset, backend):
    out, future = runs[dataset, backend]
    print("\n".join(future.result()))  # pytest -rP shows where time goes
    return out


@pytest.mark.parametrize("dataset", DATASETS)
def test_fvlm_recipe_rehearsal_torchvision(dataset, rehearsals):
    assert (_result(rehearsals, dataset, "torchvision") / f"{VARIANT[dataset]}_demo").is_dir()


@pytest.mark.skipif(not _has_detectron2(), reason="detectron2 is not installed (INSTALL.md: detectron2)")
@pytest.mark.parametrize("dataset", DATASETS)
def test_fvlm_recipe_rehearsal_detectron2(dataset, rehearsals):
    assert (_result(rehearsals, dataset, "detectron2") / f"{VARIANT[dataset]}_demo").is_dir()


def test_fvlm_recipes_name_their_configs_teachers_and_files():
    # RN50x64 (and every variant): the recipe's text files, teacher and output folder are the config's
    from distill.config import load_config

    for dataset in DATASETS:
        for variant, v in FROZEN_VARIANTS.items():
            stages = {s.name: s for s in fvlm_recipe(dataset, variant=variant)}
            assert list(stages) == STAGES
            cfg = load_config(str(REPO / dataset_paths(dataset).config_dir / f"{variant}.yaml"))
            d = cfg.MODEL.DISTILL
            assert (d.TEACHER.ARCH, d.TEACHER.PRETRAINED) == (v.teacher, "openai")
            assert d.METHOD == ("fvit" if variant.startswith("fvit") else "fvlm")
            assert cfg.MODEL.BACKBONE.NAME == "build_clip_fpn_backbone"
            text = stages["text"].args
            assert text[text.index("--teacher") + 1] == v.teacher
            assert stages["text"].outputs == [d.TEST_CLASS_EMBEDDINGS, d.TRAIN_CLASS_EMBEDDINGS]
            assert stages["train"].outputs == [cfg.OUTPUT_DIR]
    with pytest.raises(ValueError, match="variant"):
        fvlm_recipe("ov_coco", variant="fvlm_r101")


def test_rn50x64_configs_name_rn50x64():
    from distill.config import load_config

    for dataset in DATASETS:
        cfg = load_config(str(REPO / "configs" / dataset / "fvlm_r50x64.yaml"))
        assert cfg.MODEL.DISTILL.TEACHER.ARCH == "RN50x64"
        assert cfg.MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS.endswith(f"{dataset}_base_rn50x64.npy")
        assert cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS.endswith(f"{dataset}_all_rn50x64.npy")
        assert cfg.MODEL.MASK_ON == (dataset == "ov_lvis")


def test_fvlm_configs_load_on_detectron2_with_the_towers_own_input():
    pytest.importorskip("detectron2", reason="detectron2 is not installed (INSTALL.md: detectron2)")
    d2 = pytest.importorskip("distill.integrations.detectron2")
    for dataset in DATASETS:
        for variant, v in FROZEN_VARIANTS.items():
            cfg = d2.load_detectron2_config(str(REPO / "configs" / dataset / f"{variant}.yaml"))
            # no MSRA R-50 and its BGR input: the tower reads RGB with the teacher's normalisation
            assert cfg.MODEL.WEIGHTS == "" and cfg.INPUT.FORMAT == "RGB"
            assert cfg.MODEL.BACKBONE.NAME == "build_clip_fpn_backbone"
            assert cfg.MODEL.DISTILL.TEACHER.ARCH == v.teacher


def test_getting_started_lists_every_command_of_the_fvlm_recipes():
    page = re.sub(r"\s+", " ", (REPO / "GETTING_STARTED.md").read_text().replace("\\\n", " "))
    for dataset in DATASETS:
        for variant in ("fvlm_r50", "fvit_b16"):  # RN50x64: the same commands, said in words
            for stage in fvlm_recipe(dataset, variant=variant):
                assert command_line(stage) in page, command_line(stage)


def test_fvlm_rehearsal_overrides():
    # random tower of the method's teacher, batch 1, no workers; MODEL.BACKBONE.WEIGHTS is not read by the tower
    for variant, lr in (("fvlm_r50", 0.09 / 64), ("fvit_b16", 1e-4)):
        stages = {
            s.name: s for s in fvlm_recipe("ov_lvis", "torchvision", rehearsal=Rehearsal(), variant=variant)
        }
        train = stages["train"].args
        assert float(train[train.index("SOLVER.BASE_LR") + 1]) == pytest.approx(lr)
        for name in ("train", "evaluate", "demo"):
            a = stages[name].args
            assert a[a.index("MODEL.DISTILL.TEACHER.PRETRAINED") + 1] == "none"
            assert "MODEL.BACKBONE.WEIGHTS" not in a and "--num-gpus" not in a
        text = stages["text"].args
        assert (
            text[text.index("--pretrained") + 1] == "none" and text[text.index("--templates") + 1] == "simple"
        )
    real = fvlm_recipe("ov_lvis", variant="fvlm_r50")
    assert "none" not in " ".join(a for s in real for a in s.args)
