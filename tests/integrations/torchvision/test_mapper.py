import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from distill.data import synthetic_dataset
from distill.data.region_store import RegionEmbeddingStore, RegionStoreWriter, ShardRecord
from distill.integrations.torchvision.mapper import (
    DatasetMapper,
    MapperConfig,
    decode_segmentation,
    resized_hw,
)
from distill.methods import METHOD_TARGETS, RegionStoreSource
from distill.utils import DistillInputError


def test_resized_hw():
    assert resized_hw(480, 640, 800, 1333) == (800, 1067)
    assert resized_hw(100, 1000, 800, 1333) == (133, 1333)


def test_decode_polygon_and_rle():
    poly = [[1, 1, 6, 1, 6, 6, 1, 6]]
    m = decode_segmentation(poly, 8, 8)
    assert m.shape == (8, 8) and m.sum() > 0
    rle = mask_utils.encode(np.asfortranarray(m))
    assert np.array_equal(
        decode_segmentation({"size": rle["size"], "counts": rle["counts"].decode()}, 8, 8), m
    )
    with pytest.raises(DistillInputError):
        decode_segmentation(5, 8, 8)


def _store(tmp_path, dicts, dim=4):
    w = RegionStoreWriter(tmp_path / "store", {"dim": dim}, [d["image_id"] for d in dicts], chunk_size=100)
    rec = ShardRecord()
    for d in dicts:
        rec.image_ids.append(d["image_id"])
        rec.boxes.append(torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 200.0, 5.0]]))
        rec.embeddings.append(torch.ones(2, dim))
    w.write_shard(0, rec)
    w.finalize()
    return RegionEmbeddingStore(tmp_path / "store")


def test_mapper_flip_resize_keeps_boxes_masks_and_proposals_aligned(synthetic_root, tmp_path):
    dicts, _ = synthetic_dataset(synthetic_root, "val")
    d = dicts[0]
    store = _store(tmp_path, dicts)
    cfg = MapperConfig(min_sizes=(192,), max_size=1000, is_train=True, flip_prob=1.0)
    out = DatasetMapper(cfg, RegionStoreSource(store.root), seed=0)(d)
    assert out["image"].shape == (3, 192, 192) and out["flipped"] and out["scale"] == (2.0, 2.0)
    b = out["boxes"]
    for box, m in zip(b, out["masks"]):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert abs(xs.min().item() - box[0].item()) <= 2.5 and abs(xs.max().item() + 1 - box[2].item()) <= 2.5
        assert abs(ys.min().item() - box[1].item()) <= 2.5 and abs(ys.max().item() + 1 - box[3].item()) <= 2.5
    # proposal (10, 20, 30, 40) in a 96-px image → x2, flipped in a 192-px image; the wide one is clipped
    t = out[METHOD_TARGETS]
    assert t.boxes[0].tolist() == [192 - 60.0, 40.0, 192 - 20.0, 80.0]
    assert t.boxes[1].tolist() == [0.0, 0.0, 192.0, 10.0]
    assert t.embeddings.shape == (2, 4) and t.scales.shape == (2,)
    assert torch.equal(t.teacher_embeddings(), store[d["image_id"]][1])
    test = DatasetMapper(MapperConfig(min_sizes=(96,), is_train=False), RegionStoreSource(store.root))(d)
    assert not test["flipped"] and METHOD_TARGETS not in test
    assert torch.allclose(
        test["boxes"][0],
        torch.tensor(
            d["annotations"][0]["bbox"][:2]
            + [
                d["annotations"][0]["bbox"][0] + d["annotations"][0]["bbox"][2],
                d["annotations"][0]["bbox"][1] + d["annotations"][0]["bbox"][3],
            ]
        ),
    )


def test_mapper_size_mismatch_is_clear(synthetic_root):
    dicts, _ = synthetic_dataset(synthetic_root, "val")
    d = dict(dicts[0], height=50)
    with pytest.raises(DistillInputError, match="annotations say"):
        DatasetMapper(MapperConfig(min_sizes=(96,)))(d)
