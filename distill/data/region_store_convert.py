"""Format-1 region stores (torch.save shards) → format 2, shard by shard and resumable."""

from __future__ import annotations

import os

from ..utils.errors import DistillInputError
from .region_store import RegionStoreWriter
from .region_store_v1 import RegionStoreV1, ShardRecord

__all__ = ["convert_v1"]


def convert_v1(
    src: str | os.PathLike, dst: str | os.PathLike, dtype: str = "int8", progress: bool = True
) -> dict:
    """A finished format-1 store → a format-2 store at `dst` with the same chunks; resumable (shards already
    converted are skipped). Returns the new index."""
    from ..utils.progress import job_progress

    old = RegionStoreV1(src)
    meta = {
        k: v
        for k, v in old.meta.items()
        if k not in ("format", "chunk_size", "num_images", "image_ids_sha256")
    }
    ids = [int(i) for i in old.index["images"]] + [int(s["image_id"]) for s in old.index["skipped_images"]]
    writer = RegionStoreWriter(dst, meta, ids, old.meta["chunk_size"], dtype=dtype)
    if (
        writer.meta["image_ids_sha256"] != old.meta["image_ids_sha256"]
        or len(writer.chunks) != old.index["num_shards"]
    ):
        raise DistillInputError(
            "the store's index does not account for all its images; it cannot be converted", src
        )
    for k in job_progress(writer.pending(), progress, desc="convert", unit="shard"):
        s = old._load_shard(k)
        offsets = s["offsets"].tolist()
        rec = ShardRecord(
            image_ids=s["image_ids"].tolist(),
            skipped_images=list(s["skipped_images"]),
            skipped_boxes=int(s["skipped_boxes"]),
        )
        for a, b in zip(offsets[:-1], offsets[1:]):
            rec.boxes.append(s["boxes"][a:b])
            rec.embeddings.append(s["embeddings"][a:b].float())
        writer.write_shard(k, rec)
    return writer.finalize()
