import pytest
import torch

from distill.data.region_store import RegionEmbeddingStore, RegionStoreWriter, ShardRecord
from distill.utils import DistillInputError

META = {"teacher": {"arch": "x"}, "dim": 4, "scales": [1.0, 1.5], "geometry": "center"}


def _record(ids):
    rec = ShardRecord()
    for i in ids:
        n = i % 3
        rec.image_ids.append(i)
        rec.boxes.append(torch.arange(4 * n, dtype=torch.float32).view(n, 4) + i)
        rec.embeddings.append(torch.full((n, 4), float(i)))
    return rec


def test_write_resume_and_read(tmp_path):
    ids = [7, 3, 11, 5, 2]
    w = RegionStoreWriter(tmp_path / "s", META, ids, chunk_size=2)
    assert w.chunks == [[2, 3], [5, 7], [11]]
    assert w.pending(0, 2) == [0, 2] and w.pending(1, 2) == [1]
    w.write_shard(0, _record([2, 3]))
    with pytest.raises(DistillInputError, match="incomplete"):
        RegionEmbeddingStore(tmp_path / "s")
    with pytest.raises(DistillInputError, match="not written yet"):
        w.finalize()
    w2 = RegionStoreWriter(tmp_path / "s", META, ids, chunk_size=2)  # a restart
    assert w2.pending() == [1, 2]
    for k in w2.pending():
        w2.write_shard(k, _record(w2.chunks[k]))
    index = w2.finalize()
    assert index["num_images"] == 5 and index["num_regions"] == sum(i % 3 for i in ids)
    store = RegionEmbeddingStore(tmp_path / "s", expected_dim=4)
    assert store.image_ids() == sorted(ids) and 11 in store and 4 not in store
    boxes, emb = store[11]
    assert boxes.shape == (2, 4) and emb.dtype == torch.float16 and torch.all(emb == 11)
    assert store[3][0].shape == (0, 4)
    with pytest.raises(KeyError):
        store[4]


def test_mismatches_are_clear(tmp_path):
    RegionStoreWriter(tmp_path / "s", META, [1, 2], chunk_size=1)
    with pytest.raises(DistillInputError, match="differs in: dim"):
        RegionStoreWriter(tmp_path / "s", {**META, "dim": 8}, [1, 2], chunk_size=1)
    with pytest.raises(DistillInputError, match="not found"):
        RegionEmbeddingStore(tmp_path / "none")
    w = RegionStoreWriter(tmp_path / "t", META, [1], chunk_size=1)
    w.write_shard(0, _record([1]))
    w.finalize()
    with pytest.raises(DistillInputError, match="4-dim embeddings, the model expects 8"):
        RegionEmbeddingStore(tmp_path / "t", expected_dim=8)
