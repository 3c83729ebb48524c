"""BARON's teacher side: pseudo-word sequences through the text tower (bag embeddings, word tokens) and one trunk
forward for a crop's embedding and dense map."""

import pytest
import torch
import torch.nn.functional as F

from distill.teacher.text_tower import (
    context_length,
    encode_with_vectors,
    encode_word_sequences,
    special_ids,
)
from distill.utils import DistillInputError


@pytest.fixture(scope="module")
def vit():
    from distill.teacher import create_teacher

    return create_teacher("distill-tiny-vit", "none")


@pytest.fixture(scope="module")
def rn():
    from distill.teacher import create_teacher

    return create_teacher("distill-tiny-rn", "none")


def _sequence(model, words: torch.Tensor, sot: int, eot: int) -> torch.Tensor:
    """(k, W) words → (k + 2, W) [emb(sot), words, emb(eot)] plus positions, written out by hand."""
    emb = model.token_embedding(torch.tensor([sot, eot]))
    x = torch.cat([emb[:1], words, emb[1:]])
    return x + model.positional_embedding[: x.shape[0]]


def _blocks(model, x: torch.Tensor, blocks) -> torch.Tensor:
    """(L, W) through `blocks` with the causal mask, batch of one."""
    n = x.shape[0]
    y = x[None] if model.transformer.batch_first else x[:, None]
    for blk in blocks:
        y = blk(y, attn_mask=model.attn_mask[:n, :n])
    return y[0] if model.transformer.batch_first else y[:, 0]


def test_special_ids_are_the_clip_bpe_start_and_end(vit):
    assert special_ids(vit.tokenizer) == (49406, 49407)


def test_real_words_give_the_prompts_text_features_and_padding_is_ignored(vit):
    sot, eot = special_ids(vit.tokenizer)
    model = vit.model
    tokens = vit.tokenizer(["a striped heart", "a small photo of a dotted star"])
    lengths = tokens.argmax(-1) - 1  # words between the start and end tokens
    assert lengths.tolist() == [3, 7]
    m = int(lengths.max())
    words = model.token_embedding(tokens[:, 1 : m + 1]).detach().clone()
    words[0, 3:] = torch.randn(m - 3, words.shape[-1]) * 5  # junk in the padding: must not be read
    words.requires_grad_(True)
    out = encode_word_sequences(model, words, lengths, sot, eot)
    assert out.shape == (2, vit.dim)
    torch.testing.assert_close(out, vit._encode_tokens(tokens), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert words.grad[0, :3].abs().sum() > 0 and words.grad[1].abs().sum() > 0
    assert words.grad[0, 3:].abs().sum() == 0


def test_word_tokens_are_the_last_blocks_value_path_with_the_end_residual(vit):
    sot, eot = special_ids(vit.tokenizer)
    model = vit.model
    torch.manual_seed(1)
    width = model.positional_embedding.shape[1]
    words = torch.randn(2, 4, width) * 0.05
    lengths = torch.tensor([4, 2])
    out, tok = encode_word_sequences(model, words, lengths, sot, eot, return_tokens=True)
    assert out.shape == (2, vit.dim) and tok.shape == (2, 4, vit.dim)

    # row 1 (two words) by hand: ovdet's ResidualAttentionBlock.forward(return_tokens=True)
    with torch.no_grad():
        blocks = model.transformer.resblocks
        x = _blocks(model, _sequence(model, words[1, :2], sot, eot), blocks[:-1])  # (4, W)
        last = blocks[-1]
        wv, bv = last.attn.in_proj_weight[2 * width :], last.attn.in_proj_bias[2 * width :]
        v = last.ln_1(x) @ wv.T + bv
        t = x[3] + last.attn.out_proj(v)  # the end token's residual
        t = t + last.mlp(last.ln_2(t))
        want_tok = model.ln_final(t) @ model.text_projection
        want_out = (
            model.ln_final(last(x[None], attn_mask=model.attn_mask[:4, :4])[0])[3] @ model.text_projection
        )
    torch.testing.assert_close(tok[1, :2], want_tok[1:3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], want_out, atol=1e-5, rtol=1e-5)
    assert tok[1, 2:].abs().sum() == 0  # padding zeroed
    # the words' own values matter: the tokens are not all the end token's
    assert (tok[0, 0] - tok[0, 1]).abs().max() > 1e-4
    # gradients reach the words through the tokens too
    w = words.clone().requires_grad_(True)
    encode_word_sequences(model, w, lengths, sot, eot, return_tokens=True)[1].sum().backward()
    assert w.grad[0].abs().sum() > 0


def test_too_many_words_or_bad_lengths_are_one_line(vit):
    sot, eot = special_ids(vit.tokenizer)
    n = context_length(vit.model)
    width = vit.model.positional_embedding.shape[1]
    encode_word_sequences(vit.model, torch.zeros(1, n - 2, width), torch.tensor([n - 2]), sot, eot)  # fits
    with pytest.raises(DistillInputError, match=f"{n - 1} pseudo-words need {n + 1} positions.*reads {n}"):
        encode_word_sequences(vit.model, torch.zeros(1, n - 1, width), torch.tensor([1]), sot, eot)
    with pytest.raises(DistillInputError, match="lengths must be in 1..3"):
        encode_word_sequences(vit.model, torch.zeros(2, 3, width), torch.tensor([0, 3]), sot, eot)


def test_encode_with_vectors_on_a_shorter_sequence_is_the_full_one(vit):
    model = vit.model
    tokens = vit.tokenizer(["a striped heart", "a dotted star on a red square"])
    assert tokens.shape[1] == context_length(model)
    vectors = torch.randn(2, 3, model.positional_embedding.shape[1]) * 0.05
    full = encode_with_vectors(model, tokens, vectors)
    n = int(tokens.argmax(-1).max()) + 1
    cut = encode_with_vectors(model, tokens[:, :n], vectors)
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(DistillInputError, match="do not fit the text tower's context"):
        encode_with_vectors(model, torch.cat([tokens, tokens[:, :1]], 1), vectors)


@pytest.mark.parametrize("which", ["vit", "rn"])
def test_one_trunk_forward_gives_encode_image_and_the_dense_map(which, request):
    t = request.getfixturevalue(which)
    torch.manual_seed(2)
    images = torch.rand(3, 3, t.input_size, t.input_size)
    mean = torch.tensor(t.mean).view(1, 3, 1, 1)
    std = torch.tensor(t.std).view(1, 3, 1, 1)
    crops = (images - mean) / std
    emb, dense = t.encode_image_and_dense(crops)
    grid = t.input_size // (8 if which == "vit" else 32)
    assert emb.shape == (3, t.dim) and dense.shape == (3, t.dim, grid, grid)
    assert emb.dtype == dense.dtype == torch.float32
    torch.testing.assert_close(emb, t.encode_image(crops), atol=1e-5, rtol=1e-5)
    visual = t.model.visual
    with torch.no_grad():
        ref = t._dense_vit(visual, crops) if which == "vit" else t._dense_resnet(visual, crops)
    torch.testing.assert_close(dense, F.normalize(ref, dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense, t.encode_pixels(images), atol=1e-4, rtol=1e-4)
    assert (dense[0] - dense[1]).abs().max() > 1e-3  # different crops, different maps
    with pytest.raises(DistillInputError, match="crops must be"):
        t.encode_image_and_dense(crops[:, :, :-8, :-8])


def test_barons_vit_tokens_add_the_class_token_residual_and_the_mlp(vit):
    torch.manual_seed(3)
    crops = torch.randn(2, 3, vit.input_size, vit.input_size)
    _, plain = vit.encode_image_and_dense(crops)
    _, tokens = vit.encode_image_and_dense(crops, cls_residual=True)
    visual = vit.model.visual
    x, h, w = vit._vit_trunk(visual, crops)  # the last block's input, written out by hand from here
    last = visual.transformer.resblocks[-1]
    width = x.shape[-1]
    v = last.attn.out_proj(
        F.linear(last.ln_1(x), last.attn.in_proj_weight[2 * width :], last.attn.in_proj_bias[2 * width :])
    )
    t = x[:, :1] + v
    t = t + last.mlp(last.ln_2(t))
    want = F.normalize(visual.ln_post(t[:, 1:]) @ visual.proj, dim=-1).transpose(1, 2).reshape(2, -1, h, w)
    torch.testing.assert_close(tokens, want, atol=1e-5, rtol=1e-4)
    assert (tokens - plain).abs().max() > 1e-3  # not the MaskCLIP map
