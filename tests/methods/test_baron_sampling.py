"""BARON bag sampling (`distill.methods.baron.sampling`) against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from distill.methods.baron.sampling import (
    BagSamplingConfig,
    _grid,
    filter_candidates,
    neighbour_probabilities,
    sample_bags,
)
from distill.utils import DistillInputError

HW = (1000, 1000)
CFG = BagSamplingConfig()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_neighbour_probabilities_by_hand():
    # square box far from the borders: every direction base * 1 ** 3 = 0.3, corners sqrt(0.3 * 0.3)
    p = neighbour_probabilities((400.0, 400.0, 500.0, 500.0), HW, CFG)
    assert torch.allclose(p, torch.tensor([0.3] * 4 + [1.0] + [0.3] * 4), atol=1e-6)
    # tall box (w 50, h 100): left/right 0.3 * 2 ** 3 clipped to 0.3, up/down 0.3 * 0.5 ** 3 = 0.0375
    p = neighbour_probabilities((400.0, 400.0, 450.0, 500.0), HW, CFG)
    c = math.sqrt(0.3 * 0.0375)
    assert torch.allclose(p, torch.tensor([c, 0.0375, c, 0.3, 1.0, 0.3, c, 0.0375, c]), atol=1e-6)
    # 10 px (0.1 box) to the left border <= cut_off 0.3 + interval -0.1: no left column
    p = neighbour_probabilities((10.0, 400.0, 110.0, 500.0), HW, CFG)
    assert p[[0, 3, 6]].tolist() == [0.0, 0.0, 0.0] and p[[1, 2, 5, 7, 8]].gt(0).all()


def test_grid_cells_overlap_by_the_interval():
    g = _grid((400.0, 400.0, 500.0, 500.0), -0.1)
    assert torch.allclose(g[4], torch.tensor([400.0, 400.0, 500.0, 500.0]))
    assert torch.allclose(g[0], torch.tensor([310.0, 310.0, 410.0, 410.0]), atol=1e-3)
    assert torch.allclose(g[8], torch.tensor([490.0, 490.0, 590.0, 590.0]), atol=1e-3)
    assert torch.allclose(g[:, 2:] - g[:, :2], torch.full((9, 2), 100.0), atol=1e-3)


def test_filter_candidates_by_hand():
    boxes = torch.tensor(
        [
            [100.0, 100.0, 300.0, 300.0],  # kept
            [110.0, 110.0, 310.0, 310.0],  # IoU 0.82 with the first, lower score: NMS
            [500.0, 500.0, 600.0, 600.0],  # objectness 0.8 <= 0.85
            [600.0, 100.0, 700.0, 600.0],  # w / h 0.2 < 0.25
            [700.0, 700.0, 780.0, 780.0],  # 6,400 px < 1 % of 999 * 999
            [800.0, 800.0, 950.0, 950.0],  # kept
        ]
    )
    scores = torch.tensor([0.95, 0.9, 0.8, 0.99, 0.99, 0.9])
    kept = filter_candidates(boxes, scores, HW, CFG)
    assert torch.equal(kept, boxes[[0, 5]])
    # ground truth enters with score 1, ahead of the proposals, and goes through the same filters
    gt = torch.tensor([[105.0, 105.0, 305.0, 305.0]])
    assert torch.equal(filter_candidates(boxes, scores, HW, CFG, gt), torch.cat([gt, boxes[[5]]]))
    # topk: only the best 2 proposals (0.99, 0.99) are considered, both filtered out
    assert filter_candidates(boxes, scores, HW, BagSamplingConfig(topk=2)).shape == (0, 4)


def test_no_usable_box_gives_no_bag_and_the_official_fallback_on_request():
    empty = torch.zeros((0, 4))
    assert sample_bags(empty, torch.zeros(0), HW, _gen()) == []
    low = torch.tensor([[100.0, 100.0, 300.0, 300.0]])
    assert sample_bags(low, torch.tensor([0.5]), HW, _gen()) == []
    fb = BagSamplingConfig(fallback=True)
    assert torch.equal(filter_candidates(low, torch.tensor([0.5]), HW, fb), low)
    assert torch.equal(
        filter_candidates(empty, torch.zeros(0), HW, fb), torch.tensor([[0.0, 0.0, 999.0, 999.0]])
    )
    assert len(sample_bags(empty, torch.zeros(0), HW, _gen(), fb)) == 1  # the whole image, no neighbour room


def test_bags_counts_geometry_and_limits():
    boxes = torch.tensor(
        [[400.0, 400.0, 500.0, 500.0], [20.0, 700.0, 220.0, 900.0], [850.0, 50.0, 990.0, 150.0]]
    )
    bags = sample_bags(boxes, torch.ones(3), HW, _gen(1))
    per_source = [sum(b.source == s for b in bags) for s in range(3)]
    assert per_source == [3, 3, 3]  # min(max_groups 3, n!) with n >= 3 drawable neighbours each
    for b in bags:
        k = b.boxes.shape[0]
        assert 4 in b.cells.tolist() and b.cells.tolist() == sorted(set(b.cells.tolist()))
        kept = boxes[b.source]
        assert torch.allclose(b.boxes[b.cells.tolist().index(4)], kept)
        assert (b.boxes[:, [0, 2]] >= 0).all() and (b.boxes[:, [0, 2]] <= HW[1]).all()
        assert (b.boxes[:, [1, 3]] >= 0).all() and (b.boxes[:, [1, 3]] <= HW[0]).all()
        wh = b.boxes[:, 2:] - b.boxes[:, :2]
        inside = (b.boxes[:, :2] > 0).all(1) & (b.boxes[:, 2:] < 1000).all(1)
        assert torch.allclose(wh[inside], (kept[2:] - kept[:2]).expand_as(wh[inside]), atol=1e-3)
        assert torch.allclose(b.spanned_box[:2], b.boxes[:, :2].min(0).values)
        assert torch.allclose(b.spanned_box[2:], b.boxes[:, 2:].max(0).values)
        size = b.spanned_box[2:] - b.spanned_box[:2]
        back = b.normed_boxes.view(-1, 2, 2) * size + b.spanned_box[:2]
        assert torch.allclose(back.view(-1, 4), b.boxes, atol=1e-3)
        assert b.permutations.shape == (min(math.factorial(k), 2), k)
        assert len({tuple(p) for p in b.permutations.tolist()}) == b.permutations.shape[0]
        assert all(sorted(p) == list(range(k)) for p in b.permutations.tolist())
    for s in range(3):
        groups = [tuple(b.cells.tolist()) for b in bags if b.source == s]
        assert len(set(groups)) == len(groups)
    # the box 20 px from the left border: 0.1 box of room, never a left neighbour; one near the top-right
    # corner: neighbours there are clamped inside the image (smaller than the box)
    assert all(not {0, 3, 6} & set(b.cells.tolist()) for b in bags if b.source == 1)
    lvis = sample_bags(boxes[:1], torch.ones(1), HW, _gen(1), BagSamplingConfig.lvis())
    assert len(lvis) == 6


def test_a_box_without_neighbour_room_is_a_bag_of_one():
    bags = sample_bags(torch.tensor([[0.0, 0.0, 999.0, 999.0]]), torch.ones(1), HW, _gen())
    assert len(bags) == 1 and bags[0].cells.tolist() == [4] and bags[0].permutations.tolist() == [[0]]
    assert torch.allclose(bags[0].normed_boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


def test_same_seed_same_bags_other_seed_other_bags():
    boxes = torch.tensor([[400.0, 400.0, 500.0, 500.0], [100.0, 100.0, 250.0, 220.0]])
    run = lambda seed: sample_bags(boxes, torch.ones(2), HW, _gen(seed))  # noqa: E731
    a, b = run(3), run(3)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.boxes, y.boxes) and torch.equal(x.permutations, y.permutations)
    sig = lambda bags: [(tuple(x.cells.tolist()), tuple(map(tuple, x.permutations.tolist()))) for x in bags]  # noqa: E731
    assert any(sig(run(s)) != sig(a) for s in range(4, 10))


def test_bad_input_is_one_line():
    with pytest.raises(DistillInputError, match=r"\(M, 4\)"):
        sample_bags(torch.zeros(3, 5), torch.zeros(3), HW, _gen())
    with pytest.raises(DistillInputError, match="scores"):
        sample_bags(torch.zeros(3, 4), torch.zeros(2), HW, _gen())


def test_neighbours_past_the_border_are_clamped_into_the_image():
    box = torch.tensor(
        [[850.0, 50.0, 990.0, 150.0]]
    )  # 0.5 box of room above: drawable, but 40 px would leave
    above = [
        b for s in range(10) for b in sample_bags(box, torch.ones(1), HW, _gen(s)) if 1 in b.cells.tolist()
    ]
    assert above
    for b in above:
        cell1 = b.boxes[b.cells.tolist().index(1)]
        assert torch.allclose(cell1, torch.tensor([850.0, 0.0, 990.0, 60.0]), atol=1e-3)  # y from -40 to 0
        assert b.spanned_box[1].item() == 0.0
