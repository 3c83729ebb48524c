"""Vocabularies for the tools: dataset json / names file / comma list, named sets, cached text embeddings."""

import json

import pytest
import torch

from distill.teacher import ClassEmbeddings, vocabulary
from distill.utils import DistillInputError


def test_read_vocabulary_sources(tmp_path):
    js = tmp_path / "ds.json"
    js.write_text(json.dumps({"categories": [{"id": 7, "name": "moon"}, {"id": 2, "name": "star"}]}))
    assert vocabulary.read_vocabulary(str(js)) == (
        ["star", "moon"],
        {"vocabulary": str(js), "category_ids": [2, 7]},
    )
    txt = tmp_path / "names.txt"
    txt.write_text("# comment\ncat\n\ndog\n")
    assert vocabulary.read_vocabulary(str(txt))[0] == ["cat", "dog"]
    assert vocabulary.read_vocabulary(" cat, dog ,") == (["cat", "dog"], {"vocabulary": "list"})
    for bad, msg in ((str(tmp_path / "missing.json"), "not found"), (",", "empty vocabulary")):
        with pytest.raises(DistillInputError, match=msg):
            vocabulary.read_vocabulary(bad)
    js.write_text(json.dumps({"images": []}))
    with pytest.raises(DistillInputError, match="no 'categories'"):
        vocabulary.read_vocabulary(str(js))


def test_named_vocabulary():
    assert len(vocabulary.named_vocabulary("synthetic")) == 15
    assert len(vocabulary.named_vocabulary("coco")) == 65
    assert vocabulary.named_vocabulary("custom", "star, moon") == ["star", "moon"]
    with pytest.raises(DistillInputError, match="appears twice"):
        vocabulary.named_vocabulary("custom", "star,star")
    with pytest.raises(DistillInputError, match="needs --custom-vocabulary"):
        vocabulary.named_vocabulary("custom", None)


def test_vocabulary_embeddings_reuses_a_matching_file_then_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    names = ["star", "moon"]
    emb = torch.nn.functional.normalize(torch.randn(2, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    existing = ClassEmbeddings(emb, names, {"teacher": "x"}).save(tmp_path / "test.npy")
    assert (
        vocabulary.vocabulary_embeddings(
            names, "distill-tiny-rn", "synthetic-tiny-teacher", "vild", str(existing)
        ).class_names
        == names
    )
    args = (["star", "circle"], "distill-tiny-rn", "synthetic-tiny-teacher", "vild", str(existing))
    first = vocabulary.vocabulary_embeddings(*args)  # other names: the teacher encodes them
    assert first.class_names == ["star", "circle"] and len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    monkeypatch.setattr(vocabulary, "create_teacher", lambda *a: pytest.fail("the cache was not used"))
    assert torch.equal(vocabulary.vocabulary_embeddings(*args).embeddings, first.embeddings)


def test_a_missing_test_class_embeddings_file_is_an_error(tmp_path, monkeypatch):
    """A typo'd MODEL.DISTILL.TEST_CLASS_EMBEDDINGS must not quietly mean "encode with the teacher"."""
    monkeypatch.setattr(vocabulary, "create_teacher", lambda *a: pytest.fail("encoded instead of failing"))
    with pytest.raises(DistillInputError, match="TEST_CLASS_EMBEDDINGS: class embeddings file not found"):
        vocabulary.vocabulary_embeddings(
            ["star"], "distill-tiny-rn", "synthetic-tiny-teacher", "vild", str(tmp_path / "missing.npy")
        )
