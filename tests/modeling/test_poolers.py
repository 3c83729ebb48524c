"""MultiScaleRoIPooler on the fused op."""

import pytest
import torch
from torchvision.ops import roi_align

from distill.modeling import MultiScaleRoIPooler, boxes_to_rois
from distill.ops._reference import assign_levels

STRIDES = [4, 8, 16, 32]


def features(batch=2, channels=4, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, size // s, size // s, generator=g) for s in STRIDES]


def boxes(n, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * size], dim=1)


def test_boxes_to_rois():
    rois = boxes_to_rois([boxes(3), boxes(0), boxes(2, seed=1)])
    assert rois.shape == (5, 5)
    assert rois[:, 0].tolist() == [0, 0, 0, 2, 2]
    torch.testing.assert_close(rois[3:, 1:], boxes(2, seed=1))
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        boxes_to_rois([torch.zeros(3, 5)])


def test_pooler_matches_per_level_roi_align():
    feats = features()
    box_lists = [boxes(20), boxes(7, seed=1)]
    out = MultiScaleRoIPooler(7, STRIDES)(feats, box_lists)
    rois = boxes_to_rois(box_lists)
    level = assign_levels(rois[:, 1:], 2, 4, 224, 4)
    expected = torch.zeros_like(out)
    for i, (f, s) in enumerate(zip(feats, STRIDES)):
        idx = torch.nonzero(level == i).squeeze(1)
        expected[idx] = roi_align(f, rois[idx], (7, 7), 1.0 / s, 0, True)
    assert out.shape == (27, 4, 7, 7)
    assert (out - expected).abs().max() <= 1e-5


def test_scales_and_strides_are_equivalent():
    feats, box_lists = features(), [boxes(5), boxes(5, seed=2)]
    by_scales = MultiScaleRoIPooler((7, 5), scales=[1 / s for s in STRIDES], sampling_ratio=2)(
        feats, box_lists
    )
    by_strides = MultiScaleRoIPooler((7, 5), STRIDES, sampling_ratio=2)(feats, box_lists)
    torch.testing.assert_close(by_scales, by_strides, rtol=0, atol=0)


def test_pooler_argument_errors():
    with pytest.raises(ValueError, match="exactly one"):
        MultiScaleRoIPooler(7)
    with pytest.raises(ValueError, match="powers of two"):
        MultiScaleRoIPooler(7, scales=[1 / 3, 1 / 6])
    pooler = MultiScaleRoIPooler(7, STRIDES)
    with pytest.raises(ValueError, match="batch"):
        pooler(features(), [boxes(3)])
    with pytest.raises(ValueError, match="levels"):
        pooler(features()[:3], [boxes(3), boxes(3)])
