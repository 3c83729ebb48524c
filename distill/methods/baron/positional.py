"""BARON's positional encoding of a region within its bag, added to the region's K pseudo-words.

Followed (wusize/ovdet):
- `ovdet/methods/baron/utils.py:SinePositionalEncoding.forward`: each of the 4 coordinates x (cx, cy, w, h of
  the box normalised to the bag's spanning box) becomes `num_feats` features x * scale * T ** (floor(i / 2) -
  num_feats // 4), sine on even i, cosine on odd i (T 1.2, scale 2 pi, num_feats 128; note: MULTIPLIED by
  T ** ..., not divided as in DETR), flattened coordinate-major to (N, 4 * num_feats), then projected by
  Linear(4 * num_feats, D) → LayerNorm(D) → Linear(D, K * D) to (N, K, D).
- `ovdet/methods/baron/baron_kd.py:BaronKD.get_losses`: positions = `bbox_xyxy_to_cxcywh(normed_boxes)`,
  `pseudo_words + positional_embed(positions)`, before the word dropout.
- `ovdet/methods/baron/baron_base.py:BaronBase.__init__`: `SinePositionalEncoding(num_feats=128,
  num_words=num_words, word_dims=word_dim)`.
No deliberate difference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...utils.errors import DistillInputError

__all__ = ["BoxPositionalEncoding", "sine_box_encoding", "xyxy_to_cxcywh"]


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) XYXY → (N, 4) centre x, centre y, width, height."""
    return torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)


def sine_box_encoding(
    positions: torch.Tensor, num_feats: int = 128, temperature: float = 1.2, scale: float = 2 * math.pi
) -> torch.Tensor:
    """(N, 4) cx, cy, w, h in the bag's [0, 1] frame → (N, 4 * num_feats) float32 sine / cosine features."""
    if positions.dim() != 2 or positions.shape[1] != 4:
        raise DistillInputError(f"BARON positions must be (N, 4) cx cy w h, got {tuple(positions.shape)}")
    if num_feats < 4 or num_feats % 2:
        raise DistillInputError(
            f"BARON positional encoding: num_feats must be even and >= 4, got {num_feats}"
        )
    i = torch.arange(num_feats, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (i.div(2, rounding_mode="floor") - num_feats // 4)
    pos = positions.float()[:, :, None] * scale * dim_t  # (N, 4, num_feats)
    pos = torch.stack([pos[..., 0::2].sin(), pos[..., 1::2].cos()], -1).flatten(-2)  # interleaved sin, cos
    return pos.flatten(1)


class BoxPositionalEncoding(nn.Module):
    """(N, 4) XYXY boxes normalised to their bag → (N, K, D) added to the region's K pseudo-words."""

    def __init__(
        self, num_words: int, word_dim: int, num_feats: int = 128, temperature: float = 1.2, scale=2 * math.pi
    ):
        super().__init__()
        self.num_words, self.word_dim = num_words, word_dim
        self.num_feats, self.temperature, self.scale = num_feats, temperature, scale
        self.pos_proj = nn.Sequential(
            nn.Linear(4 * num_feats, word_dim),
            nn.LayerNorm(word_dim),
            nn.Linear(word_dim, num_words * word_dim),
        )

    def forward(self, normed_boxes: torch.Tensor) -> torch.Tensor:
        enc = sine_box_encoding(xyxy_to_cxcywh(normed_boxes), self.num_feats, self.temperature, self.scale)
        return self.pos_proj(enc.to(self.pos_proj[0].weight.dtype)).view(-1, self.num_words, self.word_dim)
