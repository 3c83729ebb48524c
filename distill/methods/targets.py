"""Region-store rows attached to a training record: the one function both backends' mappers call.

`RegionStoreSource(path, limit)(image_id, transform_boxes, (h, w))` → `RegionTargets`: the image's first
`limit` stored regions, moved by the record's own transforms (resize, crop, flip), clipped to the input image;
regions with less than a pixel left (a crop cut them away) are dropped with their embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.region_store import RegionEmbeddingStore, teacher_embeddings
from .base import TargetSource


@dataclass
class RegionTargets:
    """A record's teacher regions, as stored.

    boxes: (M, 4) float32 XYXY in the input image.
    embeddings: (M, D) int8 (with `scales`) or float16: dequantised where the loss runs (`teacher_embeddings`).
    scales: (M,) float32 for int8 rows, else None.
    """

    boxes: torch.Tensor
    embeddings: torch.Tensor
    scales: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device) -> "RegionTargets":
        """The rows on `device`, still as stored (int8 rows travel as int8)."""
        return RegionTargets(
            self.boxes.to(device),
            self.embeddings.to(device),
            None if self.scales is None else self.scales.to(device),
        )

    def teacher_embeddings(self) -> torch.Tensor:
        """(M, D) float16, the values the store's `get` returns."""
        return teacher_embeddings(self.embeddings, self.scales)

    @staticmethod
    def cat_embeddings(targets: list["RegionTargets"], device) -> torch.Tensor:
        """(sum M_i, D) float16 teacher embeddings of a batch, dequantised in one op on `device`."""
        emb = torch.cat([t.embeddings for t in targets]).to(device)
        scales = None if targets[0].scales is None else torch.cat([t.scales for t in targets])
        return teacher_embeddings(emb, scales)


def clip_boxes(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, 4) XYXY clipped to a (h, w) image (a copy)."""
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


class RegionStoreSource(TargetSource):
    """The rows of a region-embedding store (`distill.data.region_store`), opened lazily (once per data-loader
    worker), `limit` per image; an image the store lacks gets no rows."""

    def __init__(self, path: str, limit: int | None = None):
        self.path = str(path)
        self.limit = limit
        self._store: RegionEmbeddingStore | None = None

    def __getstate__(self):
        return {"path": self.path, "limit": self.limit, "_store": None}

    @property
    def store(self) -> RegionEmbeddingStore:
        if self._store is None:
            self._store = RegionEmbeddingStore(self.path)
        return self._store

    def __call__(self, image_id, transform_boxes, image_hw: tuple[int, int]) -> RegionTargets:
        store = self.store
        if image_id in store:  # only these rows are read from the map
            boxes, emb, scales = store.get_rows(image_id, limit=self.limit)
            if len(boxes):
                boxes = transform_boxes(boxes.float())
        else:
            boxes, emb, scales = store.empty_rows()
        boxes = clip_boxes(boxes.float().reshape(-1, 4), *image_hw)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        if not bool(keep.all()):
            boxes, emb = boxes[keep], emb[keep]
            scales = None if scales is None else scales[keep]
        return RegionTargets(boxes, emb, scales)
