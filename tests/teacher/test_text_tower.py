"""The text tower over embeddings (learned prompts' context, BARON's pseudo-words): one implementation."""

import pytest
import torch

from distill.teacher.text_tower import context_length, encode_with_vectors
from distill.utils import DistillInputError


@pytest.fixture(scope="module")
def teacher():
    from distill.teacher import create_teacher

    return create_teacher("distill-tiny-vit", "none")


def test_the_words_own_embeddings_give_the_plain_text_features(teacher):
    tokens = teacher.tokenizer(["a striped heart", "a dotted star"])
    tower = teacher.model
    words = tower.token_embedding(tokens)[:, 1:4]  # (2, 3, W): the three words after the start token
    got = teacher.encode_text_with_vectors(tokens, words, start=1)
    want = tower.encode_text(tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # other vectors change the features, and their gradient flows
    other = torch.randn_like(words, requires_grad=True)
    out = teacher.encode_text_with_vectors(tokens, other, start=1)
    assert (out - want).abs().max() > 1e-3
    out.sum().backward()
    assert other.grad is not None and other.grad.abs().sum() > 0


def test_vectors_that_do_not_fit_the_context_are_one_line(teacher):
    n = context_length(teacher.model)
    tokens = teacher.tokenizer(["x"])
    with pytest.raises(DistillInputError, match="do not fit the text tower"):
        encode_with_vectors(teacher.model, tokens, torch.zeros(n - 1, tokens.new_zeros(1).numel() or 1))
    with pytest.raises(DistillInputError, match="does not take embeddings"):
        encode_with_vectors(torch.nn.Linear(2, 2), tokens, torch.zeros(2, 4))
