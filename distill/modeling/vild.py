"""ViLD pieces both backends share: the split of sampled and distillation RoIs, the ViLD loss terms, the
novel-class mask and the switch to another vocabulary (plain values in; the config readers that feed them are
`distill.integrations.shared`).

A backend's RoI heads (torchvision or detectron2) expose `classifier` (a `TextClassifier`), `novel_mask` (C,),
`set_vocabulary(vocabulary, novel_mask)`, `vocabulary_state()` and `restore_vocabulary(state)`;
`using_vocabulary` works on any of them.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from ..teacher.embeddings import ClassEmbeddings
from ..utils.errors import DistillInputError
from .heads import TextClassifier
from .losses import vild_image_loss, vild_text_loss


# ---------------------------------------------------------------- vocabularies
def novel_mask_for(classifier: TextClassifier, novel_mask: torch.Tensor | None) -> torch.Tensor:
    """(C,) bool on the classifier's device: True where a vocabulary class is novel (all False when None)."""
    n = classifier.num_classes
    mask = torch.zeros(n, dtype=torch.bool) if novel_mask is None else torch.as_tensor(novel_mask).bool()
    if mask.shape != (n,):
        raise DistillInputError(f"novel_mask must have shape ({n},), got {tuple(mask.shape)}")
    return mask.to(classifier.bg_embedding.device)


@contextlib.contextmanager
def using_vocabulary(
    heads, vocabulary: ClassEmbeddings | torch.Tensor, novel_mask: torch.Tensor | None = None
):
    """While the block runs, `heads` score `vocabulary` (e.g. the test vocabulary); their own comes back after."""
    saved = heads.vocabulary_state()
    heads.set_vocabulary(vocabulary, novel_mask)
    try:
        yield heads
    finally:
        heads.restore_vocabulary(saved)


# ---------------------------------------------------------------- training
def split_sampled_and_distill(
    x: torch.Tensor, sampled: Sequence[int], distill: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, ...) of RoIs pooled in one call, image by image: image i's `sampled[i]` boxes, then its
    `distill[i]` distillation boxes → (sampled RoIs of all images, distillation RoIs of all images)."""
    parts = torch.split(x, [n for pair in zip(sampled, distill) for n in pair])
    return torch.cat(parts[0::2]), torch.cat(parts[1::2])


def vild_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    novel_mask: torch.Tensor,
    novel_logit_mode: str,
    text_loss_weight: float,
    student: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
    image_loss_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The ViLD terms: {"loss_vild_text"} on the sampled RoIs ((N, C + 1) logits, background last; (N,) labels in
    [0, C]) and, when `student` (M, D) and `teacher` (M, D) embeddings of the distillation RoIs are given,
    {"loss_vild_image"}. `novel_mask` (C,) applies only when it marks a class (`vild_text_loss`)."""
    novel = novel_mask if novel_mask.any() else None
    losses = {"loss_vild_text": text_loss_weight * vild_text_loss(logits, labels, novel, novel_logit_mode)}
    if student is not None:
        losses["loss_vild_image"] = image_loss_weight * vild_image_loss(student, teacher.to(student.device))
    return losses
