"""The teacher's text tower run over embeddings instead of token ids: learned prompts put their context vectors in
place of words, BARON puts a bag of regions' pseudo-words there. One implementation for both."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        tokens: (C, L) token ids, L <= the context length (their end-of-text token marks where the tower pools;
            shorter than the context, the tower reads the first L positions, as for a prompt cut after its
            end-of-text token); the M positions replaced hold placeholder words.
        vectors: (M, W) shared by all C, or (C, M, W), in token-embedding space (W the tower's width); gradients
            flow into them.
        start: the first position replaced (1: right after the start-of-text token).
    Returns:
        (C, D) unnormalised text features (open_clip's encode_text with the M embeddings swapped in).
    """
    from open_clip.transformer import text_global_pool

    tower = text_tower(model)
    m = vectors.shape[-2]
    n = tokens.shape[1]
    if n > tower.positional_embedding.shape[0]:
        raise DistillInputError(
            f"{n} tokens do not fit the text tower's context of {tower.positional_embedding.shape[0]}"
        )
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
    x = x + tower.positional_embedding[:n].to(cast)
    x = tower.transformer(x, attn_mask=_causal_mask(tower, n))
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


def _causal_mask(tower, n: int) -> torch.Tensor | None:
    """The tower's attention mask cut to the first n positions (the causal mask is (context, context))."""
    mask = getattr(tower, "attn_mask", None)
    return None if mask is None else mask[:n, :n]


def _project(tower, x: torch.Tensor) -> torch.Tensor:
    proj = tower.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def special_ids(tokenizer) -> tuple[int, int]:
    """(start-of-text, end-of-text) token ids as the teacher's tokenizer writes them: those of an empty prompt
    (its first token, and its largest, where the text tower pools)."""
    t = tokenizer([""])[0]
    sot, eot = int(t[0]), int(t.max())
    if sot == eot:
        raise DistillInputError(f"the tokenizer ({type(tokenizer).__name__}) writes no start-of-text token")
    return sot, eot


def encode_word_sequences(
    model,
    words: torch.Tensor,
    lengths: torch.Tensor,
    sot_id: int,
    eot_id: int,
    return_tokens: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """BARON's pseudo-text: each row's words between the start and end tokens, no prompt words (ovdet's
    `prepare_pseudo_text` + `encode_pseudo_text`).

    Row s reads [emb(sot_id), words[s, :lengths[s]], emb(eot_id), emb(0) ...], L = M + 2 positions, with the
    positional embeddings [:L] and the causal mask [:L, :L]; the features are taken at its end token.

    Args:
        words: (S, M, W) right-padded pseudo-words in token-embedding space (W the tower's width); gradients flow
            into them (the padding gets none: it is not read).
        lengths: (S,) int, 1..M, each row's number of real words.
        sot_id, eot_id: the tokenizer's start / end-of-text ids (`special_ids(teacher.tokenizer)`).
        return_tokens: also the per-word tokens (ovdet's `return_word_tokens`): the last block run on each position
            with the value path only and the end token's residual, ``t = x[eot] + ls_1(out_proj(v(ln_1(x))));
            t = t + ls_2(mlp(ln_2(t)))``, then ln_final and the projection.
    Returns:
        (S, D) unnormalised features; with return_tokens also (S, M, D) unnormalised word tokens (zero at padding).
    """
    tower = text_tower(model)
    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
    if pool not in ("argmax", "eos"):
        raise DistillInputError(f"pseudo-text is read at its end token; this text tower pools by {pool!r}")
    if words.ndim != 3 or lengths.shape != words.shape[:1]:
        raise DistillInputError(
            f"pseudo-words must be (S, M, W) with lengths (S,), got {tuple(words.shape)} and {tuple(lengths.shape)}"
        )
    s, m, width = words.shape
    n = m + 2
    ctx = tower.positional_embedding.shape[0]
    if n > ctx:
        raise DistillInputError(
            f"{m} pseudo-words need {n} positions with the start and end tokens; the text tower reads {ctx}"
        )
    if width != tower.positional_embedding.shape[1]:
        raise DistillInputError(
            f"pseudo-words of width {width}, the text tower's is {tower.positional_embedding.shape[1]}"
        )
    lengths = lengths.to(words.device).long()
    if s and (int(lengths.min()) < 1 or int(lengths.max()) > m):
        raise DistillInputError(
            f"pseudo-word lengths must be in 1..{m}, got {int(lengths.min())}..{int(lengths.max())}"
        )
    cast = tower.transformer.get_cast_dtype() if hasattr(tower.transformer, "get_cast_dtype") else words.dtype
    special = tower.token_embedding(torch.tensor([sot_id, eot_id, 0], device=words.device)).to(cast)
    sot, eot, pad = (e.view(1, 1, width) for e in special)
    pos = torch.arange(n, device=words.device).view(1, n, 1)
    end = (lengths + 1).view(s, 1, 1)  # the end token's position
    x = torch.cat([sot.expand(s, 1, -1), words.to(cast), pad.expand(s, 1, -1)], 1)
    filler = torch.where(pos == end, eot, pad)
    x = torch.where((pos >= 1) & (pos < end), x, torch.where(pos == 0, sot, filler))
    x = x + tower.positional_embedding[:n].to(cast)

    mask = _causal_mask(tower, n)
    blocks = tower.transformer.resblocks
    batch_first = getattr(tower.transformer, "batch_first", True)
    x = x if batch_first else x.transpose(0, 1)
    for blk in blocks[:-1]:
        x = blk(x, attn_mask=mask)
    last = blocks[-1]
    y = last(x, attn_mask=mask)
    y = y if batch_first else y.transpose(0, 1)
    rows = torch.arange(s, device=words.device)
    out = _project(tower, tower.ln_final(y[rows, lengths + 1]))
    if not return_tokens:
        return out

    x = x if batch_first else x.transpose(0, 1)
    attn = last.attn
    v = F.linear(last.ln_1(x[:, 1 : m + 1]), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :])
    t = x[rows, lengths + 1].unsqueeze(1) + last.ls_1(attn.out_proj(v))  # the end token's residual
    t = t + last.ls_2(last.mlp(last.ln_2(t)))
    t = _project(tower, tower.ln_final(t))
    real = torch.arange(m, device=words.device).view(1, m) < lengths.view(s, 1)
    return out, t * real.unsqueeze(-1).to(t.dtype)
