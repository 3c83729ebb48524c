"""Offline ViLD step: teacher region embeddings of every proposal of a dataset, into a region store."""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import torch

from ..data.images import read_image_rgb
from ..data.region_store import RegionStoreWriter, ShardRecord
from ..utils.errors import DistillInputError
from ..utils.io import read_json
from .teacher import Teacher, check_boxes

logger = logging.getLogger(__name__)


def proposal_records(image_id: int, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict]:
    """(K, 4) XYXY boxes and (K,) scores → the json records `load_proposals` reads (bbox XYWH)."""
    return [{"image_id": image_id, "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2),
                                           round(b[3] - b[1], 2)], "score": round(s, 5)}
            for b, s in zip(boxes.cpu().tolist(), scores.cpu().tolist())]


def load_proposals(path: str | os.PathLike, image_ids: Sequence[int], max_per_image: int = 300) -> dict:
    """COCO-result-style proposals (json list of image_id, bbox XYWH, score) → {image_id: (N, 4) XYXY},
    the `max_per_image` best first."""
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
        emb = teacher.encode_regions(images, boxes, scales, geometry, batch_size) if images else \
            torch.zeros(0, teacher.dim)
        rec.embeddings = list(torch.split(emb.cpu(), [b.shape[0] for b in boxes])) if boxes else []
        writer.write_shard(k, rec)
        crops += sum(b.shape[0] for b in boxes) * len(scales)
        bar.update(len(writer.chunks[k]))
        bar.set_postfix(crops_per_s=f"{crops / max(time.time() - t0, 1e-6):.0f}")
    bar.close()
    return writer
