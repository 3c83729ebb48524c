"""BARON positional encoding (`distill.methods.baron.positional`): shapes and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from distill.methods.baron.positional import BoxPositionalEncoding, sine_box_encoding, xyxy_to_cxcywh
from distill.utils import DistillInputError


def test_sine_encoding_values_by_hand():
    pos = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    enc = sine_box_encoding(
        pos, num_feats=8, temperature=2.0
    )  # exponents floor(i / 2) - 2: -2 -2 -1 -1 0 0 1 1
    assert enc.shape == (1, 32)
    assert enc[0, :8].tolist() == [0.0, 1.0] * 4  # x = 0: sin 0, cos 0
    y = enc[0, 8:16]
    # x = 0.25: angle 0.25 * 2 pi * 2 ** e = pi / 2 * 2 ** e
    want = [f(math.pi / 2 * 2.0**e) for e, f in zip([-2, -2, -1, -1, 0, 0, 1, 1], [math.sin, math.cos] * 4)]
    assert y.tolist() == pytest.approx(want, abs=1e-6)
    assert enc[0, 8 + 4].item() == pytest.approx(1.0) and enc[0, 8 + 5].item() == pytest.approx(0.0, abs=1e-6)
    # the official default (128 features, T 1.2): slot 64 of each coordinate has exponent 0
    full = sine_box_encoding(pos)
    assert full.shape == (1, 512)
    assert full[0, 128 + 64].item() == pytest.approx(1.0)  # sin(0.25 * 2 pi)
    assert full[0, 128 + 66].item() == pytest.approx(math.sin(math.pi / 2 * 1.2), abs=1e-6)


def test_box_encoding_module_shapes_and_centre_form():
    xyxy = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.25, 0.5, 0.75, 1.0]])
    assert xyxy_to_cxcywh(xyxy).tolist() == [[0.25, 0.5, 0.5, 1.0], [0.5, 0.75, 0.5, 0.5]]
    torch.manual_seed(0)
    m = BoxPositionalEncoding(num_words=6, word_dim=16)
    out = m(xyxy)
    assert out.shape == (2, 6, 16)
    ref = m.pos_proj(sine_box_encoding(xyxy_to_cxcywh(xyxy))).view(2, 6, 16)
    assert torch.allclose(out, ref)
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(DistillInputError, match=r"\(N, 4\)"):
        sine_box_encoding(torch.zeros(2, 3))
