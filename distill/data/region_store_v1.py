"""Region-embedding store, format 1 (torch.save shards): kept to read old stores, to convert them
(tools/convert_region_store.py) and as the baseline of benchmarks/region_store.py. New stores are format 2
(distill.data.region_store).

On disk::

    store/
      meta.json                       teacher provenance, dim, scales, geometry, chunking (written first)
      shards/shard-000000.pt          images [0, chunk) of the sorted image ids, written atomically
      shards/shard-000001.pt          ...
      index.json                      image_id → shard, totals, skipped items (written last)

Work is split into fixed chunks of the sorted image ids, so a restarted job skips finished shards and the
final store is the same, byte for byte, as an uninterrupted run; rank r of w processes chunks k ≡ r (mod w).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..utils.checkpoint import load_torch_file
from ..utils.errors import DistillInputError
from ..utils.io import atomic_write_bytes, atomic_write_json, read_json

FORMAT = "distill.region_store/1"


@dataclass
class ShardRecord:
    """Everything one chunk produced: per-image boxes / embeddings and what had to be skipped."""

    image_ids: list[int] = field(default_factory=list)
    boxes: list[torch.Tensor] = field(default_factory=list)  # each (N_i, 4) XYXY float32
    embeddings: list[torch.Tensor] = field(default_factory=list)  # each (N_i, D)
    skipped_images: list[dict] = field(default_factory=list)  # {"image_id", "reason"}
    skipped_boxes: int = 0


def _shard_name(k: int) -> str:
    return f"shard-{k:06d}.pt"


def chunks(image_ids: Iterable[int], chunk_size: int) -> list[list[int]]:
    ids = sorted(image_ids)
    return [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]


class RegionStoreWriterV1:
    def __init__(self, root: str | os.PathLike, meta: dict, image_ids: Sequence[int], chunk_size: int = 64):
        """Open (or resume) a store; `meta` must equal the meta of an existing partial store."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.root = Path(root)
        self.meta = {
            "format": FORMAT,
            **meta,
            "chunk_size": chunk_size,
            "num_images": len(set(image_ids)),
            "image_ids_sha256": hashlib.sha256(
                ",".join(map(str, sorted(set(image_ids)))).encode()
            ).hexdigest(),
        }
        self.chunks = chunks(set(image_ids), chunk_size)
        meta_path = self.root / "meta.json"
        if meta_path.is_file():
            old = read_json(meta_path)
            if old != self.meta:
                diff = sorted(k for k in set(old) | set(self.meta) if old.get(k) != self.meta.get(k))
                raise DistillInputError(
                    f"a store with other settings is here (differs in: {', '.join(diff)}); "
                    "use another output folder or remove it",
                    self.root,
                )
        else:
            atomic_write_json(meta_path, self.meta, indent=1)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        for stale in (self.root / "shards").glob(".*.partial"):  # left by a killed run
            stale.unlink(missing_ok=True)

    def shard_path(self, k: int) -> Path:
        return self.root / "shards" / _shard_name(k)

    def pending(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """Chunk indices this rank still has to produce."""
        return [
            k for k in range(len(self.chunks)) if k % world_size == rank and not self.shard_path(k).is_file()
        ]

    def write_shard(self, k: int, rec: ShardRecord) -> None:
        counts = torch.tensor([b.shape[0] for b in rec.boxes], dtype=torch.long)
        dim = self.meta["dim"]
        payload = {
            "image_ids": torch.tensor(rec.image_ids, dtype=torch.long),
            "offsets": torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
            "boxes": torch.cat(rec.boxes).float() if rec.boxes else torch.zeros(0, 4),
            "embeddings": torch.cat(rec.embeddings).half() if rec.embeddings else torch.zeros(0, dim).half(),
            "skipped_images": list(rec.skipped_images),
            "skipped_boxes": int(rec.skipped_boxes),
        }
        buf = io.BytesIO()  # torch.save names the archive after the file: serialise first, for stable bytes
        torch.save(payload, buf)
        atomic_write_bytes(self.shard_path(k), buf.getvalue())

    def finalize(self) -> dict:
        """Check every shard is there and write index.json; returns the index."""
        missing = [k for k in range(len(self.chunks)) if not self.shard_path(k).is_file()]
        if missing:
            raise DistillInputError(
                f"{len(missing)} shard(s) not written yet (first: {_shard_name(missing[0])})", self.root
            )
        images, skipped, skipped_boxes, total = {}, [], 0, 0
        shard_hashes = []
        for k in range(len(self.chunks)):
            path = self.shard_path(k)
            shard_hashes.append(hashlib.sha256(path.read_bytes()).hexdigest())
            s = load_torch_file(path, "format-1 region-store shard")
            for i, image_id in enumerate(s["image_ids"].tolist()):
                images[str(image_id)] = [k, i]
            total += int(s["offsets"][-1])
            skipped += s["skipped_images"]
            skipped_boxes += s["skipped_boxes"]
        index = {
            "format": FORMAT,
            "num_shards": len(self.chunks),
            "shard_sha256": shard_hashes,
            "num_images": len(images),
            "num_regions": total,
            "images": images,
            "skipped_images": sorted(skipped, key=lambda d: d["image_id"]),
            "skipped_boxes": skipped_boxes,
        }
        atomic_write_json(self.root / "index.json", index)
        return index


class RegionStoreV1:
    """Read access: `store[image_id]` → (boxes (N, 4) float32 XYXY, embeddings (N, D) float16); each read
    deserialises the image's whole shard (an LRU of `cache_shards` keeps recent ones)."""

    def __init__(self, root: str | os.PathLike, expected_dim: int | None = None, cache_shards: int = 8):
        self.root = Path(root)
        if not (self.root / "index.json").is_file():
            if (self.root / "meta.json").is_file():
                raise DistillInputError(
                    "region-embedding store is incomplete (no index.json): rerun the dump to finish it",
                    self.root,
                )
            raise DistillInputError("region-embedding store not found", self.root)
        self.meta = read_json(self.root / "meta.json")
        self.index = read_json(self.root / "index.json")
        if self.index.get("format") != FORMAT:
            raise DistillInputError(f"not a {FORMAT} store", self.root)
        if expected_dim is not None and self.meta["dim"] != expected_dim:
            raise DistillInputError(
                f"store holds {self.meta['dim']}-dim embeddings, the model expects "
                f"{expected_dim} (teacher {self.meta.get('teacher', {}).get('arch', '?')})",
                self.root,
            )
        self._load = functools.lru_cache(maxsize=cache_shards)(self._load_shard)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def image_ids(self) -> list[int]:
        return sorted(int(k) for k in self.index["images"])

    def __len__(self) -> int:
        return len(self.index["images"])

    def __contains__(self, image_id: int) -> bool:
        return str(image_id) in self.index["images"]

    def _load_shard(self, k: int) -> dict:
        return load_torch_file(self.root / "shards" / _shard_name(k), "format-1 region-store shard")

    def __getitem__(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.index["images"].get(str(image_id))
        if loc is None:
            raise KeyError(f"image {image_id} is not in the region-embedding store {self.root}")
        s = self._load(loc[0])
        a, b = int(s["offsets"][loc[1]]), int(s["offsets"][loc[1] + 1])
        return s["boxes"][a:b], s["embeddings"][a:b]
