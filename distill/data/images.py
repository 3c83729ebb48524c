"""Reading dataset images."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..utils.errors import DistillInputError


def read_image_rgb(path: str) -> torch.Tensor:
    """(3, H, W) uint8 RGB; DistillInputError naming the file when it is missing or cannot be decoded."""
    if not os.path.isfile(path):
        raise DistillInputError("image not found", path)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DistillInputError("cannot decode image", path)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1).contiguous()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def list_images(spec: str | os.PathLike) -> list[Path]:
    """An image file, or the images of a folder (sorted by name); one clear error when there are none."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DistillInputError("no images in folder", p)
        return files
    if not p.is_file():
        raise DistillInputError("input image not found", p)
    return [p]
