"""Offline ViLD step: teacher region embeddings of every proposal of a dataset, into a region store."""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import read_image_rgb
from ..data.region_store import RegionStoreWriter, ShardRecord
from ..utils.errors import DistillInputError
from ..utils.io import atomic_write_bytes, read_json
from ..utils.progress import job_progress
from .crops import CropBatcher, scale_boxes
from .domain import check_images
from .teacher import Teacher, check_boxes

logger = logging.getLogger(__name__)


def proposal_records(image_id: int, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict]:
    """(K, 4) XYXY boxes and (K,) scores → the json records `load_proposals` reads (bbox XYWH)."""
    return [
        {
            "image_id": image_id,
            "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
            "score": round(s, 5),
        }
        for b, s in zip(boxes.cpu().tolist(), scores.cpu().tolist())
    ]


def save_proposals_npz(path: str | os.PathLike, per_image) -> int:
    """(image_id, boxes (K, 4) XYXY, scores (K,)) per image → a compact proposals file (.npz: image_ids (N,),
    counts (N,), boxes (M, 4) float32 XYXY, scores (M,) float32; 300 x 118k COCO images: 0.7 GB, where a json
    list takes ~3 GB on disk and ~15 GB loaded); returns the number of proposals."""
    ids, counts, boxes, scores = [], [], [], []
    for image_id, b, s in per_image:
        order = torch.argsort(s, descending=True)
        ids.append(int(image_id))
        counts.append(int(b.shape[0]))
        boxes.append(b[order].float().numpy())
        scores.append(s[order].float().numpy())
    buf = io.BytesIO()
    np.savez(
        buf,
        image_ids=np.array(ids, np.int64),
        counts=np.array(counts, np.int64),
        boxes=np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4), np.float32),
        scores=np.concatenate(scores) if scores else np.zeros(0, np.float32),
    )
    atomic_write_bytes(path, buf.getvalue())
    return int(sum(counts))


def _load_proposals_npz(path, known: set, max_per_image: int) -> dict:
    try:
        with np.load(path) as z:
            ids, counts, boxes = z["image_ids"], z["counts"], z["boxes"]
    except (OSError, ValueError, KeyError) as e:
        raise DistillInputError(
            f"not a proposals .npz (image_ids, counts, boxes, scores): {e}", path
        ) from None
    if counts.sum() != boxes.shape[0] or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DistillInputError("proposals .npz: counts do not add up to the boxes", path)
    out, start = {}, 0
    for image_id, n in zip(ids.tolist(), counts.tolist()):
        if image_id not in known:
            raise DistillInputError(f"proposals name image_id {image_id!r}, which the dataset lacks", path)
        out[image_id] = torch.from_numpy(boxes[start : start + min(n, max_per_image)].copy())
        start += n
    return out


def load_proposals(path: str | os.PathLike, image_ids: Sequence[int], max_per_image: int = 300) -> dict:
    """Proposals → {image_id: (N, 4) XYXY}, the `max_per_image` best first. A .npz (`save_proposals_npz`), or
    COCO-result-style json (a list of image_id, bbox XYWH, score)."""
    if str(path).endswith(".npz"):
        if not os.path.isfile(path):
            raise DistillInputError("proposals file not found", path)
        return _load_proposals_npz(path, set(image_ids), max_per_image)
    data = read_json(path, what="proposals file")
    if not isinstance(data, list):
        raise DistillInputError("proposals must be a json list of {image_id, bbox, score}", path)
    known = set(image_ids)
    per_image: dict[int, list] = defaultdict(list)
    for i, p in enumerate(data):
        if not isinstance(p, dict) or not {"image_id", "bbox"} <= set(p):
            raise DistillInputError(f"proposal {i} lacks image_id or bbox", path)
        if p["image_id"] not in known:
            raise DistillInputError(
                f"proposal {i} names image_id {p['image_id']!r}, which the dataset lacks", path
            )
        if not (isinstance(p["bbox"], list) and len(p["bbox"]) == 4):
            raise DistillInputError(f"proposal {i} has a bbox that is not [x, y, w, h]", path)
        per_image[p["image_id"]].append((float(p.get("score", 0.0)), p["bbox"]))
    out = {}
    for image_id, items in per_image.items():
        items.sort(key=lambda t: -t[0])
        xywh = torch.tensor([b for _, b in items[:max_per_image]], dtype=torch.float32)
        out[image_id] = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    return out


class _Images(torch.utils.data.Dataset):
    """(chunk, image_id, file_name) items → (chunk, image_id, (3, H, W) uint8 or None, skip reason or None),
    decoded in DataLoader workers."""

    def __init__(self, items: list[tuple[int, int, str]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        k, image_id, path = self.items[i]
        try:
            return k, image_id, read_image_rgb(path), None
        except DistillInputError as e:
            return k, image_id, None, str(e)


def _as_is(item):
    return item


class _ShardWriterThread:
    """Writes finished chunks (quantise, serialise, fsync) in a background thread; errors resurface here."""

    def __init__(self, writer: RegionStoreWriter, depth: int = 2):
        self.writer, self.error = writer, None
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name="region-shard-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_shard(*item)
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    self.error = e

    def put(self, k: int, rec: ShardRecord) -> None:
        self._raise()
        self.queue.put((k, rec))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


class _ChunkEncoder:
    """One chunk's images in, its ShardRecord out: crops of every box at every scale cut into the batch
    buffer, each full batch encoded. Batches never span chunks, so a chunk's bytes do not depend on which
    chunks ran before it (resume = uninterrupted run)."""

    def __init__(self, teacher: Teacher, scales: Sequence[float], geometry: str, batch_size: int):
        self.teacher, self.scales = teacher, tuple(scales)
        self.batcher = CropBatcher(
            batch_size, teacher.input_size, teacher.mean, teacher.std, geometry, teacher.device
        )
        self.start()

    def start(self) -> None:
        self.rec, self.parts = ShardRecord(), []

    def add(self, image_id: int, image: torch.Tensor, boxes: torch.Tensor) -> None:
        self.rec.image_ids.append(image_id)
        self.rec.boxes.append(boxes)
        for s in self.scales:
            for batch in self.batcher.add(image, scale_boxes(boxes, s)):
                self.parts.append(self.teacher.encode_image(batch, batch.shape[0]).cpu())

    def finish(self) -> ShardRecord:
        last = self.batcher.flush()
        if last is not None:
            self.parts.append(self.teacher.encode_image(last, last.shape[0]).cpu())
        emb = torch.cat(self.parts) if self.parts else torch.zeros(0, self.teacher.dim)
        pos = 0
        for b in self.rec.boxes:
            n = b.shape[0]
            per_scale = emb[pos : pos + n * len(self.scales)].view(len(self.scales), n, emb.shape[1])
            self.rec.embeddings.append(F.normalize(per_scale.sum(0), dim=-1))
            pos += n * len(self.scales)
        rec = self.rec
        self.start()
        return rec


def dump_region_embeddings(
    teacher: Teacher,
    dataset_dicts: list[dict],
    proposals: dict,
    out_dir: str | Path,
    scales: Sequence[float] = (1.0, 1.5),
    geometry: str = "center",
    chunk_size: int = 64,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 256,
    progress: bool = True,
    dtype: str = "int8",
    num_workers: int = 2,
) -> RegionStoreWriter:
    """Embed each image's proposals; writes this rank's pending shards (finished shards are skipped).

    A pipeline: images decoded by `num_workers` DataLoader workers, crops cut in batches on the teacher's
    device, encoded in batches, shards quantised and written by a background thread.
    """

    check_images(getattr(teacher, "world", None), (d["file_name"] for d in dataset_dicts))
    by_id = {d["image_id"]: d for d in dataset_dicts}
    meta = {**teacher.provenance(), "dim": teacher.dim, "scales": list(scales), "geometry": geometry}
    writer = RegionStoreWriter(out_dir, meta, list(by_id), chunk_size, dtype=dtype)
    todo = writer.pending(rank, world_size)
    items = [(k, i, by_id[i]["file_name"]) for k in todo for i in writer.chunks[k]]
    loader = torch.utils.data.DataLoader(
        _Images(items),
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_as_is,
        prefetch_factor=8 if num_workers else None,
    )
    bar = job_progress(
        None, progress, total=len(items), desc=f"regions[{rank}/{world_size}]", unit="img", position=rank
    )
    encoder = _ChunkEncoder(teacher, scales, geometry, batch_size)
    shards = _ShardWriterThread(writer)
    current, crops, t0 = None, 0, time.time()
    try:
        for k, image_id, img, reason in loader:
            if k != current and current is not None:
                shards.put(current, encoder.finish())
            current = k
            if img is None:
                encoder.rec.skipped_images.append({"image_id": image_id, "reason": reason})
            else:
                b = proposals.get(image_id, torch.zeros(0, 4)).float()
                ok = check_boxes(b, img.shape[1], img.shape[2])
                encoder.rec.skipped_boxes += int((~ok).sum())
                encoder.add(image_id, img, b[ok])
                crops += int(ok.sum()) * len(scales)
            bar.update(1)
            bar.set_postfix(crops_per_s=f"{crops / max(time.time() - t0, 1e-6):.0f}", refresh=False)
        if current is not None:
            shards.put(current, encoder.finish())
    finally:
        shards.close()
        bar.close()
    return writer
