"""A CLIP ViT's dense region features, as CLIPSelf and F-ViT compute them: the blocks as usual, the last one without
its query-key attention (the value path, the MLP and both residuals), then ln_post and the projection per patch
token. Used by the frozen-tower backbone (`distill.modeling.clip_backbone`) and by CLIPSelf's student
(`distill.teacher.clipself`), which trains through it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def patch_size(visual) -> int:
    p = visual.patch_size
    return int(p[0] if isinstance(p, (tuple, list)) else p)


def vit_pos_embed(visual, h: int, w: int) -> torch.Tensor:
    """(1 + h*w, width) positional embedding for an (h, w) token grid: the trained grid resized bicubically."""
    pos = visual.positional_embedding
    g = int(round((pos.shape[0] - 1) ** 0.5))
    if (h, w) == (g, g):
        return pos
    grid = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1].float(), grid.permute(0, 2, 3, 1).reshape(h * w, -1)], 0).to(pos.dtype)


def block_without_attention(block, x: torch.Tensor) -> torch.Tensor:
    """An open_clip ResidualAttentionBlock without its query-key attention: the value path, the MLP and both
    residuals (CLIPSelf's `forward_without_attn`). x: (B, L, width) batch-first."""
    attn = block.attn
    width = x.shape[-1]
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :])
    x = x + block.ls_1(attn.out_proj(v))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def vit_dense(visual, x: torch.Tensor, blocks: Sequence[int] = ()) -> tuple[list[torch.Tensor], torch.Tensor]:
    """An open_clip VisionTransformer's dense region features (CLIPSelf's, F-ViT's): the blocks run as usual but the
    last without its attention (`block_without_attention`), then ln_post and the projection per patch token.

    Args:
        visual: `model.visual`, any patch size; gradients flow where the caller lets them (CLIPSelf trains it).
        x: (B, 3, H, W) in the tower's normalisation, H and W multiples of the patch; positional embeddings are
            interpolated to the (H / patch, W / patch) grid.
        blocks: indices of blocks whose outputs to return as maps.
    Returns:
        ([(B, width, h, w) per index of `blocks`], (B, D, h, w) the dense embeddings, L2-normalised over D).
    """
    p = patch_size(visual)
    b, _, hh, ww = x.shape
    h, w = hh // p, ww // p
    t = visual.conv1(x).flatten(2).transpose(1, 2)  # (B, h*w, width)
    cls = visual.class_embedding.to(t.dtype).expand(b, 1, -1)
    t = torch.cat([cls, t], 1) + vit_pos_embed(visual, h, w).to(t.dtype)
    t = visual.ln_pre(t)
    batch_first = getattr(visual.transformer, "batch_first", True)
    resblocks = visual.transformer.resblocks
    out = []
    for i, blk in enumerate(resblocks):
        if i == len(resblocks) - 1:
            t = block_without_attention(blk, t)  # F-ViT: the last level from the attention-free block
        else:
            t = blk(t) if batch_first else blk(t.transpose(0, 1)).transpose(0, 1)
        if i in blocks:
            out.append(t[:, 1:].transpose(1, 2).reshape(b, -1, h, w))
    dense = visual.ln_post(t[:, 1:])
    if visual.proj is not None:
        dense = dense @ visual.proj
    return out, F.normalize(dense.float(), dim=-1).transpose(1, 2).reshape(b, -1, h, w)
