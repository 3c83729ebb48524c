"""distill.ops.nms / batched_nms: torchvision's results (ties, degenerate boxes, both float dtypes), the
fallback, bad input, and the RPN that uses them."""

import pytest
import torch
import torchvision

from distill.ops import _loader, batched_nms, has_compiled_ops, nms

needs_ops = pytest.mark.skipif(not has_compiled_ops(), reason="distill._C extension not built")


def _boxes(n, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(n, 4, generator=g) * 100
    b[:, 2:] = b[:, :2] + torch.rand(n, 2, generator=g) * 40
    b[: n // 10, 2] = b[: n // 10, 0]  # zero-area boxes: 0 / 0 IoU suppresses nothing
    s = torch.randint(0, 4, (n,), generator=g).float() if ties else torch.rand(n, generator=g)
    return b, s


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_nms_equals_torchvision(dtype, ties):
    for seed in range(40):
        n = [0, 1, 2, 7, 60, 300, 650][seed % 7]
        b, s = _boxes(n, seed, ties)
        b, s = b.to(dtype), s.to(dtype)
        thr = [0.0, 0.3, 0.5, 0.7, 1.0][seed % 5]
        got = nms(b, s, thr)
        assert got.dtype == torch.int64
        assert torch.equal(got, torchvision.ops.nms(b, s, thr)), (n, thr, ties)


@needs_ops
@pytest.mark.parametrize(
    "n", [300, 1000, 1001, 2500]
)  # both of torchvision's strategies (up to / over 1000 boxes)
def test_batched_nms_equals_torchvision(n):
    for seed in range(10):
        b, s = _boxes(n, seed, ties=seed % 2 == 1)
        groups = torch.randint(0, 5 + 100 * (seed % 3), (n,), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(batched_nms(b, s, groups, 0.6), torchvision.ops.batched_nms(b, s, groups, 0.6))
    empty = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


@needs_ops
def test_bad_input_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"boxes must be \(N, 4\)"):
        torch.ops.distill.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(RuntimeError, match=r"scores must be \(N,\)"):
        torch.ops.distill.nms(torch.zeros(3, 4), torch.zeros(4), 0.5)
    with pytest.raises(RuntimeError, match="scores are"):
        torch.ops.distill.nms(torch.zeros(3, 4), torch.zeros(3, dtype=torch.float64), 0.5)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.distill.nms(torch.zeros(3, 4).half(), torch.zeros(3).half(), 0.5)


def test_without_the_extension_torchvision_runs(monkeypatch):
    monkeypatch.setattr(_loader, "ops_available", lambda: False)
    monkeypatch.setitem(_loader._state, "warned", True)
    monkeypatch.delenv(_loader.REQUIRE_ENV, raising=False)
    b, s = _boxes(200, 3)
    assert torch.equal(nms(b, s, 0.5), torchvision.ops.nms(b, s, 0.5))
    monkeypatch.setenv(_loader.REQUIRE_ENV, "1")
    with pytest.raises(RuntimeError, match="DISTILL_REQUIRE_OPS"):
        nms(b, s, 0.5)


@pytest.mark.parametrize("training", [True, False])
def test_rpn_proposals_equal_torchvision_rpn(training):
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

    from distill.integrations.torchvision.rpn import RPN

    torch.manual_seed(0)
    anchors = AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3)
    head = RPNHead(8, 3)
    args = (
        anchors,
        head,
        0.7,
        0.3,
        64,
        0.5,
        {"training": 300, "testing": 200},
        {"training": 150, "testing": 100},
        0.7,
    )
    ours, theirs = RPN(*args), RegionProposalNetwork(*args)
    images = ImageList(torch.zeros(2, 3, 128, 96), [(128, 96), (120, 90)])
    feats = {str(k): torch.randn(2, 8, 32 // 2**k, 24 // 2**k) for k in range(3)}
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]])},
        {"boxes": torch.tensor([[5.0, 20.0, 80.0, 90.0]])},
    ]
    ours.train(training)
    theirs.train(training)
    torch.manual_seed(1)
    a, _ = ours(images, feats, targets if training else None)
    torch.manual_seed(1)
    b, _ = theirs(images, feats, targets if training else None)
    assert all(x.shape[0] > 10 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
