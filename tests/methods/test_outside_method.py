"""A distillation method from outside the package: this file registers ViLD with a cosine image loss, and the
tools run it through MODEL.DISTILL.IMPORTS (train_net on both backends, demo, evaluate on the demo's
predictions, export with parity to eager), with no file under distill/ naming it.

The tools import this file as a plain module: nothing from `tests` at module level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distill.methods import Key, RegionTargets, register_method
from distill.methods.vild import KEYS as VILD_KEYS
from distill.methods.vild.method import ViLD, ViLDText

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
NAME = "vild_cosine_example"


class ViLDCosine(ViLD):
    """ViLD with a cosine image loss: 1 - cos(student, teacher) on the region-store boxes."""

    config_node = "VILD_COSINE"
    config_keys = {**VILD_KEYS, "COSINE_LOSS_WEIGHT": Key(2.0, "nonneg", doc="weight of 1 - cos")}

    def losses(self, batch):
        losses = ViLDText.losses(self, batch)
        if batch.targets is not None:
            student = self.image_embeddings(batch.extra_features, batch.embed_head)
            teacher = RegionTargets.cat_embeddings(batch.targets, student.device).float()
            cos = F.cosine_similarity(student, teacher, dim=-1)
            loss = (1 - cos).mean() if cos.numel() else student.sum() * 0.0
            losses["loss_cosine_image"] = self.option("COSINE_LOSS_WEIGHT") * loss
        return losses


if __name__ != "tests.methods.test_outside_method":  # imported by a tool, through MODEL.DISTILL.IMPORTS
    register_method(NAME)(ViLDCosine)

# ------------------------------------------------------------------------------------------------ the tests
DIM = 128


@pytest.fixture
def registered():
    """The method in this process's registry for one test (conftest forgets it after)."""
    register_method(NAME)(ViLDCosine)


@pytest.fixture(scope="module")
def setup(synthetic_root, tmp_path_factory):
    """(yaml naming this file in MODEL.DISTILL.IMPORTS, KEY VALUE overrides, work folder)."""
    from distill.data import synthetic_dataset
    from distill.data.region_store import RegionStoreWriter, ShardRecord
    from distill.data.synthetic import SYNTHETIC_CATEGORIES
    from distill.teacher import ClassEmbeddings
    from tests.integrations.export.conftest import SMALL_MODEL

    work = tmp_path_factory.mktemp("outside_method")
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(len(names), DIM, generator=g), dim=1)
    teacher = {"teacher": {"arch": "distill-tiny-rn", "pretrained": "synthetic-tiny-teacher"}}
    ClassEmbeddings(emb, names, teacher).save(work / "all.npy")
    dicts, _ = synthetic_dataset(synthetic_root, "train")
    writer = RegionStoreWriter(work / "store", {"dim": DIM}, [d["image_id"] for d in dicts], chunk_size=16)
    for k, ids in enumerate(writer.chunks):
        rec = ShardRecord()
        for image_id in ids:
            xy = torch.rand(5, 2, generator=g) * 60
            rec.image_ids.append(image_id)
            rec.boxes.append(torch.cat([xy, xy + 8 + torch.rand(5, 2, generator=g) * 30], 1))
            rec.embeddings.append(F.normalize(torch.randn(5, DIM, generator=g), dim=1))
        writer.write_shard(k, rec)
    writer.finalize()
    config = work / "cosine.yaml"
    config.write_text(
        f'_BASE_: "{REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml"}"\n'
        "MODEL:\n  DISTILL:\n"
        f'    IMPORTS: ["{HERE}"]\n'
        f'    METHOD: "{NAME}"\n'
        "    VILD_COSINE:\n"
        f'      REGION_STORE: "{work / "store"}"\n'
        "      COSINE_LOSS_WEIGHT: 3.0\n"
    )
    opts = [
        *SMALL_MODEL,
        "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
        str(work / "all.npy"),
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        str(work / "all.npy"),
        "DATASETS.ROOT",
        str(synthetic_root.parent),
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.BASE_LR",
        "0.002",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "DATASETS.TEST",
        "()",
    ]
    bench = synthetic_root.parent / "synthetic"
    if not bench.exists():
        bench.symlink_to(synthetic_root)
    return config, opts, work


def tool_setup(synthetic_root, work, config) -> tuple[list[str], object]:
    """(KEY VALUE overrides that train `config` on the quickstart's world for 3 iterations with a small model,
    its vocabulary file): random class embeddings with the config teacher's provenance, in `work`."""
    import torch
    import torch.nn.functional as F

    from distill.config import load_config
    from distill.data.synthetic import SYNTHETIC_CATEGORIES
    from distill.teacher import ClassEmbeddings
    from tests.integrations.export.conftest import SMALL_MODEL

    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    t = load_config(str(config)).MODEL.DISTILL.TEACHER
    emb = F.normalize(torch.randn(len(names), 128, generator=torch.Generator().manual_seed(0)), dim=1)
    ClassEmbeddings(emb, names, {"teacher": {"arch": t.ARCH, "pretrained": t.PRETRAINED}}).save(
        work / "all.npy"
    )
    bench = synthetic_root.parent / "synthetic"  # DATASETS.ROOT's layout
    if not bench.exists():
        bench.symlink_to(synthetic_root)
    opts = [
        *SMALL_MODEL,
        "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS", work / "all.npy",
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS", work / "all.npy",
        "DATASETS.ROOT", synthetic_root.parent,
        "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "0", "SOLVER.IMS_PER_BATCH", "2",
        "DATASETS.TEST", "()",
    ]  # fmt: skip
    return [str(o) for o in opts], work / "all.npy"


def run(tool: str, *args) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # the checkout under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_the_registry_knows_the_method_and_its_keys(registered):
    from distill.config import get_cfg, load_config
    from distill.utils import DistillInputError

    cfg = get_cfg()
    assert cfg.MODEL.DISTILL.VILD_COSINE.COSINE_LOSS_WEIGHT == 2.0
    with pytest.raises(DistillInputError, match="must be a number >= 0"):
        load_config(
            None, ["MODEL.DISTILL.METHOD", NAME, "MODEL.DISTILL.VILD_COSINE.COSINE_LOSS_WEIGHT", "-1"]
        )
    with pytest.raises(DistillInputError, match="unknown distillation method .*vild_text"):
        load_config(None, ["MODEL.DISTILL.METHOD", "vild_cosine_typo"])


def test_unknown_method_without_imports_is_one_line(setup, tmp_path):
    config, opts, _ = setup
    r = run("train_net.py", "--config-file", config, "--backend", "torchvision", *opts,
            "MODEL.DISTILL.IMPORTS", "()", "OUTPUT_DIR", tmp_path / "x")  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "MODEL.DISTILL.IMPORTS" in r.stderr


@pytest.mark.parametrize("backend", ["torchvision", "detectron2"])
def test_train_demo_evaluate_export(setup, synthetic_root, tmp_path, backend):
    if backend == "detectron2":
        pytest.importorskip("detectron2", reason="detectron2 is not installed: its half of this test skips")
    config, opts, work = setup
    vocab = work / "all.npy"
    out = tmp_path / "run"
    r = run("train_net.py", "--config-file", config, "--backend", backend, "--no-progress", *opts,
            "OUTPUT_DIR", out)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines() if x.strip()]
    assert any(x.get("loss_cosine_image", 0) > 0 for x in lines)  # the method's own loss trained
    assert not any("loss_vild_image" in x for x in lines)
    weights = out / "model_final.pth"

    # demo: the checkpoint's config names this file; nothing else tells the tool of the method
    images = synthetic_root / "images" / "val"
    demo = tmp_path / "demo"
    r = run("demo.py", "--weights", weights, "--input", images, "--output", demo, "--vocabulary", vocab,
            "--score-thresh", "0.0")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert (demo / "predictions.json").is_file()

    r = run("evaluate.py", "--gt", synthetic_root / "annotations" / "instances_val.json",
            "--predictions", demo / "predictions.json", "--output", tmp_path / "metrics.json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "AP50_novel" in (tmp_path / "metrics.json").read_text()
    if backend == "detectron2":
        return  # the ONNX export is the torchvision backend's

    onnx_dir = tmp_path / "onnx"
    r = run("export_model.py", "--weights", weights, "--vocabulary", vocab, "--output", onnx_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_export_matches_eager(onnx_dir, weights, vocab, synthetic_root)


def _assert_export_matches_eager(onnx_dir, weights, vocab_file, synthetic_root, method=NAME):
    import numpy as np

    from distill.data import synthetic_dataset
    from distill.data.images import read_image_rgb
    from distill.integrations.inference import inference_config
    from distill.integrations.onnx_model import OnnxModel
    from distill.integrations.torchvision.demo import inference_mapper
    from distill.integrations.torchvision.export import load_model_for_export
    from distill.teacher import ClassEmbeddings

    cfg, _ = inference_config(str(weights), "detector")
    assert cfg.MODEL.DISTILL.METHOD == method
    onnx = OnnxModel(onnx_dir)
    vocab = ClassEmbeddings.load(vocab_file)
    model = load_model_for_export("detect", cfg, str(weights), vocab)
    if method == NAME:
        assert type(model.roi_heads.box_predictor.method).__name__ == "ViLDCosine"
    mapper = inference_mapper(cfg)
    dicts, _ = synthetic_dataset(synthetic_root, "val")
    total = 0
    for d in dicts[:4]:
        with torch.no_grad():
            ref = model([mapper(d)])[0]
        got = onnx.detect(read_image_rgb(d["file_name"]).permute(1, 2, 0).numpy())
        assert len(got["scores"]) == len(ref["scores"])
        np.testing.assert_array_equal(got["classes"], ref["labels"].numpy())
        np.testing.assert_allclose(got["scores"], ref["scores"].numpy(), atol=1e-4)
        total += len(ref["scores"])
    assert total > 0
