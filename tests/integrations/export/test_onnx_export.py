"""Exported ONNX graphs (onnxruntime, CPU) against eager PyTorch on synthetic validation images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install -e '.[deploy]')")

from distill.data import synthetic_dataset  # noqa: E402
from distill.data.images import read_image_rgb  # noqa: E402
from distill.integrations.onnx_model import OnnxModel, read_model_json  # noqa: E402
from distill.integrations.torchvision.export import export_checkpoint, load_model_for_export  # noqa: E402
from distill.integrations.torchvision.mapper import DatasetMapper, MapperConfig  # noqa: E402
from distill.modeling.masks import BoxMasks  # noqa: E402
from distill.teacher import ClassEmbeddings  # noqa: E402
from distill.utils import DistillInputError  # noqa: E402

NUM_IMAGES = 4
CONFIG = str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (N, 4) → (N,) IoU of corresponding boxes."""
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


@pytest.fixture(scope="module")
def exported(detector_checkpoint, vocab_dir, tmp_path_factory):
    cfg, weights = detector_checkpoint
    vocab = ClassEmbeddings.load(vocab_dir / "all.npy")
    out = tmp_path_factory.mktemp("onnx_det")
    export_checkpoint("detect", cfg, weights, vocab, out / "nms")
    return cfg, weights, vocab, out


@pytest.fixture(scope="module")
def run_tool(detector_checkpoint, detector_opts):
    tool = [
        sys.executable,
        str(REPO / "tools/export_model.py"),
        "--config-file",
        CONFIG,
        "--weights",
        detector_checkpoint[1],
    ]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return lambda *a: subprocess.run(
        [*tool, *a, *detector_opts], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def tool_export(run_tool, vocab_dir, tmp_path_factory):
    """The command line's export without NMS, with a dynamic batch, at opset 18."""
    out = tmp_path_factory.mktemp("onnx_tool") / "no_nms"
    r = run_tool(
        "--vocabulary",
        str(vocab_dir / "all.npy"),
        "--output",
        str(out),
        "--opset",
        "18",
        "--no-nms",
        "--dynamic-batch",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def eager_detections(cfg, weights, vocab, d):
    model = load_model_for_export("detect", cfg, weights, vocab)
    mapper = DatasetMapper(
        MapperConfig(
            min_sizes=(cfg.INPUT.MIN_SIZE_TEST,),
            max_size=cfg.INPUT.MAX_SIZE_TEST,
            is_train=False,
            mask_on=False,
        )
    )
    with torch.no_grad():
        out = model([mapper(d)])[0]
    # the eager model keeps masks in their boxes (BoxMasks); dense (N, H, W) probabilities to compare
    return {k: (v.dense() if isinstance(v, BoxMasks) else v).numpy() for k, v in out.items()}


def test_graph_is_standard_onnx(exported):
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(exported[3] / "nms" / "model.onnx")).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}  # no custom-op library to ship
    ops = {n.op_type for n in graph.node}
    assert {"RoiAlign", "NonMaxSuppression", "ScatterND"} <= ops
    assert [i.name for i in graph.input] == ["images", "image_sizes"]


def test_detector_matches_eager(exported, synthetic_root):
    cfg, weights, vocab, out = exported
    onnx = OnnxModel(out / "nms")
    meta = onnx.meta
    assert meta["nms"] and meta["class_names"] == vocab.class_names and meta["embed_dim"] == 128
    assert (
        meta["score_thresh"] == pytest.approx(0.005)
        and meta["teacher"]["teacher"]["arch"] == cfg.MODEL.DISTILL.TEACHER.ARCH
    )
    dicts, _ = synthetic_dataset(synthetic_root, "val")
    total = 0
    for d in dicts[:NUM_IMAGES]:
        ref = eager_detections(cfg, weights, vocab, d)
        got = onnx.detect(read_image_rgb(d["file_name"]).permute(1, 2, 0).numpy())
        n = len(ref["scores"])
        assert len(got["scores"]) == n, d["file_name"]
        total += n
        np.testing.assert_array_equal(got["classes"], ref["labels"])
        np.testing.assert_allclose(got["scores"], ref["scores"], atol=1e-4)
        assert (box_iou(got["boxes"], ref["boxes"]) >= 0.999).all()
        if n:
            assert (mask_iou(got["masks"] > 0.5, ref["masks"] > 0.5) >= 0.99).all()
    print(f"{total} detections compared")
    assert total >= 10  # the comparison is not vacuous


def test_no_nms_dynamic_batch_keeps_every_candidate(exported, tool_export, synthetic_root):
    nms, raw = OnnxModel(exported[3] / "nms"), OnnxModel(tool_export)
    assert raw.meta["nms"] is False and raw.meta["inputs"]["images"]["shape"][0] == "batch"
    dicts, _ = synthetic_dataset(synthetic_root, "val")
    images = [read_image_rgb(d["file_name"]).permute(1, 2, 0).numpy() for d in dicts[:2]]
    canvases, sizes = zip(*[raw.prepare(im)[:2] for im in images])
    batch = raw.run(np.concatenate(canvases), np.concatenate(sizes))
    for i, im in enumerate(images):
        one = nms.detect(im, paste=False)
        mine = batch["batch_index"] == i
        assert mine.sum() > len(one["scores"]) and (np.diff(batch["scores"][mine]) <= 0).all()
        # every detection after NMS is one of the raw candidates
        cand = {(c, round(float(s), 4)) for c, s in zip(batch["classes"][mine], batch["scores"][mine])}
        assert all((c, round(float(s), 4)) in cand for c, s in zip(one["classes"], one["scores"]))
    assert set(np.unique(batch["batch_index"])) == {0, 1}


def test_bad_model_json_and_vocabulary_dimension(exported, vocab_dir, tmp_path):
    import shutil

    cfg, weights, vocab, out = exported
    bad = tmp_path / "bad"
    shutil.copytree(out / "nms", bad)
    meta = json.loads((bad / "model.json").read_text())
    for change, message in [
        ({"format": "x"}, "not an exported distill model"),
        ({"class_names": []}, "class_names"),
        ({"canvas": [96]}, "canvas"),
        ({"onnx_sha256": "0" * 64}, "does not match the sha256"),
    ]:
        (bad / "model.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(DistillInputError, match=message):
            OnnxModel(bad)
    (bad / "model.json").write_text("{not json")
    with pytest.raises(DistillInputError, match="model.json"):
        read_model_json(bad)
    with pytest.raises(DistillInputError, match=r"this model needs \(C, 128\)"):
        export_checkpoint(
            "detect", cfg, weights, ClassEmbeddings.load(vocab_dir / "dim16.npy"), tmp_path / "x"
        )
    with pytest.raises(DistillInputError, match="exists already"):
        export_checkpoint("detect", cfg, weights, vocab, out / "nms")


def test_export_tool(run_tool, tool_export, vocab_dir, tmp_path):
    meta = read_model_json(tool_export)
    assert (
        meta["opset"] == 18
        and meta["weights"]["file"] == "model_final.pth"
        and len(meta["class_names"]) == 15
    )
    r = run_tool("--vocabulary", str(vocab_dir / "dim16.npy"), "--output", str(tmp_path / "e"))
    assert r.returncode == 2 and "this model needs (C, 128)" in r.stderr and "Traceback" not in r.stderr
    r = run_tool(
        "--vocabulary", str(vocab_dir / "all.npy"), "--output", str(tmp_path / "e"), "--backend", "detectron2"
    )
    assert r.returncode == 2 and "torchvision backend only" in r.stderr
    r = run_tool("--vocabulary", str(vocab_dir / "all.npy"), "--output", str(tmp_path / "e"), "--opset", "13")
    assert r.returncode == 2 and "--opset must be >= 16" in r.stderr


def test_segmenter_matches_eager(segmenter_checkpoint, vocab_dir, synthetic_root, tmp_path):
    from distill.integrations.torchvision.sem_seg import predict_sem_seg

    cfg, weights = segmenter_checkpoint
    vocab = ClassEmbeddings.load(vocab_dir / "all.npy")
    export_checkpoint("semseg", cfg, weights, vocab, tmp_path / "seg", canvas=(96, 96))
    onnx = OnnxModel(tmp_path / "seg")
    assert onnx.meta["task"] == "semseg" and onnx.meta["labels"].startswith("0 background")
    model = load_model_for_export("semseg", cfg, weights, vocab)
    dicts, _ = synthetic_dataset(synthetic_root, "val")
    images = [read_image_rgb(d["file_name"]) for d in dicts[:NUM_IMAGES]]
    agree = []
    for img, ref in zip(images, predict_sem_seg(model, images)):
        got = onnx.segment(img.permute(1, 2, 0).numpy())
        assert got.shape == tuple(ref.shape)
        agree.append((got == ref.numpy()).mean())
    assert min(agree) >= 0.999, agree
    assert (
        len(np.unique(np.concatenate([p.flatten() for p in predict_sem_seg(model, images)]))) > 1
    )  # not one class
    with pytest.raises(DistillInputError, match="this segmenter needs 128"):
        export_checkpoint(
            "semseg", cfg, weights, ClassEmbeddings.load(vocab_dir / "dim16.npy"), tmp_path / "x"
        )
    with pytest.raises(DistillInputError, match="this export is a segmenter"):
        onnx.detect(images[0].permute(1, 2, 0).numpy())


def test_web_demo_tool_names_missing_weights(tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "tools/web_demo.py"), "--weights", str(tmp_path / "none.pth")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert r.returncode == 2 and "detector weights not found" in r.stderr and "Traceback" not in r.stderr
