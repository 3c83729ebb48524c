"""Instance masks kept inside their boxes: pasting N masks into a full (H, W) image at once costs N x H x W
floats (100 detections on a 24-megapixel photo: 9.6 GB). `BoxMasks` pastes one detection at a time into its
box only (torchvision's `paste_masks_in_image` arithmetic, so the pixels are the same)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks


class BoxMasks:
    """N instance masks of an (H, W) image, pasted on demand.

    Args:
        probs: (N, 1, M, M) mask probabilities of the mask head, in box coordinates.
        boxes: (N, 4) XYXY boxes in image pixels.
        image_size: (H, W).
    """

    def __init__(
        self, probs: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], padding: int = 1
    ):
        probs, scale = expand_masks(probs, padding=padding)
        self.probs = probs.detach().cpu()
        self.boxes = (
            expand_boxes(boxes.detach().float().cpu(), scale).to(torch.int64)
            if len(boxes)
            else torch.zeros(0, 4, dtype=torch.int64)
        )
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), *self.image_size)

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    def __getitem__(self, idx) -> "BoxMasks":
        out = BoxMasks.__new__(BoxMasks)
        out.probs, out.boxes, out.image_size = self.probs[idx], self.boxes[idx], self.image_size
        if out.probs.ndim == 3:  # an integer index: keep the N axis
            out.probs, out.boxes = out.probs[None], out.boxes[None]
        return out

    def local(self, i: int) -> tuple[int, int, torch.Tensor]:
        """(y0, x0, (h, w) float probabilities) of detection i: its box clipped to the image."""
        b = self.boxes[i].tolist()
        im_h, im_w = self.image_size
        w, h = max(b[2] - b[0] + 1, 1), max(b[3] - b[1] + 1, 1)
        m = F.interpolate(self.probs[i][None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        x0, x1, y0, y1 = max(b[0], 0), min(b[2] + 1, im_w), max(b[1], 0), min(b[3] + 1, im_h)
        if x1 <= x0 or y1 <= y0:
            return 0, 0, m.new_zeros(0, 0)
        return y0, x0, m[y0 - b[1] : y1 - b[1], x0 - b[0] : x1 - b[0]]

    def full(self, i: int, threshold: float = 0.5) -> torch.Tensor:
        """(H, W) bool mask of detection i (one full-size mask at a time)."""
        y0, x0, m = self.local(i)
        out = torch.zeros(self.image_size, dtype=torch.bool)
        out[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m > threshold
        return out

    def dense(self) -> torch.Tensor:
        """(N, H, W) float probabilities, as paste_masks_in_image gives (only for small images)."""
        out = torch.zeros(self.shape)
        for i in range(len(self)):
            y0, x0, m = self.local(i)
            out[i, y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
        return out


def iter_local_masks(masks, threshold: float = 0.5) -> Iterator[tuple[int, int, np.ndarray]]:
    """(y0, x0, (h, w) bool) per detection, from BoxMasks or a dense (N, H, W) tensor / array."""
    if isinstance(masks, BoxMasks):
        for i in range(len(masks)):
            y0, x0, m = masks.local(i)
            yield y0, x0, (m > threshold).numpy()
        return
    for m in masks:
        m = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        yield 0, 0, (m > threshold) if m.dtype != bool else m


def iter_full_masks(masks, threshold: float = 0.5) -> Iterator[np.ndarray]:
    """(H, W) uint8 0/1 per detection, one at a time (for RLE encoding)."""
    h, w = masks.shape[1:]
    for y0, x0, m in iter_local_masks(masks, threshold):
        full = np.zeros((h, w), np.uint8)
        full[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
        yield full
