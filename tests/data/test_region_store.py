import json
import shutil

import pytest
import torch

from distill.data.region_store import (
    DTYPES,
    FORMAT,
    RegionEmbeddingStore,
    RegionStoreWriter,
    ShardRecord,
    dequantize_rows,
    quantize_rows,
    teacher_embeddings,
)
from distill.data.region_store_convert import convert_v1
from distill.data.region_store_v1 import RegionStoreWriterV1
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


def _unit_rows(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g) * 5  # rows of any scale
    x[0] = 0
    x[1, :] = 0
    x[1, 3] = -2.0  # one-hot: the max is exact
    x[2] = torch.randn(d, generator=g) ** 3  # heavy tails
    return x


def test_int8_rows_keep_cosine_and_halve_the_bytes(tmp_path):
    x = _unit_rows(500, 512)
    q, scale = quantize_rows(x)
    assert q.dtype == torch.int8 and scale.shape == (500,) and q.abs().max() <= 127
    y = dequantize_rows(q, scale)
    assert torch.equal(y[0], x[0])
    cos = torch.nn.functional.cosine_similarity(y[1:], x[1:], dim=1)
    assert cos.min() >= 0.999, cos.min()

    sizes = {}
    for dtype in DTYPES:
        meta = {**META, "dim": 512}
        w = RegionStoreWriter(tmp_path / dtype, meta, list(range(50)), chunk_size=25, dtype=dtype)
        for k, ids in enumerate(w.chunks):
            rec = ShardRecord(image_ids=list(ids))
            for i in ids:
                rec.boxes.append(torch.rand(10, 4) * 100)
                rec.embeddings.append(torch.nn.functional.normalize(x[i * 10 : (i + 1) * 10], dim=1))
            w.write_shard(k, rec)
        w.finalize()
        sizes[dtype] = sum(p.stat().st_size for p in (tmp_path / dtype / "shards").iterdir())
        store = RegionEmbeddingStore(tmp_path / dtype)
        assert store.dtype == dtype
        emb = torch.cat([store[i][1] for i in range(50)]).float()
        ref = torch.nn.functional.normalize(x, dim=1)
        cos = torch.nn.functional.cosine_similarity(emb[1:], ref[1:], dim=1)
        assert cos.min() >= 0.999, (dtype, cos.min())
    assert sizes["int8"] <= 0.55 * sizes["float16"], sizes


def test_reads_slice_the_map_and_limit(tmp_path):
    w = RegionStoreWriter(tmp_path / "s", META, [4, 8, 9], chunk_size=2)
    for k, ids in enumerate(w.chunks):
        rec = _record(ids)
        rec.skipped_images = [{"image_id": 99, "reason": "x"}] if k else []
        w.write_shard(k, rec)
    index = w.finalize()
    assert index["skipped_images"] == [{"image_id": 99, "reason": "x"}]
    assert (tmp_path / "s" / "index.safetensors").is_file()
    store = RegionEmbeddingStore(tmp_path / "s")
    b, e = store.get(8, limit=1)
    assert b.shape == (1, 4) and torch.equal(b[0], torch.arange(4.0) + 8) and e.shape == (1, 4)
    assert store.get(8)[0].shape == (2, 4) and store.get(8, limit=0)[0].shape == (0, 4)
    assert store.image_ids() == [4, 8, 9] and len(store) == 3 and 5 not in store
    # what the mappers read: int8 rows and their scales, dequantised later in one op for the batch
    rb, q, scales = store.get_rows(8, limit=1)
    assert torch.equal(rb, b) and q.dtype == torch.int8 and scales.shape == (1,)
    assert torch.equal(teacher_embeddings(q, scales), e)
    _, q0, s0 = store.empty_rows()
    assert q0.dtype == torch.int8 and q0.shape == (0, 4) and s0.shape == (0,)


def test_shards_reopened_after_eviction_read_the_same_rows(tmp_path):
    ids = list(range(1, 9))
    w = RegionStoreWriter(tmp_path / "s", META, ids, chunk_size=2)
    for k, chunk in enumerate(w.chunks):
        w.write_shard(k, _record(chunk))
    w.finalize()
    fresh = {i: RegionEmbeddingStore(tmp_path / "s").get(i) for i in ids}
    store = RegionEmbeddingStore(tmp_path / "s", cache_shards=1)  # every read below evicts a map
    for i in ids + ids[::-1] + ids:
        b, e = store.get(i)
        assert torch.equal(b, fresh[i][0]) and torch.equal(e, fresh[i][1]), i
    assert len(store._shards) == 1 and sorted(store._layouts) == [0, 1, 2, 3]
    (tmp_path / "s" / "shards" / "shard-000002.safetensors").write_bytes(b"\0" * 4)
    with pytest.raises(DistillInputError, match="not a readable safetensors file"):
        RegionEmbeddingStore(tmp_path / "s").get(5)


def test_provenance_is_checked(tmp_path):
    for name, arch in (("a", "x"), ("b", "y")):
        w = RegionStoreWriter(tmp_path / name, {**META, "teacher": {"arch": arch}}, [1, 2], chunk_size=1)
        for k, ids in enumerate(w.chunks):
            w.write_shard(k, _record(ids))
    shutil.copy(tmp_path / "b" / "shards" / "shard-000001.safetensors", tmp_path / "a" / "shards")
    with pytest.raises(DistillInputError, match="does not belong"):
        RegionStoreWriter(tmp_path / "a", META, [1, 2], chunk_size=1).finalize()
    with pytest.raises(DistillInputError, match="dtype"):
        RegionStoreWriter(
            tmp_path / "b", {**META, "teacher": {"arch": "y"}}, [1, 2], chunk_size=1, dtype="float16"
        )
    RegionStoreWriter(tmp_path / "b", {**META, "teacher": {"arch": "y"}}, [1, 2], chunk_size=1).finalize()
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    (tmp_path / "b" / "meta.json").write_text(json.dumps({**meta, "dim": 4, "scales": [1.0]}))
    with pytest.raises(DistillInputError, match="does not match"):
        RegionEmbeddingStore(tmp_path / "b")


def test_format_1_stores_open_read_only(tmp_path):
    w = RegionStoreWriterV1(tmp_path / "v1", META, [3, 5], chunk_size=1)
    for k, ids in enumerate(w.chunks):
        w.write_shard(k, _record(ids))
    w.finalize()
    store = RegionEmbeddingStore(tmp_path / "v1", expected_dim=4)
    assert store.format == "distill.region_store/1" and store.image_ids() == [3, 5]
    assert torch.equal(store[5][0], _record([5]).boxes[0]) and store.get(5, limit=1)[1].shape == (1, 4)
    with pytest.raises(DistillInputError, match="convert it"):
        RegionStoreWriter(tmp_path / "v1", META, [3, 5], chunk_size=1)


def test_convert_format_1_resumes_to_the_same_bytes(tmp_path):
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    ids = [3, 5, 6, 9, 12]
    w = RegionStoreWriterV1(tmp_path / "v1", META, ids, chunk_size=2)
    for k, chunk in enumerate(w.chunks):
        rec = _record([i for i in chunk if i != 6])
        rec.skipped_images = [{"image_id": 6, "reason": "cannot decode image"}] if 6 in chunk else []
        rec.skipped_boxes = k
        w.write_shard(k, rec)
    w.finalize()
    index = convert_v1(tmp_path / "v1", tmp_path / "v2", progress=False)
    assert index["skipped_images"] == [{"image_id": 6, "reason": "cannot decode image"}]
    assert index["skipped_boxes"] == 0 + 1 + 2 and index["num_images"] == 4
    old, new = RegionEmbeddingStore(tmp_path / "v1"), RegionEmbeddingStore(tmp_path / "v2")
    assert new.format == FORMAT and new.image_ids() == old.image_ids() == [3, 5, 9, 12]
    for i in old.image_ids():
        assert torch.equal(new[i][0], old[i][0]) and torch.allclose(new[i][1], old[i][1], atol=0.1)

    def digest():
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (tmp_path / "v2").rglob("*")
            if p.is_file()
        }

    before = digest()
    (tmp_path / "v2" / "index.json").unlink()  # as if killed before the end, one shard short
    (tmp_path / "v2" / "shards" / "shard-000001.safetensors").unlink()
    tool = Path(__file__).resolve().parents[2] / "tools" / "convert_region_store.py"
    r = subprocess.run(
        [sys.executable, str(tool), str(tmp_path / "v1"), str(tmp_path / "v2"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["num_regions"] == index["num_regions"]
    assert digest() == before
    r = subprocess.run(
        [sys.executable, str(tool), str(tmp_path / "none"), str(tmp_path / "v3")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
