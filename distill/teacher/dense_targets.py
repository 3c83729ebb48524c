"""Dense teacher targets for pixel distillation, computed online or cached per image.

Two kinds:
- "pixels": the teacher's MaskCLIP-style `encode_pixels` on the image, upscaled by `input_scale` first (a
  stride-32 ResNet teacher sees a 128-px image as a 4x4 grid; upscaling both refines the grid and shows
  objects at the size the teacher was trained on).
- "windows": square sliding windows of several sizes, each embedded as a crop with `encode_regions`, the
  embeddings painted back onto the pixels each window covers (Gaussian weights centred on the window) and
  re-normalised.
- "regions": the same painting for given boxes per image (class-agnostic proposals, e.g. the ViLD RPN's
  `proposals_train.json` of the quickstart), cropped ViLD-style (1x and 1.5x, centre squares); cells no
  box reaches are zero and get no distillation. The ViLD step's region-embedding store already holds these
  crops' embeddings: `open_region_store` + `dense_targets_from_store` paint from it without cropping again.

Targets are (D, ceil(H / stride), ceil(W / stride)) L2-normalised over D; the cache stores them as fp16.

Cache layout (one folder per teacher + settings, so two runs that share them share the files)::

    cache_root/<key>/meta.json          teacher provenance, kind and settings (written first)
    cache_root/<key>/<image_id>.pt      {"image_id", "file_name", "hw", "targets": (D, h, w) fp16}, atomic
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..data.images import read_image_rgb
from ..data.region_store import RegionEmbeddingStore
from ..utils.errors import DistillInputError
from ..utils.io import atomic_write_bytes, atomic_write_json, dumps_json, read_json
from ..utils.progress import job_progress
from .teacher import check_boxes

logger = logging.getLogger(__name__)

DENSE_TARGET_KINDS = ("pixels", "windows", "regions")
FORMAT = "distill.dense_targets/1"


@dataclass(frozen=True)
class DenseTargetConfig:
    """How dense teacher targets are made (every field is part of the cache key)."""

    kind: str = "windows"
    stride: int = 8  # targets are stored at 1 / stride of the image size
    input_scale: float = 2.0  # "pixels": image upscaled by this before encode_pixels
    window_sizes: tuple[int, ...] = (32, 48, 64)  # "windows": side of the square windows, in image pixels
    window_stride: int = 16  # "windows": step between window origins
    window_scales: tuple[float, ...] = (1.0,)  # crop scales per window (ViLD uses 1x and 1.5x for boxes)
    sigma_frac: float = 0.35  # Gaussian paint weight, sigma = sigma_frac × window side
    region_scales: tuple[float, ...] = (1.0, 1.5)  # "regions": crop scales per box (ViLD's)
    region_geometry: str = "center"  # "regions": crop geometry (see distill.teacher.crops)
    proposals_sha256: str = ""  # "regions": hash of the boxes' source file, so a new file is a new cache

    def __post_init__(self):
        if self.kind not in DENSE_TARGET_KINDS:
            raise DistillInputError(
                f"dense target kind must be one of {DENSE_TARGET_KINDS}, got {self.kind!r}"
            )
        if self.stride < 1 or self.window_stride < 1 or self.input_scale <= 0 or not self.window_sizes:
            raise DistillInputError(f"bad dense target settings {self}")
        object.__setattr__(self, "window_sizes", tuple(int(s) for s in self.window_sizes))
        object.__setattr__(self, "window_scales", tuple(float(s) for s in self.window_scales))
        object.__setattr__(self, "region_scales", tuple(float(s) for s in self.region_scales))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def target_hw(height: int, width: int, stride: int) -> tuple[int, int]:
    return math.ceil(height / stride), math.ceil(width / stride)


def window_boxes(height: int, width: int, sizes: Sequence[int], stride: int) -> torch.Tensor:
    """(N, 4) XYXY square windows of each size, origins every `stride` pixels, the last flush with the edge."""
    out = []
    for s in sizes:
        s_h, s_w = min(s, height), min(s, width)
        ys = sorted(set(list(range(0, height - s_h + 1, stride)) + [height - s_h]))
        xs = sorted(set(list(range(0, width - s_w + 1, stride)) + [width - s_w]))
        for y in ys:
            for x in xs:
                out.append((x, y, x + s_w, y + s_h))
    return torch.tensor(out, dtype=torch.float32).view(-1, 4)


def regions_to_dense(
    embeddings: torch.Tensor,
    boxes: torch.Tensor,
    height: int,
    width: int,
    stride: int,
    sigma_frac: float = 0.35,
) -> torch.Tensor:
    """Paint region embeddings back onto pixels.

    Args:
        embeddings: (N, D) region embeddings.
        boxes: (N, 4) XYXY in image pixels.
        sigma_frac: each region weighs a pixel by a Gaussian of its distance to the box centre (sigma =
            sigma_frac × box side, per axis), zero outside the box: a pixel takes mostly the embedding of
            the regions centred on it.
    Returns:
        (D, h, w), h = ceil(H / stride), L2-normalised over D; zeros where no box reaches.
    """
    h, w = target_hw(height, width, stride)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * stride  # cell centres in image pixels
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
    b = boxes.float()
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    sx = ((b[:, 2] - b[:, 0]) * sigma_frac).clamp_min(1e-3)
    sy = ((b[:, 3] - b[:, 1]) * sigma_frac).clamp_min(1e-3)
    wy = torch.exp(-0.5 * ((ys[None] - cy[:, None]) / sy[:, None]) ** 2)  # (N, h)
    wy = wy * ((ys[None] >= b[:, 1:2]) & (ys[None] <= b[:, 3:4]))
    wx = torch.exp(-0.5 * ((xs[None] - cx[:, None]) / sx[:, None]) ** 2)  # (N, w)
    wx = wx * ((xs[None] >= b[:, 0:1]) & (xs[None] <= b[:, 2:3]))
    dense = torch.einsum("nd,nh,nw->dhw", embeddings.float(), wy, wx)
    return F.normalize(dense, dim=0)


def _as_float_image(image: torch.Tensor) -> torch.Tensor:
    if image.ndim != 3 or image.shape[0] != 3:
        raise DistillInputError(f"image must be (3, H, W), got {tuple(image.shape)}")
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


def dense_targets_pixels(
    teacher, image: torch.Tensor, stride: int = 8, input_scale: float = 2.0
) -> torch.Tensor:
    """(3, H, W) RGB (uint8 or [0, 1]) → (D, ceil(H/stride), ceil(W/stride)) from `teacher.encode_pixels`."""
    img = _as_float_image(image)
    height, width = img.shape[1:]
    x = img[None]
    if input_scale != 1.0:
        x = F.interpolate(x, scale_factor=input_scale, mode="bilinear", align_corners=False, antialias=True)
    dense = teacher.encode_pixels(x.clamp(0, 1)).float()  # (1, D, h', w')
    dense = F.interpolate(dense, size=target_hw(height, width, stride), mode="bilinear", align_corners=False)
    return F.normalize(dense[0], dim=0)


def dense_targets_regions(
    teacher,
    image: torch.Tensor,
    boxes: torch.Tensor,
    stride: int = 8,
    scales: Sequence[float] = (1.0,),
    sigma_frac: float = 0.35,
    geometry: str = "stretch",
) -> torch.Tensor:
    """Teacher crops of `boxes` ((N, 4) XYXY) painted back: (D, ceil(H/stride), ceil(W/stride))."""
    img = _as_float_image(image)
    if boxes.shape[0] == 0:
        return torch.zeros(teacher.dim, *target_hw(img.shape[1], img.shape[2], stride))
    emb = teacher.encode_regions([img], [boxes], scales=scales, geometry=geometry)
    return regions_to_dense(emb.cpu(), boxes, img.shape[1], img.shape[2], stride, sigma_frac)


def dense_targets_windows(teacher, image: torch.Tensor, cfg: DenseTargetConfig) -> torch.Tensor:
    """Sliding-window crops painted back: (D, ceil(H/stride), ceil(W/stride))."""
    height, width = _as_float_image(image).shape[1:]
    boxes = window_boxes(height, width, cfg.window_sizes, cfg.window_stride)
    return dense_targets_regions(teacher, image, boxes, cfg.stride, cfg.window_scales, cfg.sigma_frac)


def compute_dense_targets(
    teacher, image: torch.Tensor, cfg: DenseTargetConfig, boxes: torch.Tensor | None = None
) -> torch.Tensor:
    """One image (3, H, W) → its (D, h, w) targets of `cfg.kind`, float32 on the CPU.

    boxes: (N, 4) XYXY, required by the "regions" kind (boxes outside the image or under 1 px are dropped).
    """
    if cfg.kind == "pixels":
        out = dense_targets_pixels(teacher, image, cfg.stride, cfg.input_scale)
    elif cfg.kind == "windows":
        out = dense_targets_windows(teacher, image, cfg)
    else:
        if boxes is None:
            raise DistillInputError('dense targets of kind "regions" need boxes (proposals) for every image')
        boxes = boxes.float().view(-1, 4)
        boxes = boxes[check_boxes(boxes, image.shape[1], image.shape[2])]
        out = dense_targets_regions(
            teacher, image, boxes, cfg.stride, cfg.region_scales, cfg.sigma_frac, cfg.region_geometry
        )
    return out.cpu()


def open_region_store(root: str | os.PathLike, teacher, cfg: DenseTargetConfig):
    """The region-embedding store at `root` for "regions" targets; one clear error unless `teacher` made it with
    cfg's crop scales and geometry (then its embeddings are the targets' crops, already computed)."""
    store = RegionEmbeddingStore(root, expected_dim=teacher.dim)
    want = {
        "teacher": teacher.provenance()["teacher"],
        "scales": list(cfg.region_scales),
        "geometry": cfg.region_geometry,
    }
    bad = [k for k, v in want.items() if store.meta.get(k) != v]
    if bad:
        raise DistillInputError(
            f"the region store was made with another {', '.join(bad)} than the dense targets "
            f"ask for ({ {k: store.meta.get(k) for k in bad} } vs { {k: want[k] for k in bad} })",
            root,
        )
    return store


def dense_targets_from_store(
    store, image_id, height: int, width: int, cfg: DenseTargetConfig
) -> torch.Tensor:
    """ "regions" targets (D, ceil(H/stride), ceil(W/stride)) of one image from a store's boxes and embeddings."""
    boxes, emb = store[image_id]
    if boxes.shape[0] == 0:
        return torch.zeros(store.dim, *target_hw(height, width, cfg.stride))
    return regions_to_dense(emb, boxes, height, width, cfg.stride, cfg.sigma_frac)


def _cache_key(provenance: dict, cfg: DenseTargetConfig) -> str:
    blob = dumps_json({"teacher": provenance, "targets": cfg.to_dict(), "format": FORMAT})
    return f"{cfg.kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


class DenseTargetCache:
    """Per-image dense targets on disk, made on first use; safe to share between runs and processes
    (every file is written atomically; two writers of one image write the same bytes).

    Args:
        root: cache root; the files go to `root/<kind>-<hash of teacher and settings>/`.
        teacher: a `distill.teacher.Teacher` (only needed to fill missing entries).
        cfg: the target settings.
    """

    def __init__(self, root: str | os.PathLike, teacher, cfg: DenseTargetConfig):
        self.cfg = cfg
        self.teacher = teacher
        prov = teacher.provenance()["teacher"]
        self.dir = Path(root) / _cache_key(prov, cfg)
        self.meta = {"format": FORMAT, "teacher": prov, "dim": teacher.dim, "targets": cfg.to_dict()}
        meta_path = self.dir / "meta.json"
        if meta_path.is_file():
            old = read_json(meta_path, what="dense target cache meta")
            if old != self.meta:
                raise DistillInputError(
                    "dense target cache was made with other settings or another teacher; "
                    "delete it or choose another cache root",
                    meta_path,
                )
        else:
            atomic_write_json(meta_path, self.meta, indent=1)

    def path(self, image_id) -> Path:
        return self.dir / f"{image_id}.pt"

    def get(
        self,
        image_id,
        image: torch.Tensor | None = None,
        file_name: str | None = None,
        boxes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(D, h, w) fp16 targets of one image: read from the cache, else computed from `image` (or the
        file; `boxes` for the "regions" kind) and stored."""
        p = self.path(image_id)
        if p.is_file():
            return self._read(p, image_id)
        if image is None:
            if file_name is None:
                raise DistillInputError(f"no cached dense targets for image {image_id} and no image given")
            image = read_image_rgb(file_name)
        targets = compute_dense_targets(self.teacher, image, self.cfg, boxes).half()
        buf = io.BytesIO()
        torch.save(
            {"image_id": image_id, "file_name": file_name, "hw": list(image.shape[1:]), "targets": targets},
            buf,
        )
        atomic_write_bytes(p, buf.getvalue())
        return targets

    def _read(self, p: Path, image_id) -> torch.Tensor:
        try:
            rec = torch.load(p, map_location="cpu", weights_only=True)
            t = rec["targets"]
        except Exception as e:  # noqa: BLE001 - any unreadable cache entry is one clear error
            raise DistillInputError(
                f"unreadable dense target cache entry ({e}); delete it to recompute", p
            ) from None
        if t.ndim != 3 or t.shape[0] != self.meta["dim"] or rec.get("image_id") != image_id:
            raise DistillInputError(
                f"dense target cache entry has shape {tuple(t.shape)} / image "
                f"{rec.get('image_id')!r}; expected dim {self.meta['dim']}, image {image_id}",
                p,
            )
        return t

    def build(self, dataset_dicts: Sequence[dict], boxes: dict | None = None, progress: bool = False) -> dict:
        """Fill the cache for every dict ("image_id", "file_name"); `boxes`: {image_id: (N, 4)} for the
        "regions" kind. Returns {image_id: (D, h, w) fp16}."""

        out = {}
        for d in job_progress(dataset_dicts, progress, desc=f"dense targets ({self.cfg.kind})", unit="img"):
            b = None if boxes is None else boxes.get(d["image_id"], torch.zeros(0, 4))
            out[d["image_id"]] = self.get(d["image_id"], file_name=d["file_name"], boxes=b)
        return out
