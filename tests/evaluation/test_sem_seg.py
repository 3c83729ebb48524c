import cv2
import numpy as np
import pytest

from distill.evaluation import SemSegEvaluator, read_sem_seg_png
from distill.utils import DistillInputError


def direct_miou(preds, gts, n, ignore, classes):
    """IoU per class by counting pixels, one class at a time (no confusion matrix)."""
    ious = []
    for c in classes:
        inter = union = 0
        for p, g in zip(preds, gts):
            v = g != ignore
            inter += np.sum((p == c) & (g == c) & v)
            union += np.sum(((p == c) | (g == c)) & v)
        if union:
            ious.append(inter / union)
    return 100 * float(np.mean(ious))


def test_miou_matches_direct_computation():
    rng = np.random.default_rng(0)
    n, ignore = 6, 255
    preds, gts = [], []
    ev = SemSegEvaluator(n, ignore, base_classes=[0, 1, 2, 3], novel_classes=[4, 5])
    for _ in range(4):
        g = rng.integers(0, n, (20, 24))
        g[rng.random(g.shape) < 0.1] = ignore
        p = np.where(rng.random(g.shape) < 0.6, g, rng.integers(0, n, g.shape))
        p[p == ignore] = 0
        ev.update(p, g)
        preds.append(p)
        gts.append(g)
    m = ev.compute()
    assert m["mIoU"] == pytest.approx(direct_miou(preds, gts, n, ignore, range(n)))
    assert m["mIoU_base"] == pytest.approx(direct_miou(preds, gts, n, ignore, [0, 1, 2, 3]))
    assert m["mIoU_novel"] == pytest.approx(direct_miou(preds, gts, n, ignore, [4, 5]))
    b, nv = m["mIoU_base"], m["mIoU_novel"]
    assert m["hIoU"] == pytest.approx(2 * b * nv / (b + nv))
    valid = np.concatenate([g.ravel() for g in gts]) != ignore
    correct = np.concatenate([(p == g).ravel() for p, g in zip(preds, gts)])
    assert m["pACC"] == pytest.approx(100 * correct[valid].mean())


def test_perfect_and_errors():
    ev = SemSegEvaluator(3, base_classes=[0, 1], novel_classes=[2])
    g = np.array([[0, 1], [2, 255]])
    ev.update(np.array([[0, 1], [2, 0]]), g)
    assert ev.compute()["mIoU"] == pytest.approx(100)
    with pytest.raises(ValueError, match="shape"):
        ev.update(np.zeros((3, 3), int), g)
    with pytest.raises(ValueError, match="outside"):
        ev.update(np.array([[0, 7], [0, 0]]), g)


def test_read_sem_seg_png_errors(tmp_path):
    good = tmp_path / "a.png"
    cv2.imwrite(str(good), np.array([[0, 1], [2, 255]], np.uint8))
    assert read_sem_seg_png(good, 3).tolist() == [[0, 1], [2, 255]]
    with pytest.raises(DistillInputError, match="exceeds the 2 classes"):
        read_sem_seg_png(good, 2)
    with pytest.raises(DistillInputError, match="differs from the image"):
        read_sem_seg_png(good, 3, expected_hw=(4, 4))
    with pytest.raises(DistillInputError, match="not found"):
        read_sem_seg_png(tmp_path / "none.png", 3)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DistillInputError, match="cannot decode"):
        read_sem_seg_png(bad, 3)
    cut = tmp_path / "cut.png"
    data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 3, (64, 64), dtype=np.uint8))[
        1
    ].tobytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DistillInputError, match="truncated or corrupt semantic label file"):
        read_sem_seg_png(cut, 3)
