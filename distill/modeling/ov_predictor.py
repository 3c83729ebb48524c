"""The open-vocabulary box predictor both backends' RoI heads and the ONNX export use: box-head features →
region embeddings → logits against the current vocabulary → the distillation method's scores, and
class-agnostic box deltas. The method (`distill.methods`) is a submodule; this module never names one.

Conventions: N RoIs, F the box head's width, D the embedding width, C classes in the current vocabulary;
logits and scores (N, C + 1) with background LAST (backends with background first permute at their boundary).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..teacher.embeddings import ClassEmbeddings
from ..utils.errors import DistillInputError
from .heads import ClassAgnosticBoxRegressor, RegionEmbeddingHead, TextClassifier


@dataclass
class StepContext:
    """One training step as the RoI heads see it before pooling: what a method's `step_rois` may use.

    targets: per image, what the method's `target_source` attached (on the model's device), or None.
    proposals: per image (P_i, 4) XYXY RPN proposals in input pixels, best first (no gradient), or None.
    objectness: per image (P_i,) their objectness in [0, 1], or None.
    gt_boxes: per image (G_i, 4) XYXY ground-truth boxes in input pixels, or None.
    images: per image (3, h_i, w_i) 0-255 (uint8 or float) in `image_format`'s channel order, the input image
        before normalisation and padding (the frame of the boxes above), where the loader left it (a method that
        reads it asks `rgb_image`), or None where the backend does not hand them over.
    image_format: "RGB" or "BGR".
    image_ids: (B,) int64, the records' image ids (an id that is not an integer: a stable hash of it).
    state: what the method's `step_rois` keeps for its `losses` (this step only).
    """

    targets: list | None = None
    proposals: list[torch.Tensor] | None = None
    objectness: list[torch.Tensor] | None = None
    gt_boxes: list[torch.Tensor] | None = None
    images: list[torch.Tensor] | None = None
    image_format: str = "RGB"
    image_ids: torch.Tensor | None = None
    state: dict = field(default_factory=dict)

    def rgb_image(self, i: int, device=None) -> torch.Tensor:
        """(3, h, w) float32 RGB 0-255 of image i, on `device`."""
        image = self.images[i].to(device).float()
        return image.flip(0) if self.image_format == "BGR" else image


def image_id_tensor(ids: Sequence, device=None) -> torch.Tensor:
    """(B,) int64 ids >= 0 of records' image ids (ints kept; any other id: its crc32)."""
    import zlib

    out = [i if isinstance(i, int) and i >= 0 else zlib.crc32(str(i).encode()) for i in ids]
    return torch.tensor(out, dtype=torch.int64, device=device)


@dataclass
class RoIBatch:
    """One training step's RoIs as the predictor hands them to a method's `losses`.

    features: (R, F) box-head features of the sampled RoIs of all images.
    embeddings: (R, D) their region embeddings (normalised).
    logits: (R, C + 1) against the training vocabulary, background last.
    labels: (R,) in [0, C]; C is background.
    extra_features: (M, F) box-head features of the boxes the method's `extra_rois` asked for, or None.
    targets: per image, what the method's `target_source` attached (on the model's device), or None.
    classifier: the text classifier (vocabulary, temperature, background embedding).
    novel_mask: (C,) bool, True where a vocabulary class is novel.
    embed_head: the predictor's region-embedding head, (K, F) → (K, D).
    context: the step's `StepContext` (with what the method's `step_rois` kept in `state`), or None.
    """

    features: torch.Tensor
    embeddings: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    extra_features: torch.Tensor | None
    targets: list | None
    classifier: TextClassifier
    novel_mask: torch.Tensor
    embed_head: nn.Module
    context: StepContext | None = None


@dataclass
class RoIOutputs:
    """The predictor's outputs at inference for N RoIs: features (N, F), embeddings (N, D), logits (N, C + 1);
    `rois`: the RoIs in input pixels, per image (N_i, 4) XYXY (sum N_i = N) or (boxes (N, 4), image index (N,)),
    and `vlm`: the backbone's region
    embedder of the same forward (`distill.modeling.clip_backbone.VLMRegions`: rois → (N, D')), where the
    backend has them (a frozen teacher tower as backbone), else None."""

    features: torch.Tensor
    embeddings: torch.Tensor
    logits: torch.Tensor
    classifier: TextClassifier
    novel_mask: torch.Tensor
    rois: list | None = None
    vlm: Callable | None = None


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
    """While the block runs, `heads` (anything with `set_vocabulary`, `vocabulary_state`, `restore_vocabulary`:
    the predictor, either backend's RoI heads) score `vocabulary`; their own comes back after."""
    saved = heads.vocabulary_state()
    heads.set_vocabulary(vocabulary, novel_mask)
    try:
        yield heads
    finally:
        heads.restore_vocabulary(saved)


def split_sampled_and_extra(
    x: torch.Tensor, sampled: Sequence[int], extra: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, ...) of RoIs pooled in one call, image by image: image i's `sampled[i]` boxes, then its
    `extra[i]` method boxes → (sampled RoIs of all images, extra RoIs of all images)."""
    parts = torch.split(x, [n for pair in zip(sampled, extra) for n in pair])
    return torch.cat(parts[0::2]), torch.cat(parts[1::2])


class OpenVocabBoxPredictor(nn.Module):
    """(N, F) box-head features → (N, D) region embeddings → (N, C + 1) logits → the method's scores; (N, 4)
    class-agnostic deltas (boxes for classes never seen in training).

    Args:
        feature_dim: F.
        vocabulary: (C, D) class embeddings (or `ClassEmbeddings`) of the training vocabulary.
        method: the distillation method (`distill.methods.DistillMethod`); its `build` adds its heads.
        temperature: logits = cosine / temperature (ViLD: 0.01).
        bg_init_std: the learned background embedding starts as N(0, std).
    """

    def __init__(
        self,
        feature_dim: int,
        vocabulary: ClassEmbeddings | torch.Tensor,
        method: nn.Module,
        temperature: float = 0.01,
        bg_init_std: float = 0.01,
    ):
        super().__init__()
        emb = vocabulary.embeddings if isinstance(vocabulary, ClassEmbeddings) else vocabulary
        names = vocabulary.class_names if isinstance(vocabulary, ClassEmbeddings) else None
        # creation order fixes the random initialisation: text branch, classifier, regressor, then the method's
        self.embed_head = RegionEmbeddingHead(feature_dim, emb.shape[1])
        self.classifier = TextClassifier(emb, temperature, bg_init_std, class_names=names)
        self.box_regressor = ClassAgnosticBoxRegressor(feature_dim)
        self.method = method
        method.build(feature_dim, int(emb.shape[1]))
        # (C,) True where a vocabulary class is novel: the method may score novel classes differently
        self.register_buffer("novel_mask", torch.zeros(len(emb), dtype=torch.bool), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    # ---------------------------------------------------------------- vocabulary
    def set_vocabulary(
        self, vocabulary: ClassEmbeddings | torch.Tensor, novel_mask: torch.Tensor | None = None
    ):
        """Score another vocabulary (e.g. base + novel at test time); `novel_mask` (C,) marks its novel classes."""
        self.classifier.set_vocabulary(vocabulary)
        self.novel_mask = novel_mask_for(self.classifier, novel_mask)

    def vocabulary_state(self) -> tuple:
        return self.classifier.state(), self.novel_mask

    def restore_vocabulary(self, state: tuple) -> None:
        self.classifier.restore(state[0])
        self.novel_mask = state[1]

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, F...) → (features (N, F), embeddings (N, D), logits (N, C + 1))."""
        x = x.flatten(1)
        emb = self.embed_head(x)
        return x, emb, self.classifier(emb)

    def deltas(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) → (N, 4) class-agnostic box deltas."""
        return self.box_regressor(x.flatten(1))

    def scores(
        self, x: torch.Tensor, embeddings: torch.Tensor, logits: torch.Tensor, rois=None, vlm=None
    ) -> torch.Tensor:
        """The method's (N, C + 1) class scores, background last (`rois`, `vlm`: see `RoIOutputs`)."""
        return self.method.scores(
            RoIOutputs(x, embeddings, logits, self.classifier, self.novel_mask, rois, vlm)
        )

    def predict(self, x: torch.Tensor, rois=None, vlm=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: (N, F...) box-head features → (scores (N, C + 1) background last, deltas (N, 4));
        `rois` (per image (N_i, 4)) and `vlm` for methods that score with the backbone (`RoIOutputs`)."""
        x, emb, logits = self(x)
        return self.scores(x, emb, logits, rois, vlm), self.deltas(x)

    # ---------------------------------------------------------------- training
    def extra_rois(self, targets: list | None) -> list[torch.Tensor] | None:
        """The method's per-image (M_i, 4) boxes to pool with the sampled RoIs, or None."""
        return None if targets is None else self.method.extra_rois(targets)

    def step_rois(self, context: StepContext) -> list[torch.Tensor] | None:
        """The method's per-image (M_i, 4) boxes to pool with the sampled RoIs for this step, or None."""
        return self.method.step_rois(context)

    def losses(
        self,
        x_sampled: torch.Tensor,
        labels: torch.Tensor,
        x_extra: torch.Tensor | None,
        targets: list | None,
        context: StepContext | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The method's losses on (R, F) sampled-RoI features with (R,) labels in [0, C] and (M, F) extra-RoI
        features; returns them, the (R, 4) deltas for the backend's box loss and the (R, C + 1) logits."""
        x_sampled = x_sampled.flatten(1)
        x_extra = None if x_extra is None else x_extra.flatten(1)
        x, emb, logits = self(x_sampled)
        batch = RoIBatch(
            x,
            emb,
            logits,
            labels,
            x_extra,
            targets,
            self.classifier,
            self.novel_mask,
            self.embed_head,
            context,
        )
        return self.method.losses(batch), self.deltas(x), logits
