"""Offline ViLD step: teacher region embeddings of every proposal of a dataset, into a region store."""
from __future__ import annotations

import io
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.images import read_image_rgb
from ..data.region_store import RegionStoreWriter, ShardRecord
from ..utils.errors import DistillInputError
from ..utils.io import atomic_write_bytes, read_json
from .teacher import Teacher, check_boxes

logger = logging.getLogger(__name__)


def proposal_records(image_id: int, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict]:
    """(K, 4) XYXY boxes and (K,) scores → the json records `load_proposals` reads (bbox XYWH)."""
    return [{"image_id": image_id, "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2),
                                           round(b[3] - b[1], 2)], "score": round(s, 5)}
            for b, s in zip(boxes.cpu().tolist(), scores.cpu().tolist())]


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
    np.savez(buf, image_ids=np.array(ids, np.int64), counts=np.array(counts, np.int64),
             boxes=np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4), np.float32),
             scores=np.concatenate(scores) if scores else np.zeros(0, np.float32))
    atomic_write_bytes(path, buf.getvalue())
    return int(sum(counts))


def _load_proposals_npz(path, known: set, max_per_image: int) -> dict:
    try:
        with np.load(path) as z:
            ids, counts, boxes = z["image_ids"], z["counts"], z["boxes"]
    except (OSError, ValueError, KeyError) as e:
        raise DistillInputError(f"not a proposals .npz (image_ids, counts, boxes, scores): {e}", path) from None
    if counts.sum() != boxes.shape[0] or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DistillInputError("proposals .npz: counts do not add up to the boxes", path)
    out, start = {}, 0
    for image_id, n in zip(ids.tolist(), counts.tolist()):
        if image_id not in known:
            raise DistillInputError(f"proposals name image_id {image_id!r}, which the dataset lacks", path)
        out[image_id] = torch.from_numpy(boxes[start:start + min(n, max_per_image)].copy())
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
            raise DistillInputError(f"proposal {i} names image_id {p['image_id']!r}, which the dataset lacks", path)
        if not (isinstance(p["bbox"], list) and len(p["bbox"]) == 4):
            raise DistillInputError(f"proposal {i} has a bbox that is not [x, y, w, h]", path)
        per_image[p["image_id"]].append((float(p.get("score", 0.0)), p["bbox"]))
    out = {}
    for image_id, items in per_image.items():
        items.sort(key=lambda t: -t[0])
        xywh = torch.tensor([b for _, b in items[:max_per_image]], dtype=torch.float32)
        out[image_id] = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    return out


def dump_region_embeddings(teacher: Teacher, dataset_dicts: list[dict], proposals: dict, out_dir: str | Path,
                           scales: Sequence[float] = (1.0, 1.5), geometry: str = "center", chunk_size: int = 64,
                           rank: int = 0, world_size: int = 1, batch_size: int = 256,
                           progress: bool = True) -> RegionStoreWriter:
    """Embed each image's proposals; writes this rank's pending shards (finished shards are skipped)."""
    from tqdm import tqdm

    from ..utils.progress import on_terminal

    by_id = {d["image_id"]: d for d in dataset_dicts}
    meta = {**teacher.provenance(), "dim": teacher.dim, "scales": list(scales), "geometry": geometry}
    writer = RegionStoreWriter(out_dir, meta, list(by_id), chunk_size)
    todo = writer.pending(rank, world_size)
    n_images = sum(len(writer.chunks[k]) for k in todo)
    bar = tqdm(total=n_images, desc=f"regions[{rank}/{world_size}]", unit="img", disable=not on_terminal(progress))
    crops, t0 = 0, time.time()
    for k in todo:
        rec = ShardRecord()
        images, boxes = [], []
        for image_id in writer.chunks[k]:
            d = by_id[image_id]
            try:
                img = read_image_rgb(d["file_name"])
            except DistillInputError as e:
                rec.skipped_images.append({"image_id": image_id, "reason": str(e)})
                continue
            b = proposals.get(image_id, torch.zeros(0, 4))
            ok = check_boxes(b, img.shape[1], img.shape[2])
            rec.skipped_boxes += int((~ok).sum())
            rec.image_ids.append(image_id)
            rec.boxes.append(b[ok])
            images.append(img)
            boxes.append(b[ok])
        # one image at a time: a chunk's crops at once (64 images x 300 boxes x 3 x 224 x 224 fp32) are 11.6 GB
        rec.embeddings = [teacher.encode_regions([img], [b], scales, geometry, batch_size).cpu()
                          for img, b in zip(images, boxes)]
        writer.write_shard(k, rec)
        crops += sum(b.shape[0] for b in boxes) * len(scales)
        bar.update(len(writer.chunks[k]))
        bar.set_postfix(crops_per_s=f"{crops / max(time.time() - t0, 1e-6):.0f}")
    bar.close()
    return writer
