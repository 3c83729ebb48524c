import json

import numpy as np
import pytest
import torch

from distill.teacher import TEMPLATE_SETS, ClassEmbeddings, build_prompts
from distill.teacher.embeddings import sidecar_path
from distill.utils import DistillInputError


def test_vild_template_set():
    assert len(TEMPLATE_SETS["vild"]["templates"]) == 63
    p = build_prompts("Hair_drier/Blow dryer", "vild")
    assert p[0] == "There is a hair drier or blow dryer in the scene."
    assert "This is a photo of a hair drier or blow dryer." in p
    assert "This is an embroidered hair drier or blow dryer." in p
    assert all(not x.startswith("a ") and not x.startswith("the ") for x in p)
    assert build_prompts("apple", "simple") == ["a photo of a apple."]
    assert build_prompts("cat", "detic") == ["a cat"]
    with pytest.raises(DistillInputError, match="unknown template set"):
        build_prompts("cat", "nope")


def _emb(c=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=1)


def test_class_embeddings_roundtrip(tmp_path):
    names = ["cat", "dog", "hair drier"]
    e = ClassEmbeddings(_emb(), names, {"teacher": {"arch": "x"}, "templates": "vild"})
    path = e.save(tmp_path / "v.npy")
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["dim"] == 8 and meta["class_names"] == names and meta["templates"] == "vild"
    back = ClassEmbeddings.load(path, expected_dim=8, expected_names=names)
    assert torch.equal(back.embeddings, e.embeddings) and back.provenance["teacher"] == {"arch": "x"}


def test_class_embeddings_checks(tmp_path):
    path = ClassEmbeddings(_emb(), ["a", "b", "c"]).save(tmp_path / "v.npy")
    with pytest.raises(DistillInputError, match="dim 8 does not match the model's 16"):
        ClassEmbeddings.load(path, expected_dim=16)
    with pytest.raises(DistillInputError, match="class list differs"):
        ClassEmbeddings.load(path, expected_names=["a", "c", "b"])
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DistillInputError, match="sha256"):
        ClassEmbeddings.load(path)
    np.save(tmp_path / "bare.npy", _emb().numpy())
    with pytest.raises(DistillInputError, match="sidecar not found"):
        ClassEmbeddings.load(tmp_path / "bare.npy")
    with pytest.raises(DistillInputError, match="empty vocabulary"):
        ClassEmbeddings(torch.zeros(0, 8), [])
