"""Exported ONNX graphs (onnxruntime, CPU) against eager PyTorch on synthetic validation images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from tests.conftest import REPO

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install -e '.[deploy]')")

from distill.data import synthetic_dataset  # noqa: E402
from distill.data.images import read_image_rgb  # noqa: E402
from distill.integrations.onnx_model import OnnxModel, paste_masks, read_model_json, resized_hw  # noqa: E402
from distill.integrations.torchvision.demo import inference_mapper  # noqa: E402
from distill.integrations.torchvision.export import export_checkpoint, load_model_for_export  # noqa: E402
from distill.integrations.torchvision.mapper import resized_hw as mapper_resized_hw  # noqa: E402
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
    if "PYTHONPATH" in os.environ:  # the checkout under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
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
    assert "Warning" not in r.stderr, r.stderr[-2000:]  # the trace's known warnings are fixed or filtered
    return out


def eager_detections(cfg, weights, vocab, d):
    model = load_model_for_export("detect", cfg, weights, vocab)
    mapper = inference_mapper(cfg)
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


# (h, w) of the original images: square at the test size, tall and wide (the size rule's max edge binds),
# small (enlarged), larger than the test size (shrunk), and odd sizes (the eager model pads to 32)
GRID = [(96, 96), (150, 60), (70, 120), (40, 50), (300, 250), (61, 97)]
# the default canvas (the size rule's largest image), and a larger, non-square one
CANVASES = [None, (224, 288)]


def grid_images(synthetic_root, tmp_path) -> list[dict]:
    """Synthetic validation images resized to the GRID sizes, written as PNG: dataset-style dicts."""
    import cv2

    dicts, _ = synthetic_dataset(synthetic_root, "val")
    out = []
    for k, (h, w) in enumerate(GRID):
        rgb = read_image_rgb(dicts[k]["file_name"]).permute(1, 2, 0).numpy()
        path = tmp_path / f"grid{k}_{h}x{w}.png"
        cv2.imwrite(str(path), cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1])
        out.append({"file_name": str(path), "height": h, "width": w, "image_id": k})
    return out


def assert_same_detections(got: dict, ref: dict, where: str) -> int:
    """The parity criteria: same detections, classes and order, scores within 1e-4, box IoU >= 0.999,
    pasted mask IoU >= 0.99. Returns the number of detections compared."""
    n = len(ref["scores"])
    assert len(got["scores"]) == n, (where, len(got["scores"]), n)
    np.testing.assert_array_equal(got["classes"], ref["labels"], err_msg=where)
    np.testing.assert_allclose(got["scores"], ref["scores"], atol=1e-4, err_msg=where)
    assert (box_iou(got["boxes"], ref["boxes"]) >= 0.999).all(), where
    if n and "masks" in got:
        assert (mask_iou(got["masks"] > 0.5, ref["masks"] > 0.5) >= 0.99).all(), where
    return n


@pytest.mark.parametrize("canvas", CANVASES, ids=["default_canvas", "canvas224x288"])
def test_detector_parity_grid(exported, synthetic_root, tmp_path, canvas):
    """Any image size and aspect ratio, on the default canvas and a larger one: the PyTorch export wrapper
    and onnxruntime give the eager model's detections (as tools/demo.py)."""
    from distill.integrations.torchvision.demo import predict
    from distill.integrations.torchvision.export import ExportableDetector

    cfg, weights, vocab, out = exported
    folder = out / "nms" if canvas is None else tmp_path / "export"
    if canvas is not None:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            export_checkpoint("detect", cfg, weights, vocab, folder, canvas=canvas, dynamic_batch=True)
        assert not seen, [f"{w.filename}:{w.lineno}: {w.message}" for w in seen]  # no tracer warnings
    onnx = OnnxModel(folder)
    model = load_model_for_export("detect", cfg, weights, vocab)
    wrapper = ExportableDetector(model)
    total = 0
    for d in grid_images(synthetic_root, tmp_path):
        with torch.no_grad():
            ref = predict(model, cfg, d)
        ref = {k: (v.dense() if isinstance(v, BoxMasks) else v).numpy() for k, v in ref.items()}
        rgb = read_image_rgb(d["file_name"]).permute(1, 2, 0).numpy()
        h, w = rgb.shape[:2]
        where = f"{h}x{w} on {onnx.meta['canvas']}"
        total += assert_same_detections(onnx.detect(rgb), ref, "onnxruntime " + where)
        images, sizes, (sy, sx) = onnx.prepare(rgb)
        with torch.no_grad():
            boxes, scores, classes, masks, _ = wrapper(torch.from_numpy(images), torch.from_numpy(sizes))
        boxes = boxes.numpy() / np.array([sx, sy, sx, sy], np.float32)
        got = {"boxes": boxes, "scores": scores.numpy(), "classes": classes.numpy()}
        got["masks"] = paste_masks(masks.numpy(), boxes, h, w)
        assert_same_detections(got, ref, "export wrapper " + where)
    assert total >= 30, total  # the comparison is not vacuous
    if canvas is not None:
        assert_batch_matches_eager(onnx, model, cfg, grid_images(synthetic_root, tmp_path)[1:3])


def assert_batch_matches_eager(onnx, model, cfg, dicts):
    """A batch of images of different sizes in one graph run: the eager model's detections on the same
    batch (which it pads to its largest image, as the graph does)."""
    mapper = inference_mapper(cfg)
    with torch.no_grad():
        refs = model([mapper(d) for d in dicts])
    prepared = [onnx.prepare(read_image_rgb(d["file_name"]).permute(1, 2, 0).numpy()) for d in dicts]
    out = onnx.run(np.concatenate([p[0] for p in prepared]), np.concatenate([p[1] for p in prepared]))
    for i, (ref, (_, _, (sy, sx))) in enumerate(zip(refs, prepared)):
        mine = out["batch_index"] == i
        got = {
            "boxes": out["boxes"][mine] / np.array([sx, sy, sx, sy], np.float32),
            "scores": out["scores"][mine],
            "classes": out["classes"][mine],
        }
        ref = {k: v.numpy() for k, v in ref.items() if k != "masks"}
        assert_same_detections(got, ref, f"batch image {i}")


def test_default_canvas_covers_the_size_rule(exported):
    """The default canvas holds every image the size rule makes (its max edge, either way), rounded up to 32."""
    cfg, _, _, out = exported
    meta = read_model_json(out / "nms")
    side = -(-cfg.INPUT.MAX_SIZE_TEST // 32) * 32
    assert meta["canvas"] == [side, side]
    rule = meta["size_rule"]
    for h, w in [*GRID, (1000, 10), (10, 1000), (5000, 4999)]:
        assert resized_hw(h, w, rule, tuple(meta["canvas"])) == mapper_resized_hw(
            h, w, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
        )


@pytest.mark.parametrize("short,max_size", [(96, 160), (0, 160), (800, 1333)])
def test_runner_size_rule_is_the_mappers(short, max_size):
    """OnnxModel resizes as the eager mapper (MIN_SIZE_TEST 0: no resize) on a canvas holding the result."""
    rule = {"kind": "shortest_edge", "short": short, "max": max_size}
    for h, w in [*GRID, (1, 4000), (4000, 1), (37, 53)]:
        want = mapper_resized_hw(h, w, short, max_size)
        assert resized_hw(h, w, rule, (8192, 8192)) == want, (h, w)


@pytest.mark.parametrize("canvas", [None, (160, 224)], ids=["default_canvas", "canvas160x224"])
def test_segmenter_parity_grid(segmenter_checkpoint, vocab_dir, synthetic_root, tmp_path, canvas):
    """Every image that fits the canvas, any aspect ratio: the export wrapper and onnxruntime give the eager
    segmenter's labels (>= 99.9% of pixels)."""
    from distill.integrations.torchvision.export import ExportableSegmenter
    from distill.integrations.torchvision.sem_seg import predict_sem_seg

    cfg, weights = segmenter_checkpoint
    vocab = ClassEmbeddings.load(vocab_dir / "all.npy")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        export_checkpoint("semseg", cfg, weights, vocab, tmp_path / "seg", canvas=canvas)
    assert not seen, [f"{w.filename}:{w.lineno}: {w.message}" for w in seen]
    onnx = OnnxModel(tmp_path / "seg")
    ch, cw = onnx.meta["canvas"]
    model = load_model_for_export("semseg", cfg, weights, vocab)
    wrapper = ExportableSegmenter(model)
    agree = []
    for d in grid_images(synthetic_root, tmp_path):
        img = read_image_rgb(d["file_name"])
        h, w = img.shape[1:]
        if h > ch or w > cw:
            continue  # shrunk to fit the canvas: the eager model runs it at full size
        ref = predict_sem_seg(model, [img])[0].numpy()
        got = onnx.segment(img.permute(1, 2, 0).numpy())
        images, sizes, _ = onnx.prepare(img.permute(1, 2, 0).numpy())
        with torch.no_grad():
            mine = wrapper(torch.from_numpy(images), torch.from_numpy(sizes))[0, :h, :w].numpy()
        agree += [(got == ref).mean(), (mine == ref).mean()]
        assert len(np.unique(ref)) > 1  # not one class
    assert len(agree) >= 8 and min(agree) >= 0.999, agree


@pytest.mark.parametrize("flip", [True, False], ids=["flip_test", "no_flip"])
def test_segmenter_export_gives_the_demo_labels(
    segmenter_checkpoint, vocab_dir, synthetic_root, tmp_path, flip
):
    """What a user compares: `tools/demo.py --task semseg` and `OnnxModel.segment` on the same files, of any
    size (photos larger than INPUT.MAX_SIZE_TEST shrunk by the same rule) and with the config's flip test."""
    import cv2

    cfg, weights = segmenter_checkpoint
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.AUG.ENABLED = flip
    vocab = ClassEmbeddings.load(vocab_dir / "all.npy")
    export_checkpoint("semseg", cfg, weights, vocab, tmp_path / "seg")
    onnx = OnnxModel(tmp_path / "seg")
    assert onnx.meta["flip_test"] is flip
    big = cfg.INPUT.MAX_SIZE_TEST
    sizes = [(96, 96), (150, 60), (61, 97), (big + 77, big // 2 + 3), (big // 3, 2 * big + 10)]
    dicts, _ = synthetic_dataset(synthetic_root, "val")
    folder = tmp_path / "in"
    folder.mkdir()
    for k, (h, w) in enumerate(sizes):
        rgb = read_image_rgb(dicts[k]["file_name"]).permute(1, 2, 0).numpy()
        cv2.imwrite(
            str(folder / f"im{k}.png"), cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC)[:, :, ::-1]
        )
    demo = runpy_main("tools/demo.py")
    args = ["--task", "semseg", "--weights", weights, "--vocabulary", str(vocab_dir / "all.npy")]
    assert (
        demo(
            [*args, "--input", str(folder), "--output", str(tmp_path / "out"), "TEST.AUG.ENABLED", str(flip)]
        )
        == 0
    )
    for k, (h, w) in enumerate(sizes):
        ref = cv2.imread(str(tmp_path / "out" / f"im{k}_labels.png"), cv2.IMREAD_UNCHANGED)
        got = onnx.segment(cv2.imread(str(folder / f"im{k}.png"))[:, :, ::-1].copy())
        assert ref.shape == got.shape == (h, w)
        assert len(np.unique(ref)) > 1 and (got == ref).mean() >= 0.999, (h, w, (got == ref).mean())


def runpy_main(tool: str):
    import runpy

    return runpy.run_path(str(REPO / tool))["main"]
