"""Region-embedding store, format 2: per image, the proposal boxes and the teacher's region embeddings,
in safetensors shards that are read by slicing a memory map (no pickle, O(1) work and bytes per image).

On disk::

    store/
      meta.json                            teacher provenance, dim, scales, geometry, dtype, chunking (first)
      shards/shard-000000.safetensors      images [0, chunk) of the sorted image ids, written atomically:
                                           image_ids (n,) int64, offsets (n + 1,) int64, boxes (N, 4) float32,
                                           embeddings (N, D) int8 (+ scales (N,) float32) or float16
      index.safetensors                    image_ids (M,) int64 sorted, shard (M,) int32, start (M,) int64,
                                           count (M,) int32: where each image's rows are (~24 bytes an image)
      index.json                           totals, shard hashes, skipped items (written last: the store is done)

int8 rows are symmetric per row: embedding ≈ int8 * scale, scale = max |x| / 127. Work is split into fixed
chunks of the sorted image ids, so a restarted job skips finished shards and the final store is the same,
byte for byte, as an uninterrupted run; rank r of w processes chunks k ≡ r (mod w). Each shard carries the
hash of meta.json, checked when the shard is opened. Format-1 stores (torch.save shards) open read-only.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..utils.errors import DistillInputError
from ..utils.io import atomic_write_bytes, atomic_write_json, dumps_json, read_json
from .region_store_v1 import FORMAT as FORMAT_V1
from .region_store_v1 import RegionStoreV1, ShardRecord, chunks

FORMAT = "distill.region_store/2"
DTYPES = ("int8", "float16")
_ST_DTYPES = {"I8": np.int8, "I32": np.int32, "I64": np.int64, "F16": np.float16, "F32": np.float32}

__all__ = [
    "DTYPES",
    "FORMAT",
    "RegionEmbeddingStore",
    "RegionStoreWriter",
    "ShardRecord",
    "chunks",
    "dequantize_rows",
    "quantize_rows",
    "teacher_embeddings",
]


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) float → int8 (N, D) and float32 scales (N,), symmetric per row: x ≈ q * scale."""
    x = x.float()
    scale = x.abs().amax(1) / 127.0 if x.shape[0] else x.new_zeros(0)
    q = torch.round(x / torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]).clamp_(-127, 127)
    return q.to(torch.int8), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 (N, D) and (N,) scales → (N, D) float32. Converting first and scaling in place is 2-3x faster on
    the CPU than one mixed-dtype multiply, and gives the same bits."""
    return q.float().mul_(scale.float()[:, None])


def teacher_embeddings(emb: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
    """Rows from `RegionEmbeddingStore.get_rows` (a batch's, concatenated) → (N, D) float16, the same
    values `get` returns: int8 rows dequantised where the loss runs, float16 rows as they are."""
    return emb if scales is None else dequantize_rows(emb, scales.to(emb.device)).half()


def _shard_name(k: int) -> str:
    return f"shard-{k:06d}.safetensors"


def _meta_hash(meta: dict) -> str:
    return hashlib.sha256(dumps_json(meta).encode()).hexdigest()


def _save(path: Path, arrays: dict[str, np.ndarray], metadata: dict) -> None:
    """One safetensors file; the metadata goes in as one json string (safetensors orders several keys at
    random, which would break byte-identical resumes)."""
    from safetensors.numpy import save

    data = save(
        {k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata={"distill": dumps_json(metadata)}
    )
    atomic_write_bytes(path, data)


class _Mapped:
    """A safetensors file as numpy views of one read-only memory map (nothing read until sliced).

    `layout` (this file's `.layout` from an earlier open) skips parsing the header again: reopening a shard
    that fell out of a reader's cache is then one open and one mmap."""

    def __init__(self, path: str | os.PathLike, layout: tuple | None = None):
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                self.mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
            if hasattr(self.mm, "madvise"):
                self.mm.madvise(mmap.MADV_RANDOM)  # reads are a few rows each: no readahead around them
            if layout is None:
                head = np.frombuffer(self.mm, dtype=np.uint8, count=min(len(self.mm), 8))
                n = int(head.view("<u8")[0])
                header = json.loads(self.mm[8 : 8 + n])
                meta = json.loads((header.pop("__metadata__", None) or {}).get("distill", "{}"))
                layout = (
                    meta,
                    {
                        name: (8 + n + h["data_offsets"][0], _ST_DTYPES[h["dtype"]], tuple(h["shape"]))
                        for name, h in header.items()
                    },
                )
            self.layout = layout
            self.metadata: dict = layout[0]
            self.arrays: dict[str, np.ndarray] = {}
            self._begin: dict[str, int] = {}
            for name, (begin, dtype, shape) in layout[1].items():
                self.arrays[name] = np.frombuffer(self.mm, dtype, math.prod(shape), begin).reshape(shape)
                self._begin[name] = begin
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DistillInputError(f"not a readable safetensors file ({e})", path) from None

    def rows(self, name: str, a: int, b: int) -> np.ndarray:
        """A copy of rows [a, b) of an array; the byte range is first asked for in one go (MADV_WILLNEED),
        so a cold read is one request per array instead of one page fault per page."""
        arr = self.arrays[name]
        if b > a and hasattr(mmap, "MADV_WILLNEED"):
            row = arr.strides[0] if arr.ndim else arr.itemsize
            start = self._begin[name] + a * row
            page = start - start % mmap.PAGESIZE
            self.mm.madvise(mmap.MADV_WILLNEED, page, start + (b - a) * row - page)
        return np.array(arr[a:b])


class RegionStoreWriter:
    def __init__(
        self,
        root: str | os.PathLike,
        meta: dict,
        image_ids: Sequence[int],
        chunk_size: int = 64,
        dtype: str = "int8",
    ):
        """Open (or resume) a store; `meta` (with chunking and dtype) must equal an existing partial store's."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.root = Path(root)
        ids = sorted(set(image_ids))
        self.meta = {
            "format": FORMAT,
            **meta,
            "dtype": dtype,
            "chunk_size": chunk_size,
            "num_images": len(ids),
            "image_ids_sha256": hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest(),
        }
        self.meta_sha256 = _meta_hash(self.meta)
        self.chunks = chunks(ids, chunk_size)
        meta_path = self.root / "meta.json"
        if meta_path.is_file():
            old = read_json(meta_path)
            if old.get("format") == FORMAT_V1:
                raise DistillInputError(
                    "a format-1 store is here; convert it with tools/convert_region_store.py "
                    "or use another output folder",
                    self.root,
                )
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

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    def shard_path(self, k: int) -> Path:
        return self.root / "shards" / _shard_name(k)

    def pending(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """Chunk indices this rank still has to produce."""
        return [
            k for k in range(len(self.chunks)) if k % world_size == rank and not self.shard_path(k).is_file()
        ]

    def write_shard(self, k: int, rec: ShardRecord) -> None:
        """Chunk k's images (a subset of `chunks[k]`, in its order) → one atomic shard."""
        if len(rec.boxes) != len(rec.image_ids) or len(rec.embeddings) != len(rec.image_ids):
            raise ValueError("ShardRecord needs one boxes and one embeddings tensor per image id")
        if not set(rec.image_ids) <= set(self.chunks[k]) or rec.image_ids != sorted(rec.image_ids):
            raise ValueError(f"shard {k} must hold sorted image ids of its chunk")
        dim = self.meta["dim"]
        counts = np.array([b.shape[0] for b in rec.boxes], dtype=np.int64)
        emb = torch.cat(rec.embeddings).float() if rec.embeddings else torch.zeros(0, dim)
        arrays = {
            "image_ids": np.array(rec.image_ids, dtype=np.int64),
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "boxes": (torch.cat(rec.boxes).float() if rec.boxes else torch.zeros(0, 4)).numpy(),
        }
        if emb.shape != (int(counts.sum()), dim):
            raise ValueError(
                f"shard {k}: embeddings of shape {tuple(emb.shape)} for {int(counts.sum())} boxes"
            )
        if self.dtype == "int8":
            q, scale = quantize_rows(emb)
            arrays["embeddings"], arrays["scales"] = q.numpy(), scale.numpy()
        else:
            arrays["embeddings"] = emb.half().numpy()
        metadata = {
            "format": FORMAT,
            "meta_sha256": self.meta_sha256,
            "chunk": k,
            "skipped_images": list(rec.skipped_images),
            "skipped_boxes": int(rec.skipped_boxes),
        }
        _save(self.shard_path(k), arrays, metadata)

    def finalize(self) -> dict:
        """Check every shard is there and belongs here; write index.safetensors, then index.json."""
        missing = [k for k in range(len(self.chunks)) if not self.shard_path(k).is_file()]
        if missing:
            raise DistillInputError(
                f"{len(missing)} shard(s) not written yet (first: {_shard_name(missing[0])})", self.root
            )
        ids, shard, start, count, hashes = [], [], [], [], []
        skipped, skipped_boxes = [], 0
        for k in range(len(self.chunks)):
            s = _open_shard(self.shard_path(k), self.meta_sha256, k)
            offsets = np.array(s.arrays["offsets"])
            ids.append(np.array(s.arrays["image_ids"]))
            shard.append(np.full(len(ids[-1]), k, dtype=np.int32))
            start.append(offsets[:-1])
            count.append(np.diff(offsets).astype(np.int32))
            skipped += s.metadata["skipped_images"]
            skipped_boxes += int(s.metadata["skipped_boxes"])
            hashes.append(_file_sha256(self.shard_path(k)))
        cat = lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t)  # noqa: E731
        arrays = {
            "image_ids": cat(ids, np.int64),
            "shard": cat(shard, np.int32),
            "start": cat(start, np.int64),
            "count": cat(count, np.int32),
        }
        _save(self.root / "index.safetensors", arrays, {"format": FORMAT, "meta_sha256": self.meta_sha256})
        index = {
            "format": FORMAT,
            "meta_sha256": self.meta_sha256,
            "num_shards": len(self.chunks),
            "shard_sha256": hashes,
            "index_sha256": _file_sha256(self.root / "index.safetensors"),
            "num_images": len(arrays["image_ids"]),
            "num_regions": int(arrays["count"].sum()),
            "skipped_images": sorted(skipped, key=lambda d: d["image_id"]),
            "skipped_boxes": skipped_boxes,
        }
        atomic_write_json(self.root / "index.json", index)
        return index


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _open_shard(path: str | os.PathLike, meta_sha256: str, k: int) -> _Mapped:
    s = _Mapped(path)
    if s.metadata.get("meta_sha256") != meta_sha256 or s.metadata.get("chunk") != k:
        raise DistillInputError(
            "shard does not belong to this store (other settings or chunk); rerun the dump "
            "into a fresh folder",
            path,
        )
    return s


class RegionEmbeddingStore:
    """Read access: `store[image_id]` → (boxes (N, 4) float32 XYXY, embeddings (N, D) float16).

    Opening reads two json files and maps the index; a read maps the image's shard (an LRU of
    `cache_shards` open maps per process) and copies out only that image's rows.
    """

    def __init__(self, root: str | os.PathLike, expected_dim: int | None = None, cache_shards: int = 64):
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
        self.format = self.index.get("format")
        self._v1 = RegionStoreV1(self.root) if self.format == FORMAT_V1 else None
        if self.format not in (FORMAT, FORMAT_V1):
            raise DistillInputError(f"unknown region-store format {self.format!r}", self.root)
        if expected_dim is not None and self.dim != expected_dim:
            raise DistillInputError(
                f"store holds {self.dim}-dim embeddings, the model expects "
                f"{expected_dim} (teacher {self.meta.get('teacher', {}).get('arch', '?')})",
                self.root,
            )
        self.cache_shards = cache_shards
        self._pid, self._shards = None, OrderedDict()
        self._shard_dir, self._layouts = str(self.root / "shards"), {}  # layouts: a few hundred bytes a shard
        if self._v1 is None:
            self._meta_sha256 = _meta_hash(self.meta)
            if self.index.get("meta_sha256") != self._meta_sha256:
                raise DistillInputError(
                    "meta.json does not match the store's index (edited or mixed stores)", self.root
                )
            idx = _Mapped(self.root / "index.safetensors")
            if idx.metadata.get("meta_sha256") != self._meta_sha256:
                raise DistillInputError("index.safetensors belongs to another store", self.root)
            self._ids, self._shard = idx.arrays["image_ids"], idx.arrays["shard"]
            self._start, self._count = idx.arrays["start"], idx.arrays["count"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def dtype(self) -> str:
        return self.meta.get("dtype", "float16")

    def image_ids(self) -> list[int]:
        return self._v1.image_ids() if self._v1 else self._ids.tolist()

    def __len__(self) -> int:
        return len(self._v1) if self._v1 else len(self._ids)

    def _find(self, image_id: int) -> int:
        i = int(np.searchsorted(self._ids, image_id))
        return i if i < len(self._ids) and int(self._ids[i]) == image_id else -1

    def __contains__(self, image_id: int) -> bool:
        return image_id in self._v1 if self._v1 else self._find(int(image_id)) >= 0

    def _shard_map(self, k: int) -> _Mapped:
        if self._pid != os.getpid():  # maps are per process (forked data-loader workers open their own)
            self._pid, self._shards = os.getpid(), OrderedDict()
        s = self._shards.pop(k, None)
        if s is None:
            path = f"{self._shard_dir}/{_shard_name(k)}"
            layout = self._layouts.get(k)  # a shard seen before was checked then: only map it again
            s = _Mapped(path, layout) if layout else _open_shard(path, self._meta_sha256, k)
            self._layouts[k] = s.layout
        self._shards[k] = s
        if len(self._shards) > self.cache_shards:
            self._shards.popitem(last=False)
        return s

    def get_rows(
        self, image_id: int, limit: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The image's first `limit` (default all) rows as stored: boxes (N, 4) float32, embeddings (N, D)
        int8 with scales (N,) float32, or float16 with scales None. The mappers read this and leave the
        dequantisation to the batch (`teacher_embeddings`). KeyError when the image is not stored."""
        if self._v1:
            boxes, emb = self._v1[image_id]
            return boxes[:limit], emb[:limit], None
        i = self._find(int(image_id))
        if i < 0:
            raise KeyError(f"image {image_id} is not in the region-embedding store {self.root}")
        s = self._shard_map(int(self._shard[i]))
        a = int(self._start[i])
        b = a + (int(self._count[i]) if limit is None else min(int(self._count[i]), max(0, limit)))
        boxes = torch.from_numpy(s.rows("boxes", a, b))
        emb = torch.from_numpy(s.rows("embeddings", a, b))
        scales = torch.from_numpy(s.rows("scales", a, b)) if "scales" in s.arrays else None
        return boxes, emb, scales

    def empty_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`get_rows` of an image without regions: (0, 4), (0, D) in the store's dtype, scales alike."""
        int8 = self._v1 is None and self.dtype == "int8"
        emb = torch.zeros(0, self.dim, dtype=torch.int8 if int8 else torch.float16)
        return torch.zeros(0, 4), emb, (torch.zeros(0) if int8 else None)

    def get(self, image_id: int, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The image's first `limit` (default all) boxes and float16 embeddings; KeyError when not stored."""
        boxes, emb, scales = self.get_rows(image_id, limit)
        return boxes, teacher_embeddings(emb, scales)

    def __getitem__(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get(image_id)

    def __getstate__(self) -> dict:  # pickled into spawned workers: maps are reopened there
        return {**self.__dict__, "_pid": None, "_shards": OrderedDict()}
