"""The OV-COCO and OV-LVIS recipes, every command of GETTING_STARTED.md in order
(benchmarks/workloads/recipes.py), on COCO- / LVIS-shaped trees at the configs' real shapes: ViT-B-32
(random weights) at 224 px, R50 (random) at 1024 px with LSJ, 300 proposals per training image, 65 / 1,203 classes. One iteration per training, one prompt
template and 16 regions per image (the proposals file keeps 300) keep it to minutes on a CPU. The
backend-free stages (splits, text and region embeddings) run once per dataset, on the torchvision half."""

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from benchmarks.workloads.recipes import Rehearsal, recipe, run_stage
from distill.data.region_store import RegionEmbeddingStore
from distill.data.shaped import write_shaped_tree
from distill.teacher import ClassEmbeddings
from distill.utils import read_json
from tests.conftest import REPO

NUM_TRAIN, NUM_VAL, REGIONS = 2, 1, 16
CLASSES = {"ov_coco": (65, 48), "ov_lvis": (1203, 866)}
VAL_NAME = {"ov_coco": "distill_ov_coco_val", "ov_lvis": "distill_ov_lvis_val"}
SHARED = ("prepare", "text", "regions")  # no --backend: the torchvision half runs them for both
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the two datasets run side by side


def _has_detectron2() -> bool:
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    return write_shaped_tree(tmp_path_factory.mktemp("datasets"), NUM_TRAIN, NUM_VAL)


def _check(stage: str, dataset: str, out) -> None:
    if stage == "text":
        n_all, n_base = CLASSES[dataset]
        assert ClassEmbeddings.load(out / "text" / f"{dataset}_all_vitb32.npy").embeddings.shape == (
            n_all,
            512,
        )
        assert ClassEmbeddings.load(out / "text" / f"{dataset}_base_vitb32.npy").embeddings.shape == (
            n_base,
            512,
        )
    elif stage in ("train_proposal_net", "train_vild"):
        assert (
            out / ("vild_text" if stage == "train_proposal_net" else "vild") / "model_final.pth"
        ).is_file()
    elif stage == "proposals":
        with np.load(out / "proposals_train_vitb32.npz") as z:
            assert z["image_ids"].tolist() == list(
                range(1, NUM_TRAIN + 1)
            )  # the image without annotations too
            assert z["counts"].tolist() == [300] * NUM_TRAIN and z["boxes"].shape == (300 * NUM_TRAIN, 4)
    elif stage == "regions":
        store = RegionEmbeddingStore(out / "regions_vitb32", expected_dim=512)
        assert len(store) == NUM_TRAIN
        index = read_json(out / "regions_vitb32" / "index.json")
        assert index["num_regions"] + index["skipped_boxes"] == REGIONS * NUM_TRAIN  # the best 16 of 300 each
        boxes, emb = store[1]
        assert 0 < boxes.shape[0] <= REGIONS and emb.shape == (boxes.shape[0], 512)
    elif stage == "evaluate":
        check_metrics(out / "vild_eval", dataset)
    elif stage == "demo":
        check_demo(out / "demo")


def check_metrics(eval_dir, dataset: str) -> None:
    """An evaluation's metrics.json has the dataset's headline numbers."""
    m = read_json(eval_dir / "inference" / VAL_NAME[dataset] / "metrics.json")
    keys = (
        ["box_AP50_novel", "box_AP50_base", "box_AP50"]
        if dataset == "ov_coco"
        else ["mask_APr", "box_APr", "mask_AP"]
    )
    assert all(isinstance(m.get(k), float) for k in keys), m


def check_demo(demo_dir) -> None:
    """The demo drew the validation image at its own size and wrote its predictions."""
    img = cv2.imread(str(demo_dir / f"{NUM_TRAIN + 1:012d}.png"))
    assert img is not None and img.shape[:2] == (427, 640)  # drawn at the image's own size
    assert read_json(demo_dir / "predictions.json")["images"][0]["height"] == 427


def _rehearse(dataset: str, backend: str, shaped, cwd, shared_from=None) -> list[str]:
    """Every stage in order, each checked; returns a line of seconds per stage."""
    cwd.mkdir(parents=True, exist_ok=True)
    os.symlink(REPO / "configs", cwd / "configs")  # the configs' relative paths, as in a checkout
    out = cwd / "output" / dataset
    demo = str(shaped / "coco" / "val2017" / f"{NUM_TRAIN + 1:012d}.jpg")
    stages = recipe(
        dataset, backend, str(shaped), Rehearsal(iterations=1, regions_per_image=REGIONS, demo_image=demo)
    )
    assert [s.name for s in stages] == [
        "prepare",
        "text",
        "train_proposal_net",
        "proposals",
        "regions",
        "train_vild",
        "evaluate",
        "demo",
    ]
    if shared_from is not None:
        out.mkdir(parents=True)
        for name in ("text", "regions_vitb32"):
            shutil.copytree(shared_from / name, out / name)
    times = []
    for stage in stages:
        if shared_from is not None and stage.name in SHARED:
            continue
        r = run_stage(stage, str(REPO), str(cwd), str(shaped), ENV)
        times.append(f"{dataset} {backend} {stage.name}: {r.seconds:.1f} s")
        assert r.returncode == 0, f"{stage.name}: {r.stderr}"
        _check(stage.name, dataset, out)
    return times


def _runs(tmp_path_factory, backend, start):
    """Both datasets' rehearsals of `backend` side by side (their stages are processes of 1 thread each);
    `start(dataset, cwd)` runs one. Returns dataset → its output folder, once that run has passed."""
    futures, lock = {}, threading.Lock()
    pool = ThreadPoolExecutor(len(CLASSES), thread_name_prefix=f"rehearsal-{backend}")

    def get(dataset):
        with lock:  # the detectron2 runs ask for the torchvision ones from their own threads
            if not futures:
                for d in CLASSES:
                    cwd = tmp_path_factory.mktemp(f"{d}_{backend}")
                    futures[d] = (cwd, pool.submit(start, d, cwd))
        cwd, future = futures[dataset]
        print("\n".join(future.result()))  # pytest -rP shows where time goes
        return cwd / "output" / dataset

    return get


@pytest.fixture(scope="module")
def torchvision_runs(shaped, tmp_path_factory):
    return _runs(tmp_path_factory, "torchvision", lambda d, cwd: _rehearse(d, "torchvision", shaped, cwd))


@pytest.fixture(scope="module")
def detectron2_runs(shaped, tmp_path_factory, torchvision_runs):
    def start(dataset, cwd):
        return _rehearse(dataset, "detectron2", shaped, cwd, shared_from=torchvision_runs(dataset))

    return _runs(tmp_path_factory, "detectron2", start)


@pytest.mark.parametrize("dataset", ["ov_coco", "ov_lvis"])
def test_recipe_rehearsal_torchvision(dataset, torchvision_runs):
    assert (torchvision_runs(dataset) / "demo").is_dir()


@pytest.mark.skipif(not _has_detectron2(), reason="detectron2 is not installed (INSTALL.md: detectron2)")
@pytest.mark.parametrize("dataset", ["ov_coco", "ov_lvis"])
def test_recipe_rehearsal_detectron2(dataset, detectron2_runs):
    assert (detectron2_runs(dataset) / "demo").is_dir()
