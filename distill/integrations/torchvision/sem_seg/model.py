"""The open-vocabulary semantic segmenter on torchvision parts (ResNet-FPN + the core semantic predictor), its
start from a detector's backbone, and its checkpoints."""

from __future__ import annotations

import io
import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ....modeling.sem_seg import OpenVocabSemSegPredictor
from ....teacher.embeddings import ClassEmbeddings
from ....utils.checkpoint import checkpoint_meta, load_torch_file, read_checkpoint
from ....utils.errors import DistillInputError
from ....utils.io import atomic_write_bytes
from ...shared import build_sem_seg_predictor
from ..builders import STRIDES, build_backbone
from ..meta_arch import normalize_and_pad

NO_STUDENT = (
    "MODEL.WEIGHTS (the detector whose backbone the segmenter starts from) not found: run the "
    'quickstart\'s vild stage first, or set MODEL.WEIGHTS "" to train from scratch'
)


class OpenVocabSegmenter(nn.Module):
    """ResNet-FPN backbone + `OpenVocabSemSegPredictor`.

    forward(images (B, 3, H, W) float RGB 0-255 or a list of (3, H_i, W_i), labels (B, H, W) pixel values,
    pixel_targets B × (D, h, w)) → training: losses dict; inference: (B, K, H, W) logits at the input size.
    """

    def __init__(
        self,
        backbone: nn.Module,
        predictor: OpenVocabSemSegPredictor,
        pixel_mean,
        pixel_std,
        size_divisible: int = 32,
        flip_test: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.predictor = predictor
        self.flip_test = flip_test  # predict_sem_seg averages the image's and its mirror's probabilities
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        self.size_divisible = size_divisible

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _batch(self, images, labels):
        x, sizes = normalize_and_pad(list(images), self.pixel_mean, self.pixel_std, self.size_divisible)
        lab = None
        if labels is not None:
            lab = torch.full(
                (x.shape[0], *x.shape[-2:]), self.predictor.ignore_value, dtype=torch.long, device=self.device
            )
            for k, (h, w) in enumerate(sizes):
                lab[k, :h, :w] = labels[k][:h, :w].to(self.device)
        return x, lab, sizes

    def forward(self, images, labels=None, pixel_targets=None, body_features=None):
        """body_features: the ResNet's outputs of this padded batch ({"0".."3": (B, C_l, H / s_l, W / s_l)}),
        precomputed while it is frozen (`body_feature_cache`); None runs it."""
        x, lab, sizes = self._batch(images, labels)
        feats = self.backbone(x) if body_features is None else self.backbone.fpn(body_features)
        features = [feats[k] for k in ("0", "1", "2", "3")]
        logits, losses = self.predictor(features, sizes, lab, pixel_targets)
        return losses if self.training else logits


def build_sem_seg_model(
    cfg, vocabulary: ClassEmbeddings, class_values: Sequence[int] | None = None
) -> OpenVocabSegmenter:
    """The segmenter for `vocabulary` (the training vocabulary: base classes).

    class_values: pixel value of each vocabulary class (default MODEL.DISTILL.SEM_SEG.TRAIN_LABEL_VALUES, else
    0..C-1).
    """
    backbone = build_backbone(cfg)
    ch = backbone.out_channels
    predictor = build_sem_seg_predictor(cfg, vocabulary, [ch] * 4, STRIDES, class_values)
    return OpenVocabSegmenter(
        backbone,
        predictor,
        cfg.MODEL.PIXEL_MEAN,
        cfg.MODEL.PIXEL_STD,
        flip_test=bool(cfg.TEST.AUG.ENABLED and cfg.TEST.AUG.FLIP),
    )


def load_student_backbone(model: OpenVocabSegmenter, path: str | os.PathLike) -> int:
    """Start the segmenter's ResNet-FPN from a detector checkpoint of this backend (the ViLD student: a semantic
    branch on the student's FPN), i.e. its `backbone.*` tensors; the rest of the checkpoint is not used.

    Returns the number of tensors loaded; a missing file or a backbone that does not fit is one clear error.
    """
    if not os.path.isfile(path):
        raise DistillInputError(NO_STUDENT, path)
    state = read_checkpoint(path, "MODEL.WEIGHTS (the ViLD student)")["model"]
    made = checkpoint_meta(path).get("backend")
    if made not in (None, "torchvision"):  # its backbone's tensor names and layout are another framework's
        raise DistillInputError(
            f"MODEL.WEIGHTS was trained with the {made} backend; the segmenter runs on the torchvision backend "
            "only and starts from a torchvision-backend ViLD student",
            path,
        )
    src = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    own = model.backbone.state_dict()
    bad = [f"{k} missing" for k in own if k not in src]
    bad += [
        f"{k} {tuple(src[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in src and src[k].shape != v.shape
    ]
    if bad:
        raise DistillInputError(
            f"MODEL.WEIGHTS does not fit the segmenter's backbone ({len(bad)} problem(s), e.g. "
            f"{bad[0]}): another backbone config or not a detector checkpoint?",
            path,
        )
    model.backbone.load_state_dict({k: src[k] for k in own})
    return len(own)


def save_segmenter(model: OpenVocabSegmenter, path: str | os.PathLike, cfg) -> None:
    """Atomic {"model": state_dict, "config": yaml, "vocabulary": names, "class_values"}."""
    buf = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "config": cfg.dump(),
            "vocabulary": model.predictor.classifier.class_names,
            "class_values": model.predictor.label_map.class_values,
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def load_segmenter(
    path: str | os.PathLike, embed_dim: int, flip_test: bool | None = None
) -> OpenVocabSegmenter:
    """A saved segmenter (its config travels with it); the vocabulary is set by the caller. `flip_test`: the
    caller's TEST.AUG (None: the checkpoint's own config's)."""
    from ....config import get_cfg

    if not os.path.isfile(path):
        raise DistillInputError("segmenter checkpoint not found", path)
    ckpt = load_torch_file(path, "segmenter checkpoint")
    if not isinstance(ckpt, dict) or not {"model", "config", "class_values"} <= set(ckpt):
        raise DistillInputError(
            "not a segmenter checkpoint (no model / config / class_values): a detector's?", path
        )
    cfg = get_cfg()
    cfg.merge_from_other_cfg(type(cfg).load_cfg(ckpt["config"]))
    n = len(ckpt["class_values"])
    dummy = ClassEmbeddings(F.normalize(torch.ones(n, embed_dim), dim=-1), [f"c{i}" for i in range(n)])
    model = build_sem_seg_model(cfg, dummy, ckpt["class_values"])
    bad = model.load_state_dict(ckpt["model"], strict=False)
    if bad.missing_keys or bad.unexpected_keys:
        raise DistillInputError(
            f"checkpoint does not fit the segmenter ({(bad.missing_keys + bad.unexpected_keys)[:2]})", path
        )
    if flip_test is not None:
        model.flip_test = bool(flip_test)
    return model.eval()
