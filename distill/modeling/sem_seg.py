"""Open-vocabulary semantic segmentation, framework-free: a Panoptic-FPN semantic branch that outputs a D-dim
embedding per pixel, scored against class text embeddings (and a learned background embedding) over a
temperature; cross entropy on base-class pixels (novel pixels ignored, the ZS3Net / SPNet protocol) and
pixel distillation to the teacher's dense targets on all pixels.

Label spaces: datasets store *pixel values* (e.g. 0 background, category id, 255 ignore); the classifier
works in *vocabulary indices* (0..C-1 the classes, C the background, last as in `TextClassifier`). A
`SemSegLabelMap` converts between them; pixel values of classes outside the vocabulary (novel classes during
training) become the ignore value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.errors import DistillInputError
from .heads import TextClassifier
from .losses import pixel_distill_loss


# ---------------------------------------------------------------- labels
@dataclass
class SemSegLabelMap:
    """Pixel values ↔ vocabulary indices.

    Args:
        class_values: pixel value of each vocabulary class, in vocabulary order.
        background_value: pixel value of the background (index C), or None when the dataset has none.
        ignore_value: pixel value never scored; every other value not listed also maps to it.
    """

    class_values: Sequence[int]
    background_value: int | None = 0
    ignore_value: int = 255

    def __post_init__(self):
        self.class_values = [int(v) for v in self.class_values]
        values = self.class_values + ([] if self.background_value is None else [int(self.background_value)])
        if len(set(values)) != len(values):
            raise DistillInputError(f"pixel values of the vocabulary classes and background repeat: {values}")
        if self.ignore_value in values:
            raise DistillInputError(
                f"the ignore value {self.ignore_value} is also the pixel value of a class "
                "(or of the background); choose another ignore value"
            )
        if any(v < 0 for v in values):
            raise DistillInputError(f"pixel values must be >= 0, got {values}")

    @property
    def num_classes(self) -> int:
        return len(self.class_values)

    def to_index(self, labels: torch.Tensor) -> torch.Tensor:
        """(..., H, W) pixel values → vocabulary indices (background C), others → ignore_value."""
        size = max(self.class_values + [self.background_value or 0]) + 1
        lut = torch.full((size,), self.ignore_value, dtype=torch.long, device=labels.device)
        lut[torch.tensor(self.class_values, dtype=torch.long, device=labels.device)] = torch.arange(
            self.num_classes, device=labels.device
        )
        if self.background_value is not None:
            lut[self.background_value] = self.num_classes
        labels = labels.long()
        inside = (labels >= 0) & (labels < size)
        return torch.where(inside, lut[labels.clamp(0, size - 1)], torch.full_like(labels, self.ignore_value))

    def to_value(self, index: torch.Tensor) -> torch.Tensor:
        """(..., H, W) vocabulary indices (argmax of the logits) → pixel values."""
        vals = self.class_values + ([] if self.background_value is None else [self.background_value])
        return torch.tensor(vals, dtype=torch.long, device=index.device)[index.long()]


def check_sem_seg_labels(
    labels: np.ndarray,
    path: str,
    num_values: int,
    ignore_value: int = 255,
    image_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Checks of a decoded label map, each a `DistillInputError` naming `path`.

    Args:
        labels: (H, W) integer pixel values.
        num_values: valid values are 0..num_values-1 (and the ignore value).
        image_hw: the image's (H, W); a label map of another size is an error.
    Returns:
        `labels` as int64.
    """
    if labels.ndim != 2:
        raise DistillInputError(f"semantic labels must be (H, W), got shape {labels.shape}", path)
    if image_hw is not None and tuple(labels.shape) != tuple(image_hw):
        raise DistillInputError(
            f"label size {labels.shape[1]}x{labels.shape[0]} differs from the image's "
            f"{image_hw[1]}x{image_hw[0]}",
            path,
        )
    if 0 <= ignore_value < num_values:
        raise DistillInputError(
            f"the ignore value {ignore_value} lies inside the {num_values} class values, so "
            "a class would never be scored",
            path,
        )
    labels = labels.astype(np.int64)
    bad = (labels >= num_values) & (labels != ignore_value)
    if bad.any():
        ys, xs = np.nonzero(bad)
        raise DistillInputError(
            f"label value {int(labels[bad].max())} at (x={xs[0]}, y={ys[0]}) exceeds the "
            f"{num_values} classes (ignore value is {ignore_value})",
            path,
        )
    if labels.size and (labels == ignore_value).all():
        raise DistillInputError(
            f"every pixel has the ignore value {ignore_value}: wrong ignore value or an empty label map", path
        )
    return labels


# ---------------------------------------------------------------- head
def _norm(name: str, channels: int) -> nn.Module:
    if name == "GN":
        return nn.GroupNorm(min(32, channels), channels)
    if name == "BN":
        return nn.BatchNorm2d(channels)
    if name in ("", "none"):
        return nn.Identity()
    raise DistillInputError(f"semantic head norm must be GN, BN or empty, got {name!r}")


class SemSegEmbedHead(nn.Module):
    """Panoptic FPN's semantic branch ending in a D-dim embedding instead of class logits.

    Each level of stride s goes through max(1, log2(s / common_stride)) blocks of 3x3 conv + norm + ReLU,
    each followed by a 2x bilinear upsampling while above the common stride; the levels are summed and a
    1x1 conv projects to D.

    Args:
        in_channels: channels of each input level; in_strides: their strides (4, 8, 16, 32 for P2-P5).
    Input: list of (B, C_l, H / s_l, W / s_l). Output: (B, D, H / common_stride, W / common_stride),
        L2-normalised over D.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        embed_dim: int,
        conv_dims: int = 64,
        common_stride: int = 4,
        norm: str = "GN",
    ):
        super().__init__()
        if len(in_channels) != len(in_strides) or not in_strides:
            raise DistillInputError(f"{len(in_channels)} input channel counts for {len(in_strides)} strides")
        self.in_strides = [int(s) for s in in_strides]
        self.common_stride = int(common_stride)
        self.scale_heads = nn.ModuleList()
        for ch, stride in zip(in_channels, self.in_strides):
            n = max(1, int(math.log2(stride) - math.log2(self.common_stride)))
            layers: list[nn.Module] = []
            for k in range(n):
                conv = nn.Conv2d(
                    ch if k == 0 else conv_dims, conv_dims, 3, padding=1, bias=norm in ("", "none")
                )
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                layers += [conv, _norm(norm, conv_dims), nn.ReLU(inplace=True)]
                if stride != self.common_stride:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.predictor = nn.Conv2d(conv_dims, embed_dim, 1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.scale_heads):
            raise ValueError(f"expected {len(self.scale_heads)} feature levels, got {len(features)}")
        x = None
        for f, head in zip(features, self.scale_heads):
            y = head(f)
            x = y if x is None else x + y[..., : x.shape[-2], : x.shape[-1]]
        return F.normalize(self.predictor(x), dim=1)


def pixel_logits(
    classifier: TextClassifier, embeddings: torch.Tensor, background: bool = True
) -> torch.Tensor:
    """(B, D, h, w) normalised embeddings → (B, C + 1, h, w) logits, background last (or (B, C, h, w))."""
    b, d, h, w = embeddings.shape
    logits = classifier(embeddings.permute(0, 2, 3, 1).reshape(-1, d))
    if not background:
        logits = logits[:, :-1]
    return logits.view(b, h, w, -1).permute(0, 3, 1, 2)


# ---------------------------------------------------------------- losses
def sem_seg_ce_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_value: int = 255) -> torch.Tensor:
    """Cross entropy of (B, K, h, w) logits upsampled (bilinear) to (B, H, W) vocabulary-index labels.

    Pixels with `ignore_value` (novel classes during training, edges, padding) do not count; the mean is over
    the rest (0 with gradient when there are none).
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if not (labels != ignore_value).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_value)


def image_pixel_distill_loss(
    student: torch.Tensor,
    teacher: Sequence[torch.Tensor] | torch.Tensor,
    image_sizes: Sequence[tuple[int, int]],
    stride: int,
    kind: str = "l1",
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel distillation over a padded batch.

    Args:
        student: (B, D, h, w) student embeddings of the padded batch at 1 / stride.
        teacher: B tensors (D, h_i, w_i) (any resolution; resized bilinearly to the student's grid of the
            unpadded image); cells where the teacher is all zeros (no painted region) do not count.
        image_sizes: B unpadded (H, W).
        keep: optional (B, h, w) bool on the student's grid; False cells do not count.
    Returns:
        scalar `pixel_distill_loss` averaged over every valid cell of the batch.
    """
    s_list, t_list, v_list = [], [], []
    for i, (hh, ww) in enumerate(image_sizes):
        h, w = math.ceil(hh / stride), math.ceil(ww / stride)
        t = teacher[i].to(student.device, torch.float32)
        if t.shape[-2:] != (h, w):
            t = F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        s_list.append(student[i, :, :h, :w].flatten(1))
        t_list.append(t.flatten(1))
        v = t.norm(dim=0) > 1e-6
        v_list.append((v & keep[i, :h, :w] if keep is not None else v).flatten())
    s = torch.cat(s_list, 1).t()[..., None, None]  # (N, D, 1, 1): pixel_distill_loss's layout
    t = torch.cat(t_list, 1).t()[..., None, None]
    valid = torch.cat(v_list)[:, None, None]
    return pixel_distill_loss(s, t, kind, valid)


# ---------------------------------------------------------------- predictor
class OpenVocabSemSegPredictor(nn.Module):
    """Embedding head + text classifier + label map + losses, shared by both backends.

    Args:
        embed_head: `SemSegEmbedHead`.
        classifier: `TextClassifier` holding the training vocabulary (base classes).
        label_map: pixel values of that vocabulary and of the background.
        ce_weight: weight of `loss_sem_seg`; pixel_loss_weight: of `loss_pixel_distill` (0 = CE only).
        distill_background: also distill cells whose pixels are all labelled background. Off by default: the
            teacher has no "background" text, its targets there resemble some class (often a novel one), and
            pulling background pixels onto them makes that class win everywhere once it joins the vocabulary.
    """

    def __init__(
        self,
        embed_head: SemSegEmbedHead,
        classifier: TextClassifier,
        label_map: SemSegLabelMap,
        ce_weight: float = 1.0,
        pixel_loss_weight: float = 1.0,
        pixel_loss: str = "l1",
        distill_background: bool = False,
    ):
        super().__init__()
        if pixel_loss not in ("l1", "cosine"):
            raise DistillInputError(f"pixel loss must be 'l1' or 'cosine', got {pixel_loss!r}")
        if label_map.num_classes != classifier.num_classes:
            raise DistillInputError(
                f"{label_map.num_classes} label values for {classifier.num_classes} vocabulary classes"
            )
        self.embed_head = embed_head
        self.classifier = classifier
        self.label_map = label_map
        self.ce_weight = float(ce_weight)
        self.pixel_loss_weight = float(pixel_loss_weight)
        self.pixel_loss = pixel_loss
        self.distill_background = bool(distill_background)

    @property
    def ignore_value(self) -> int:
        return self.label_map.ignore_value

    @property
    def background(self) -> bool:
        return self.label_map.background_value is not None

    def set_vocabulary(self, vocabulary, class_values: Sequence[int]) -> None:
        """Score another vocabulary ((C, D) tensor or `ClassEmbeddings`) whose classes have these pixel values."""
        lm = SemSegLabelMap(class_values, self.label_map.background_value, self.label_map.ignore_value)
        n = vocabulary.embeddings.shape[0] if hasattr(vocabulary, "embeddings") else vocabulary.shape[0]
        if lm.num_classes != n:
            raise DistillInputError(f"{lm.num_classes} label values for a vocabulary of {n} classes")
        self.classifier.set_vocabulary(vocabulary)
        self.label_map = lm

    def forward(
        self,
        features: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        labels: torch.Tensor | None = None,
        pixel_targets: Sequence[torch.Tensor] | None = None,
    ):
        """
        Args:
            features: P2-P5 (ordered as the head's strides) of a padded (B, 3, H, W) batch.
            image_sizes: B unpadded (H_i, W_i).
            labels: (B, H, W) pixel values, padded with the ignore value (training).
            pixel_targets: B teacher targets (D, h_i, w_i) (training with pixel distillation).
        Returns:
            training: (None, {"loss_sem_seg", ["loss_pixel_distill"]});
            inference: ((B, K, H, W) logits at the padded input size, K = C + 1 with background last), {}.
        """
        emb = self.embed_head(features)
        logits = pixel_logits(self.classifier, emb, self.background)
        if not self.training:
            stride = self.embed_head.common_stride
            size = (emb.shape[-2] * stride, emb.shape[-1] * stride)
            return F.interpolate(logits, size=size, mode="bilinear", align_corners=False), {}
        if labels is None:
            raise ValueError("training needs labels")
        losses = {
            "loss_sem_seg": self.ce_weight
            * sem_seg_ce_loss(logits, self.label_map.to_index(labels), self.ignore_value)
        }
        if self.pixel_loss_weight > 0:
            if pixel_targets is None:
                raise DistillInputError(
                    "pixel distillation is on (MODEL.DISTILL.PIXEL_LOSS_WEIGHT > 0) but no "
                    "dense teacher targets were given"
                )
            losses["loss_pixel_distill"] = self.pixel_loss_weight * image_pixel_distill_loss(
                emb,
                pixel_targets,
                image_sizes,
                self.embed_head.common_stride,
                self.pixel_loss,
                self._not_background(labels, emb.shape[-2:]),
            )
        return None, losses

    def _not_background(self, labels: torch.Tensor, hw) -> torch.Tensor | None:
        """(B, h, w) bool: cells of the student's grid holding any pixel not labelled background."""
        if self.distill_background or not self.background:
            return None
        s = self.embed_head.common_stride
        fg = (labels != self.label_map.background_value).float()[:, None]
        keep = F.max_pool2d(fg, s, s, ceil_mode=True)[:, 0] > 0
        return keep[:, : hw[0], : hw[1]]

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) logits → (B, H, W) pixel values of the current vocabulary."""
        return self.label_map.to_value(logits.argmax(1))
