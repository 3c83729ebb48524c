import pytest
import torch
import torch.nn.functional as F

from distill.config import load_config
from distill.teacher import ClassEmbeddings
from distill.teacher.checks import check_region_store, load_class_embeddings
from distill.utils import DistillInputError
from tests.conftest import REPO

CONFIG = str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml")


def _emb(tmp_path, name, arch, pretrained, dim=8):
    e = F.normalize(torch.randn(3, dim), dim=1)
    return ClassEmbeddings(e, ["a", "b", "c"], {"teacher": {"arch": arch, "pretrained": pretrained}}).save(
        tmp_path / name
    )


def test_class_embeddings_of_another_teacher_are_refused(tmp_path):
    cfg = load_config(CONFIG)  # teacher distill-tiny-rn / synthetic-tiny-teacher
    good = _emb(tmp_path, "good.npy", "distill-tiny-rn", "synthetic-tiny-teacher")
    assert len(load_class_embeddings(str(good), cfg, "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS")) == 3
    bad = _emb(tmp_path, "bad.npy", "RN50", "openai")
    with pytest.raises(DistillInputError, match="made by teacher RN50/openai.*distill-tiny-rn"):
        load_class_embeddings(str(bad), cfg, "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS")
    other_weights = _emb(tmp_path, "ow.npy", "distill-tiny-rn", "laion")
    with pytest.raises(DistillInputError, match="made by teacher"):
        load_class_embeddings(str(other_weights), cfg, "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS")
    with pytest.raises(DistillInputError, match="TRAIN_CLASS_EMBEDDINGS is not set"):
        load_class_embeddings("", cfg, "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS")


def _store(root, dim, image_ids):
    from distill.data.region_store import RegionStoreWriter, ShardRecord

    w = RegionStoreWriter(
        root, {"dim": dim, "teacher": {"arch": "distill-tiny-rn"}}, image_ids, chunk_size=10
    )
    for k in w.pending():
        ids = sorted(w.chunks[k])
        w.write_shard(
            k,
            ShardRecord(
                ids,
                [torch.zeros(1, 4) for _ in ids],
                [F.normalize(torch.ones(1, dim), dim=1) for _ in ids],
                [],
                0,
            ),
        )
    w.finalize()
    return str(root)


def test_region_store_dimension_and_coverage(tmp_path):
    vocab = ClassEmbeddings(F.normalize(torch.randn(3, 64), dim=1), ["a", "b", "c"])
    store = _store(tmp_path / "s", 32, [1, 2, 3])
    with pytest.raises(DistillInputError, match="TRAIN_CLASS_EMBEDDINGS holds 64-dim.*store .* holds 32-dim"):
        check_region_store(store, vocab, "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS", [1, 2, 3])
    vocab = ClassEmbeddings(F.normalize(torch.randn(3, 32), dim=1), ["a", "b", "c"])
    with pytest.raises(DistillInputError, match="covers none of the 2 training images"):
        check_region_store(store, vocab, "K", [10, 11])
    assert len(check_region_store(store, vocab, "K", [1, 2, 3, 4])) == 3
