import math

import pytest
import torch
import torch.nn.functional as F

from distill.methods.vild.method import ensemble_scores
from distill.modeling.heads import (
    ClassAgnosticMaskHead,
    RegionEmbeddingHead,
    TextClassifier,
)
from distill.modeling.losses import pixel_distill_loss, vild_image_loss, vild_text_loss
from distill.teacher import ClassEmbeddings
from distill.utils import DistillInputError


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_text_classifier_logits_and_background():
    classes = _unit(3, 8, 0)
    clf = TextClassifier(classes, temperature=0.01)
    assert clf.bg_embedding.std().item() < 0.05  # N(0, 0.01) init
    regions = torch.cat([classes[1:2], F.normalize(clf.bg_embedding.detach(), dim=0)[None]])
    logits = clf(regions)
    assert logits.shape == (2, 4)
    assert logits[0].argmax().item() == 1 and logits[1].argmax().item() == 3  # background is last
    assert logits[0, 1].item() == pytest.approx(100.0, abs=1e-3)  # cos 1 / 0.01


def test_set_vocabulary_swaps_classes_and_checks_dim():
    clf = TextClassifier(_unit(3, 8, 0))
    new = ClassEmbeddings(_unit(5, 8, 1), [f"c{i}" for i in range(5)])
    clf.set_vocabulary(new)
    assert clf.num_classes == 5 and clf.class_names == new.class_names
    assert clf(_unit(2, 8, 2)).shape == (2, 6)
    with pytest.raises(DistillInputError, match=r"needs \(C, 8\)"):
        clf.set_vocabulary(_unit(4, 16, 0))


def test_region_head_is_normalised_and_mask_head_shape():
    h = RegionEmbeddingHead(1024, 64)
    out = h(torch.randn(5, 1024))
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    assert ClassAgnosticMaskHead(16, conv_dim=8)(torch.randn(3, 16, 14, 14)).shape == (3, 1, 28, 28)


def test_vild_text_loss_novel_modes():
    logits = torch.tensor([[2.0, 5.0, 0.5, 1.0]])  # classes 0..2, bg last
    label = torch.tensor([0])
    plain = vild_text_loss(logits, label)
    assert plain.item() == pytest.approx(-torch.log_softmax(logits, 1)[0, 0].item())
    novel = torch.tensor([False, True, False])
    zero = vild_text_loss(logits, label, novel, "zero")  # novel logit 5 → 0, still in the denominator
    assert zero.item() == pytest.approx(
        -torch.log_softmax(torch.tensor([[2.0, 0.0, 0.5, 1.0]]), 1)[0, 0].item()
    )
    drop = vild_text_loss(logits, label, novel, "neg_inf")
    assert drop.item() == pytest.approx(-torch.log_softmax(torch.tensor([[2.0, 0.5, 1.0]]), 1)[0, 0].item())
    empty = vild_text_loss(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0 and empty.requires_grad


def test_vild_image_loss_is_l1_summed_over_dims_mean_over_valid():
    s, t = _unit(4, 8, 0), _unit(4, 8, 1)
    valid = torch.tensor([True, False, True, True])
    expected = sum((s[i] - t[i]).abs().sum() for i in (0, 2, 3)) / 3
    assert vild_image_loss(s, t.half(), valid).item() == pytest.approx(expected.item(), abs=2e-3)
    assert vild_image_loss(s, s).item() == pytest.approx(0, abs=1e-6)


def test_pixel_distill_loss():
    s, t = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    assert pixel_distill_loss(s, s).item() == pytest.approx(0, abs=1e-5)
    assert pixel_distill_loss(s, -s, "cosine").item() == pytest.approx(2, abs=1e-5)
    with pytest.raises(ValueError):
        pixel_distill_loss(s, t, "l2")


def test_ensemble_geometric_mean_weights():
    classes = _unit(2, 8, 0)
    text_logits = torch.tensor([[1.0, 0.0, -1.0]])
    img = classes[1:2]
    novel = torch.tensor([False, True])
    out = ensemble_scores(text_logits, img, classes, novel, temperature=0.5)
    p_t = text_logits.softmax(-1)[0]
    p_i = (img @ classes.t() / 0.5).softmax(-1)[0]
    assert out[0, 0].item() == pytest.approx((p_t[0] ** (2 / 3) * p_i[0] ** (1 / 3)).item(), rel=1e-4)
    assert out[0, 1].item() == pytest.approx((p_t[1] ** (1 / 3) * p_i[1] ** (2 / 3)).item(), rel=1e-4)
    assert out[0, 2].item() == pytest.approx(p_t[2].item())
    assert math.isfinite(out.sum().item())
