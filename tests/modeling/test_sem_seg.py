import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.evaluation import SemSegEvaluator
from distill.modeling.heads import TextClassifier
from distill.modeling.losses import pixel_distill_loss
from distill.modeling.sem_seg import (
    OpenVocabSemSegPredictor,
    SemSegEmbedHead,
    SemSegLabelMap,
    check_sem_seg_labels,
    image_pixel_distill_loss,
    pixel_logits,
    sem_seg_ce_loss,
)
from distill.utils import DistillInputError

D = 8


def _features(b=2, h=32, w=32, ch=16):
    return [torch.randn(b, ch, h // s, w // s) for s in (4, 8, 16, 32)]


def _predictor(pixel_weight=1.0, kind="l1", n=3, values=(1, 2, 5)):
    torch.manual_seed(0)
    head = SemSegEmbedHead([16] * 4, [4, 8, 16, 32], D, conv_dims=16)
    cls = TextClassifier(F.normalize(torch.randn(n, D), dim=-1), temperature=0.05)
    return OpenVocabSemSegPredictor(head, cls, SemSegLabelMap(values, 0, 255), 1.0, pixel_weight, kind)


# ---------------------------------------------------------------- labels
def test_label_map_round_trip_and_novel_ignored():
    lm = SemSegLabelMap([1, 2, 5], background_value=0, ignore_value=255)
    labels = torch.tensor([[0, 1, 2], [5, 3, 255], [7, 300, 0]])  # 3, 7 novel; 300 unknown
    idx = lm.to_index(labels)
    assert idx.tolist() == [[3, 0, 1], [2, 255, 255], [255, 255, 3]]
    assert lm.to_value(torch.tensor([0, 1, 2, 3])).tolist() == [1, 2, 5, 0]
    nobg = SemSegLabelMap([0, 1], background_value=None)
    assert nobg.to_index(torch.tensor([0, 1, 2])).tolist() == [0, 1, 255]


def test_label_map_rejects_bad_values():
    with pytest.raises(DistillInputError, match="ignore value 1"):
        SemSegLabelMap([1, 2], 0, ignore_value=1)
    with pytest.raises(DistillInputError, match="repeat"):
        SemSegLabelMap([1, 1], 0)


def test_check_labels_errors_name_the_file():
    lab = np.array([[0, 1], [2, 255]], np.uint8)
    assert check_sem_seg_labels(lab, "x.png", 3, 255, (2, 2)).dtype == np.int64
    with pytest.raises(
        DistillInputError, match=r"x\.png: label value 7 at \(x=1, y=0\) exceeds the 3 classes"
    ):
        check_sem_seg_labels(np.array([[0, 7], [0, 0]]), "x.png", 3)
    with pytest.raises(DistillInputError, match=r"x\.png: label size 2x2 differs from the image's 4x3"):
        check_sem_seg_labels(lab, "x.png", 3, 255, (3, 4))
    with pytest.raises(DistillInputError, match=r"x\.png: the ignore value 2 lies inside the 3 class values"):
        check_sem_seg_labels(lab, "x.png", 3, ignore_value=2)
    with pytest.raises(DistillInputError, match=r"x\.png: every pixel has the ignore value"):
        check_sem_seg_labels(np.full((2, 2), 255), "x.png", 3)


# ---------------------------------------------------------------- head
def test_embed_head_shapes_and_norm():
    head = SemSegEmbedHead([16] * 4, [4, 8, 16, 32], D, conv_dims=16)
    emb = head(_features(2, 64, 96))
    assert emb.shape == (2, D, 16, 24)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2, 16, 24), atol=1e-5)
    with pytest.raises(DistillInputError):
        SemSegEmbedHead([16] * 3, [4, 8, 16, 32], D)


def test_pixel_logits_are_cosine_over_temperature_background_last():
    cls = TextClassifier(F.normalize(torch.randn(3, D), dim=-1), temperature=0.1)
    emb = F.normalize(torch.randn(2, D, 4, 5), dim=1)
    logits = pixel_logits(cls, emb)
    assert logits.shape == (2, 4, 4, 5)
    direct = torch.einsum("bdhw,cd->bchw", emb, cls.class_embeddings) / 0.1
    assert torch.allclose(logits[:, :3], direct, atol=1e-5)
    bg = torch.einsum("bdhw,d->bhw", emb, F.normalize(cls.bg_embedding, dim=0)) / 0.1
    assert torch.allclose(logits[:, 3], bg, atol=1e-5)
    assert pixel_logits(cls, emb, background=False).shape == (2, 3, 4, 5)


# ---------------------------------------------------------------- losses
def test_ce_loss_upsamples_and_ignores():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, 4, requires_grad=True)
    labels = torch.randint(0, 4, (2, 16, 16))
    labels[:, :8] = 255  # e.g. novel pixels: no loss, no gradient from them
    loss = sem_seg_ce_loss(logits, labels)
    up = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    keep = labels != 255
    direct = F.cross_entropy(up.permute(0, 2, 3, 1)[keep], labels[keep])
    assert loss.item() == pytest.approx(direct.item(), rel=1e-5)
    loss.backward()
    assert logits.grad[:, :, 0].abs().sum() == 0  # rows 0-1 of the 4x4 grid only feed ignored pixels
    empty = sem_seg_ce_loss(logits, torch.full((2, 16, 16), 255))
    assert empty.item() == 0 and empty.requires_grad


@pytest.mark.parametrize("kind", ["l1", "cosine"])
def test_image_pixel_distill_loss(kind):
    torch.manual_seed(0)
    s = F.normalize(torch.randn(2, D, 8, 8), dim=1)
    t = F.normalize(torch.randn(2, D, 8, 8), dim=1)
    full = image_pixel_distill_loss(s, list(t), [(32, 32), (32, 32)], 4, kind)
    assert full.item() == pytest.approx(pixel_distill_loss(s, t, kind).item(), rel=1e-5)
    # a 16x32 image padded to 32x32: only its own 4x8 cells count; all-zero teacher cells do not count
    t1 = t[1, :, :4].clone()
    t1[:, :, :2] = 0
    part = image_pixel_distill_loss(s, [t[0], t1], [(32, 32), (16, 32)], 4, kind)
    valid = torch.zeros(2, 8, 8, dtype=torch.bool)
    valid[0] = True
    valid[1, :4, 2:] = True
    tt = t.clone()
    tt[1, :, :4] = t1
    assert part.item() == pytest.approx(pixel_distill_loss(s, tt, kind, valid).item(), rel=1e-5)
    # teacher at another resolution is resized bilinearly to the student's grid
    low = F.normalize(torch.randn(2, D, 2, 2), dim=1)
    expect = pixel_distill_loss(
        s, F.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False), kind
    )
    assert image_pixel_distill_loss(s, list(low), [(32, 32)] * 2, 4, kind).item() == pytest.approx(
        expect.item(), rel=1e-5
    )
    assert image_pixel_distill_loss(s, list(t), [(32, 32)] * 2, 4, kind).item() > 0
    assert image_pixel_distill_loss(s, list(s), [(32, 32)] * 2, 4, kind).item() == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------- predictor
def test_predictor_training_losses_and_gradients():
    pred = _predictor(pixel_weight=0.5).train()
    feats = [f.requires_grad_() for f in _features()]
    labels = torch.tensor([0, 1, 2, 5, 3, 255]).repeat(2, 32, 6)[:, :, :32]  # 3 is novel: ignored
    targets = list(F.normalize(torch.randn(2, D, 4, 4), dim=1))
    _, losses = pred(feats, [(32, 32)] * 2, labels, targets)
    assert set(losses) == {"loss_sem_seg", "loss_pixel_distill"}
    sum(losses.values()).backward()
    assert pred.classifier.bg_embedding.grad is not None and feats[0].grad is not None
    ce_only = _predictor(pixel_weight=0.0).train()
    assert set(ce_only(_features(), [(32, 32)] * 2, labels)[1]) == {"loss_sem_seg"}
    with pytest.raises(DistillInputError, match="no dense teacher targets"):
        pred(_features(), [(32, 32)] * 2, labels)


def test_predictor_inference_and_vocabulary_swap():
    pred = _predictor().eval()
    with torch.no_grad():
        logits, losses = pred(_features(), [(32, 32)] * 2)
    assert losses == {} and logits.shape == (2, 4, 32, 32)
    assert set(pred.predict(logits).unique().tolist()) <= {0, 1, 2, 5}
    pred.set_vocabulary(F.normalize(torch.randn(5, D), dim=-1), [1, 2, 3, 4, 5])
    with torch.no_grad():
        logits, _ = pred(_features(), [(32, 32)] * 2)
    assert logits.shape == (2, 6, 32, 32)
    assert set(pred.predict(logits).unique().tolist()) <= {0, 1, 2, 3, 4, 5}
    with pytest.raises(DistillInputError, match="label values"):
        pred.set_vocabulary(F.normalize(torch.randn(5, D), dim=-1), [1, 2])


def test_evaluator_on_predictions_matches_direct_confusion_matrix():
    """mIoU / base / novel / hIoU of the segmenter's label space equal a direct per-class pixel count."""
    pred = _predictor().eval()
    rng = np.random.default_rng(0)
    ev = SemSegEvaluator(6, 255, base_classes=[0, 1, 2, 5], novel_classes=[3, 4])
    preds, gts = [], []
    for _ in range(3):
        with torch.no_grad():
            p = pred.predict(pred(_features(1, 64, 64), [(64, 64)])[0])[0].numpy()
        g = rng.integers(0, 6, (64, 64))
        g[rng.random(g.shape) < 0.1] = 255
        p = np.where(rng.random(g.shape) < 0.5, np.where(g == 255, 0, g), p)
        ev.update(p, g)
        preds.append(p)
        gts.append(g)
    m = ev.compute()

    def iou(c):
        inter = sum(((p == c) & (g == c) & (g != 255)).sum() for p, g in zip(preds, gts))
        union = sum((((p == c) | (g == c)) & (g != 255)).sum() for p, g in zip(preds, gts))
        return inter / union

    base, novel = np.mean([iou(c) for c in (0, 1, 2, 5)]) * 100, np.mean([iou(c) for c in (3, 4)]) * 100
    assert m["mIoU_base"] == pytest.approx(base)
    assert m["mIoU_novel"] == pytest.approx(novel)
    assert m["mIoU"] == pytest.approx(np.mean([iou(c) for c in range(6)]) * 100)
    assert m["hIoU"] == pytest.approx(2 * base * novel / (base + novel))


def test_background_cells_are_not_distilled_by_default():
    labels = torch.zeros(2, 32, 32, dtype=torch.long)  # all background
    labels[0, 5, 5] = 3  # one novel pixel: its 4x4 cell is distilled
    targets = list(F.normalize(torch.randn(2, D, 8, 8), dim=1))
    pred = _predictor().train()
    feats = _features()
    _, losses = pred(feats, [(32, 32)] * 2, labels, targets)
    emb = pred.embed_head(feats)
    keep = torch.zeros(2, 8, 8, dtype=torch.bool)
    keep[0, 1, 1] = True
    expect = image_pixel_distill_loss(emb, targets, [(32, 32)] * 2, 4, "l1", keep)
    assert losses["loss_pixel_distill"].item() == pytest.approx(expect.item(), rel=1e-5)
    pred.distill_background = True
    _, losses = pred(feats, [(32, 32)] * 2, labels, targets)
    assert losses["loss_pixel_distill"].item() == pytest.approx(
        image_pixel_distill_loss(emb, targets, [(32, 32)] * 2, 4, "l1").item(), rel=1e-5
    )
