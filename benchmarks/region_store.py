#!/usr/bin/env python
"""Region-embedding store, format 1 (torch.save shards) against format 2 (memory-mapped safetensors, int8 and
float16), and the data-loader workers' memory over LVIS-sized dataset dicts, in one run.

    python benchmarks/region_store.py [--images 1000 4000 16000] [--regions 300] [--dim 512] [--reads 300]
                                      [--dicts 100000] [--workers 4] [--root /tmp/region_store_bench]

(a) Per store size (reads with one torch thread, as in a data-loader worker): a fake encoder (unit rows drawn from a fixed bank) feeds each writer chunk by chunk, as the
    dump tool does; timed: all shards written + finalize. Then a freshly opened store reads `--reads` random
    images once each as the mappers do (int8 rows stay quantised; their dequantisation in the batch is a
    column of its own): mean ms per image, bytes read from storage per image (the store's files dropped
    from the page cache first, reads counted by /proc/self/io read_bytes) against the payload, and the store's
    bytes per region on disk.
(b) `--workers` DataLoader workers make one pass over `--dicts` LVIS-shaped dataset dicts, kept as a Python
    list and as a SerializedList: each worker's private memory (USS) and RSS at its first and last batch.
Prints the tables, then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import time
from pathlib import Path

import torch

from distill.data.region_store import RegionEmbeddingStore, RegionStoreWriter, ShardRecord, teacher_embeddings
from distill.data.region_store_v1 import RegionStoreV1, RegionStoreWriterV1
from distill.data.serialize import SerializedList

META = {"teacher": {"arch": "fake-encoder"}, "scales": [1.0, 1.5], "geometry": "center"}
CHUNK = 64


class FakeEncoder:
    """Unit rows from a fixed bank of 4096: as cheap as can be, so the table times the store alone."""

    def __init__(self, dim: int):
        g = torch.Generator().manual_seed(0)
        self.bank = torch.nn.functional.normalize(torch.randn(4096 + 1024, dim, generator=g), dim=1)

    def __call__(self, image_id: int, n: int) -> torch.Tensor:
        a = (image_id * 7919) % 4096
        return self.bank[a : a + n] if n <= 1024 else self.bank[torch.arange(a, a + n) % 4096]


def record(ids, regions: int, enc: FakeEncoder) -> ShardRecord:
    rec = ShardRecord()
    for i in ids:
        rec.image_ids.append(i)
        rec.boxes.append(torch.rand(regions, 4) * 600)
        rec.embeddings.append(enc(i, regions))
    return rec


def write_store(kind: str, root: Path, n_images: int, regions: int, dim: int) -> float:
    """Seconds to write every shard and finalize."""
    shutil.rmtree(root, ignore_errors=True)
    enc, ids = FakeEncoder(dim), list(range(n_images))
    meta = {**META, "dim": dim}
    w = (
        RegionStoreWriterV1(root, meta, ids, CHUNK)
        if kind == "format 1"
        else RegionStoreWriter(root, meta, ids, CHUNK, dtype=kind.split()[-1])
    )
    t = time.perf_counter()
    for k in w.pending():
        w.write_shard(k, record(w.chunks[k], regions, enc))
    w.finalize()
    return time.perf_counter() - t


def drop_cache(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def io_read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("read_bytes")).split()[1])


def read_store(kind: str, root: Path, n_images: int, reads: int) -> dict:
    """Random images read once each by a fresh store, the way the mappers read them (format 2:
    `get_rows`, int8 rows left quantised): from a cold page cache (ms, bytes from storage), then again by
    another fresh store with the files cached (ms). Then the int8 rows' dequantisation, which the mappers
    leave to the batch, timed on 8 images' rows at a time (ms per image, one CPU thread)."""
    ids = random.Random(0).sample(range(n_images), min(reads, n_images))
    drop_cache(root)
    out = {}
    for phase in ("cold", "warm"):
        t = time.perf_counter()
        store = RegionStoreV1(root) if kind == "format 1" else RegionEmbeddingStore(root)
        read = store.__getitem__ if kind == "format 1" else store.get_rows
        out.setdefault("open_ms", 1e3 * (time.perf_counter() - t))
        times, payload, got = [], 0, []
        before = io_read_bytes()
        for i in ids:
            t = time.perf_counter()
            rows = read(i)
            times.append(time.perf_counter() - t)
            payload += sum(x.numel() * x.element_size() for x in rows if x is not None)
            got.append(rows)
        out[f"{phase}_ms"] = 1e3 * statistics.mean(times)
        if phase == "cold":
            out["bytes"], out["payload"] = (io_read_bytes() - before) / len(ids), payload / len(ids)
    out["dequant_ms"] = 0.0
    if kind.endswith("int8"):
        times = []
        for k in range(0, len(got) - 7, 8):
            emb, scales = torch.cat([r[1] for r in got[k : k + 8]]), torch.cat([r[2] for r in got[k : k + 8]])
            t = time.perf_counter()
            teacher_embeddings(emb, scales)
            times.append((time.perf_counter() - t) / 8)
        out["dequant_ms"] = 1e3 * statistics.mean(times)
    return out


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------ (b) workers' memory
def lvis_dicts(n: int, seed: int = 0) -> list[dict]:
    """LVIS-shaped dataset dicts: ~12 instances an image, one 12-point polygon each, category lists."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        anns = []
        for _ in range(rng.randint(4, 20)):
            x, y, w, h = (rng.uniform(0, 600) for _ in range(4))
            anns.append(
                {
                    "bbox": [x, y, w, h],
                    "bbox_mode": 1,
                    "category_id": rng.randrange(1203),
                    "segmentation": [[rng.uniform(0, 640) for _ in range(24)]],
                }
            )
        out.append(
            {
                "file_name": f"/data/coco/train2017/{i:012d}.jpg",
                "height": 480,
                "width": 640,
                "image_id": i,
                "annotations": anns,
                "neg_category_ids": [rng.randrange(1203) for _ in range(8)],
                "not_exhaustive_category_ids": [rng.randrange(1203) for _ in range(2)],
            }
        )
    return out


class _Reads(torch.utils.data.Dataset):
    def __init__(self, dicts):
        self.dicts = dicts

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, i):
        d = self.dicts[i]
        return len(d["annotations"]) + len(d["file_name"])  # touch the dict, as a mapper does


def _memory(pid: int) -> tuple[int, int]:
    """(USS, RSS) bytes of a process, from smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1]) * 1024
    return fields["Private_Clean"] + fields["Private_Dirty"], fields["Rss"]


def worker_memory(dicts, workers: int) -> dict:
    loader = torch.utils.data.DataLoader(
        _Reads(dicts),
        batch_size=256,
        num_workers=workers,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=2,
    )
    it = iter(loader)
    next(it)
    pids = [w.pid for w in it._workers]
    first = [_memory(p) for p in pids]
    for _ in range(len(loader) - 2):
        next(it)
    last = [_memory(p) for p in pids]  # workers are still alive: one batch left
    next(it)
    del it
    uss0, rss0 = sum(a for a, _ in first), sum(b for _, b in first)
    uss1, rss1 = sum(a for a, _ in last), sum(b for _, b in last)
    return {
        "uss_start_mb": uss0 / 2**20,
        "uss_end_mb": uss1 / 2**20,
        "rss_start_mb": rss0 / 2**20,
        "rss_end_mb": rss1 / 2**20,
        "uss_growth": uss1 / uss0 - 1,
        "rss_growth": rss1 / rss0 - 1,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--regions", type=int, default=300)
    p.add_argument(
        "--dtypes",
        nargs="+",
        choices=("int8", "float16"),
        default=["int8", "float16"],
        help="format-2 stores to compare with format 1",
    )
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--reads", type=int, default=300)
    p.add_argument("--dicts", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--root", default="/tmp/region_store_bench")
    p.add_argument("--keep", action="store_true", help="keep the stores (removed by default)")
    args = p.parse_args(argv)
    root = Path(args.root)
    kinds = ["format 1", *(f"format 2 {d}" for d in args.dtypes)]
    rows, result = [], {"threads": torch.get_num_threads(), "stores": {}}
    threads = torch.get_num_threads()
    for n in args.images:
        for kind in kinds:
            path = root / f"{n}-{kind.replace(' ', '-')}"
            torch.set_num_threads(threads)
            t_write = write_store(kind, path, n, args.regions, args.dim)
            torch.set_num_threads(1)
            r = read_store(kind, path, n, args.reads)
            size = store_bytes(path)
            index = sum(
                (path / f).stat().st_size for f in ("index.json", "index.safetensors") if (path / f).is_file()
            )
            row = {
                "images": n,
                "kind": kind,
                "write_s": t_write,
                **r,
                "bytes_per_region": size / (n * args.regions),
                "index_bytes": index,
            }
            rows.append(row)
            result["stores"][f"{n} {kind}"] = row
            if not args.keep:
                shutil.rmtree(path)
    print(
        f"torch threads: {threads} (reads: 1); {args.regions} regions x {args.dim}-d an image; "
        f"{args.reads} random reads, page cache dropped first"
    )
    print(
        "| images | store | write + finalize s | mean read ms / image (cached) | vs format 1 | read ms / image "
        "(cold) | bytes read / image (cold) | payload / image | bytes / region | open ms (cold) | index kB | "
        "batch dequantisation ms / image |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        base = result["stores"][f"{row['images']} format 1"]
        print(
            f"| {row['images']} | {row['kind']} | {row['write_s']:.1f} | {row['warm_ms']:.3f} | "
            f"{base['warm_ms'] / row['warm_ms']:.1f}x | {row['cold_ms']:.2f} | {row['bytes'] / 1e3:.1f} kB | "
            f"{row['payload'] / 1e3:.1f} kB | {row['bytes_per_region']:.0f} | {row['open_ms']:.1f} | "
            f"{row['index_bytes'] / 1e3:.0f} | {row['dequant_ms']:.3f} |"
        )

    torch.set_num_threads(threads)
    dicts = lvis_dicts(args.dicts)
    mem = {"list": worker_memory(dicts, args.workers)}
    serial = SerializedList(dicts)
    del dicts
    mem["SerializedList"] = worker_memory(serial, args.workers)
    result["workers"] = mem
    print(
        f"\n{args.workers} DataLoader workers, one shuffled pass over {args.dicts} LVIS-shaped dicts "
        f"(serialized buffer: {serial.nbytes / 2**20:.0f} MB); sums over the workers"
    )
    print(
        "| dataset dicts as | USS first batch MB | USS last batch MB | USS growth | RSS first MB | RSS last MB | "
        "RSS growth |\n|---|---|---|---|---|---|---|"
    )
    for name, m in mem.items():
        print(
            f"| {name} | {m['uss_start_mb']:.0f} | {m['uss_end_mb']:.0f} | {100 * m['uss_growth']:.1f}% | "
            f"{m['rss_start_mb']:.0f} | {m['rss_end_mb']:.0f} | {100 * m['rss_growth']:.1f}% |"
        )
    print(json.dumps(result, default=lambda x: round(x, 4) if isinstance(x, float) else x))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
