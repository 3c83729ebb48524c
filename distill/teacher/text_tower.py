"""The teacher's text tower run over embeddings instead of token ids: learned prompts put their context vectors in
place of words, BARON puts a bag of regions' pseudo-words there. One implementation for both."""

from __future__ import annotations

import torch
from torch import nn

from ..utils.errors import DistillInputError


def text_tower(model):
    """The open_clip text transformer pieces (CLIP keeps them on the model, CustomTextCLIP under .text)."""
    tower = getattr(model, "text", model)
    need = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    if not all(hasattr(tower, n) for n in need):
        raise DistillInputError(
            f"the teacher's text tower ({type(tower).__name__}) does not take embeddings: an open_clip text "
            "transformer is needed"
        )
    return tower


def context_length(model) -> int:
    """How many tokens the text tower reads (its positional embeddings)."""
    return int(text_tower(model).positional_embedding.shape[0])


def encode_with_vectors(model, tokens: torch.Tensor, vectors: torch.Tensor, start: int = 1) -> torch.Tensor:
    """Text features of `tokens` with the token embeddings at positions start .. start + M - 1 replaced by vectors.

    Args:
        tokens: (C, L) token ids (their end-of-text token marks where the tower pools); the M positions replaced
            hold placeholder words.
        vectors: (M, W) shared by all C, or (C, M, W), in token-embedding space (W the tower's width); gradients
            flow into them.
        start: the first position replaced (1: right after the start-of-text token).
    Returns:
        (C, D) unnormalised text features (open_clip's encode_text with the M embeddings swapped in).
    """
    from open_clip.transformer import text_global_pool

    tower = text_tower(model)
    m = vectors.shape[-2]
    if start < 1 or start + m >= tokens.shape[1]:
        raise DistillInputError(
            f"{m} vectors from position {start} do not fit the text tower's {tokens.shape[1]} tokens "
            "(a start token before them and an end token after them are needed)"
        )
    cast = (
        tower.transformer.get_cast_dtype() if hasattr(tower.transformer, "get_cast_dtype") else vectors.dtype
    )
    x = tower.token_embedding(tokens).to(cast)
    v = vectors.to(cast).expand(tokens.shape[0], -1, -1) if vectors.ndim == 2 else vectors.to(cast)
    x = torch.cat([x[:, :start], v, x[:, start + m :]], 1)
    x = x + tower.positional_embedding.to(cast)
    x = tower.transformer(x, attn_mask=tower.attn_mask)
    x = tower.ln_final(x)
    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
    x = text_global_pool(x, tokens, pool, eos_token_id=getattr(tower, "text_eos_id", None))
    if isinstance(x, tuple):
        x = x[0]
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x


def encode_with_context(model, tokens: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """Learned prompts: tokens 1..M replaced by context vectors ctx (M, W) or (C, M, W) → (C, D) unnormalised."""
    return encode_with_vectors(model, tokens, ctx, start=1)
