"""FusedROIPooler against detectron2's own ROIPooler (needs detectron2)."""

import pytest
import torch

detectron2 = pytest.importorskip("detectron2", reason="detectron2 is not installed")

from detectron2.modeling.poolers import ROIPooler  # noqa: E402
from detectron2.structures import Boxes  # noqa: E402

from distill.integrations.detectron2.poolers import FusedROIPooler  # noqa: E402

pytestmark = pytest.mark.detectron2
SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 8, 96 // s, 128 // s, generator=g) for s in (4, 8, 16, 32)]
    box_lists = []
    for n in (30, 11):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([128, 96])
        box_lists.append(Boxes(torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 300], dim=1)))
    return feats, box_lists


@pytest.mark.parametrize("pooler_type", ["ROIAlignV2", "ROIAlign"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_detectron2(pooler_type, sampling_ratio):
    feats, box_lists = inputs()
    args = ((7, 7), SCALES, sampling_ratio, pooler_type)
    expected = ROIPooler(*args)(feats, box_lists)
    out = FusedROIPooler(*args)(feats, box_lists)
    assert (out - expected).abs().max() <= 1e-5


def test_unsupported_pooler_type():
    with pytest.raises(ValueError, match="ROIPool"):
        FusedROIPooler(7, SCALES, 0, "ROIPool")
