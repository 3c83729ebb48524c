"""Reading dataset images."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..utils.errors import DistillInputError

_JPEG_START, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def check_image_complete(path: str | os.PathLike, what: str = "image") -> None:
    """DistillInputError when a JPEG or PNG file is cut short. OpenCV decodes a truncated JPEG with only a libjpeg
    warning on stderr (the missing rows grey), so a partial picture would pass as whole. The test: the file
    ends with its end marker (JPEG EOI, PNG IEND; trailing zero padding allowed); a file that does not, because
    bytes follow the marker or because it is cut, is decoded in full by PIL, which refuses a truncated one.
    Other formats pass (their decoders fail outright)."""
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
        tail = f.read().rstrip(b"\x00")
    if head.startswith(_JPEG_START):
        whole = tail.endswith(_JPEG_END)
    elif head.startswith(_PNG_START):
        whole = tail.endswith(_PNG_END)
    else:
        return
    if not whole and not _decodes_in_full(path):
        raise DistillInputError(f"truncated or corrupt {what} file (it would decode only in part)", path)


def _decodes_in_full(path: str | os.PathLike) -> bool:
    from PIL import Image, ImageFile

    allow = ImageFile.LOAD_TRUNCATED_IMAGES  # a library may have switched it on: PIL would then pad silently
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = allow


def read_image_rgb(path: str | os.PathLike) -> torch.Tensor:
    """(3, H, W) uint8 RGB; DistillInputError naming the file when it is missing, cannot be decoded, or is cut
    short (`check_image_complete`)."""
    path = str(path)
    if not os.path.isfile(path):
        raise DistillInputError("image not found", path)
    check_image_complete(path)
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
