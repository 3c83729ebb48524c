"""BARON losses and queue (`distill.methods.baron.losses`) against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from distill.methods.baron.losses import TeacherQueue, bag_loss, contrastive_loss, single_region_loss
from distill.utils import DistillInputError

S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
T = torch.tensor([[0.6, 0.8], [0.0, 1.0]])


def _ce(logits, label):
    return -logits[label] + math.log(sum(math.exp(x) for x in logits))


def test_2x2_symmetric_infonce_by_hand():
    k = 2.0
    # student queries: S @ T^T = [[0.6, 0], [0.8, 1]]; teacher queries: T @ S^T = [[0.6, 0.8], [0, 1]]
    s_side = (_ce([k * 0.6, 0.0], 0) + _ce([k * 0.8, k * 1.0], 1)) / 2
    t_side = (_ce([k * 0.6, k * 0.8], 0) + _ce([0.0, k * 1.0], 1)) / 2
    got = contrastive_loss(S, T, k)
    assert got.item() == pytest.approx(0.5 * s_side + 0.5 * t_side, abs=1e-6)
    # inputs are normalised: scaling a row changes nothing
    assert contrastive_loss(3 * S, T * torch.tensor([[2.0], [5.0]]), k).item() == pytest.approx(
        got.item(), abs=1e-6
    )


def test_pair_ids_mask_the_other_orders_of_a_bag():
    # both rows from the same bag: no negative is left, each row's CE is 0
    assert bag_loss(S, T, torch.tensor([0, 0]), torch.tensor([5, 5])).item() == pytest.approx(0.0, abs=1e-7)
    # different bags: the plain loss
    a = bag_loss(S, T, torch.tensor([0, 0]), torch.tensor([5, 6]), scale=2.0)
    assert a.item() == pytest.approx(contrastive_loss(S, T, 2.0).item(), abs=1e-6)


def test_queue_keys_of_the_same_image_are_masked():
    k = 2.0
    tq = (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([7, 8]))  # past teacher keys
    sq = (torch.tensor([[0.6, 0.8]]), torch.tensor([8]))  # past student keys
    ids = torch.tensor([7, 9])
    # student row 0 (image 7): keys T0, T1, queue [1,0] (image 7: masked), [0,1] (image 8) → [0.6, 0, -, 0]
    # student row 1 (image 9): [0.8, 1, 0, 1]
    s_side = (_ce([k * 0.6, 0.0, 0.0], 0) + _ce([k * 0.8, k * 1.0, 0.0, k * 1.0], 1)) / 2
    # teacher row 0 (image 7): keys S0, S1, student queue [0.6, 0.8] (image 8) → [0.6, 0.8, 0.6 * 0.6 + 0.8 * 0.8]
    # teacher row 1 (image 9): [0, 1, 0.8]
    t_side = (_ce([k * 0.6, k * 0.8, k * 1.0], 0) + _ce([0.0, k * 1.0, k * 0.8], 1)) / 2
    got = contrastive_loss(S, T, k, image_ids=ids, teacher_queue=tq, student_queue=sq)
    assert got.item() == pytest.approx(0.5 * s_side + 0.5 * t_side, abs=1e-6)
    # without the mask the image-7 key would count: the value changes by exactly that key's term
    unmasked_s = (_ce([k * 0.6, 0.0, k * 1.0, 0.0], 0) + _ce([k * 0.8, k * 1.0, 0.0, k * 1.0], 1)) / 2
    other = contrastive_loss(S, T, k, image_ids=torch.tensor([6, 9]), teacher_queue=tq, student_queue=sq)
    assert other.item() == pytest.approx(0.5 * unmasked_s + 0.5 * t_side, abs=1e-6)
    assert got.item() != pytest.approx(other.item(), abs=1e-3)


def test_single_region_term_is_the_same_loss_with_region_ids():
    e = torch.eye(3)
    ids = torch.tensor([0, 0, 1])
    got = single_region_loss(e, e, ids, torch.tensor([4, 4, 5]), scale=50.0)
    # rows 0 and 1 are the same region: each sees only itself → 0; row 2 sees [50, 0, 0] (50 at its diagonal)
    row2 = _ce([0.0, 0.0, 50.0], 2)
    assert got.item() == pytest.approx(row2 / 3, abs=1e-6)


def test_queue_fifo_wraps_around_in_order():
    q = TeacherQueue(dim=2, length=4)
    assert len(q) == 0 and q.get()[0].shape == (0, 2)
    emb = lambda *v: torch.tensor([[float(x), 0.0] for x in v])  # noqa: E731
    q.push(emb(1, 2, 3), torch.tensor([1, 2, 3]))
    assert q.get()[1].tolist() == [1, 2, 3] and len(q) == 3
    q.push(emb(4, 5), torch.tensor([4, 5]))  # 5 overwrites the oldest (1)
    e, ids = q.get()
    assert ids.tolist() == [2, 3, 4, 5] and e[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0] and int(q.ptr) == 1
    q.push(emb(6, 7, 8, 9, 10), torch.tensor([6, 7, 8, 9, 10]))  # longer than the queue: its first 4 kept
    assert q.get()[1].tolist() == [6, 7, 8, 9]
    with pytest.raises(DistillInputError, match=">= 0"):
        q.push(emb(1), torch.tensor([-1]))
    with pytest.raises(DistillInputError, match=r"\(n, 2\)"):
        q.push(torch.zeros(1, 3), torch.tensor([1]))


def test_queue_state_dict_round_trip_resumes_the_same_queue():
    q = TeacherQueue(dim=3, length=5)
    g = torch.Generator().manual_seed(0)
    q.push(torch.randn(4, 3, generator=g), torch.tensor([0, 1, 2, 3]))
    q.push(torch.randn(3, 3, generator=g), torch.tensor([4, 5, 6]))
    sd = q.state_dict()
    assert set(sd) == {"embeddings", "image_ids", "ptr"}
    r = TeacherQueue(dim=3, length=5)
    r.load_state_dict(sd)
    for a, b in zip(q.get(), r.get()):
        assert torch.equal(a, b)
    x = torch.randn(2, 3, generator=g)
    q.push(x, torch.tensor([7, 8]))
    r.push(x, torch.tensor([7, 8]))
    assert torch.equal(q.get()[0], r.get()[0]) and q.get()[1].tolist() == [3, 4, 5, 6, 7, 8][1:]
