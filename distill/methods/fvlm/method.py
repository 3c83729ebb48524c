"""F-VLM and F-ViT on the method interface (`distill.methods.base`)."""

from __future__ import annotations

import torch

from ...utils.errors import DistillInputError
from ..base import DistillMethod, RoIOutputs
from . import BACKBONE, FVIT_KEYS, KEYS


def vlm_ensemble(
    p_det: torch.Tensor,
    p_vlm: torch.Tensor,
    novel_mask: torch.Tensor,
    base_weight: float,
    novel_weight: float,
    renormalize: bool,
) -> torch.Tensor:
    """F-VLM's score ensemble.

    Args:
        p_det: (N, C + 1) the detector's probabilities, background last.
        p_vlm: (N, C) the VLM's probabilities over the vocabulary.
        novel_mask: (C,) bool, True for novel classes.
        base_weight / novel_weight: the exponent of p_vlm for base / novel classes.
        renormalize: rescale each row to sum 1 (F-VLM) or not (F-ViT).
    Returns:
        (N, C + 1): p_det^(1 - w) * p_vlm^w per class, the detector's background last.
    """
    w = torch.where(novel_mask.to(p_det.device), novel_weight, base_weight).to(p_det.dtype)
    cls = p_det[:, :-1].clamp_min(1e-12) ** (1 - w) * p_vlm.clamp_min(1e-12) ** w
    out = torch.cat([cls, p_det[:, -1:]], 1)
    return out / out.sum(1, keepdim=True) if renormalize else out


class FVLM(DistillMethod):
    """F-VLM / F-ViT: ViLD-text's loss in training (the default `losses`); at inference the detector's softmax
    combined with the VLM's region scores (`RoIOutputs.vlm`, from the frozen tower of the same forward)."""

    config_node = "FVLM"
    config_keys = KEYS
    required_config = {"MODEL.BACKBONE.NAME": BACKBONE}  # the teacher's frozen tower as the backbone

    def vlm_probabilities(self, out: RoIOutputs) -> torch.Tensor:
        """(N, C) the VLM's softmax over the vocabulary for the RoIs of `out`."""
        if out.vlm is None or out.rois is None:
            raise DistillInputError(
                f"F-VLM's scores need the frozen tower's region embeddings: MODEL.BACKBONE.NAME {BACKBONE}"
            )
        emb = out.vlm(out.rois)
        vocab = out.classifier.class_embeddings
        if emb.shape[1] != vocab.shape[1]:
            raise DistillInputError(
                f"the vocabulary has {vocab.shape[1]}-dim embeddings, the backbone's teacher {emb.shape[1]}: "
                "class embeddings of another teacher"
            )
        return (emb.to(vocab) @ vocab.t() / self.option("VLM_TEMPERATURE")).softmax(-1)

    def scores(self, out: RoIOutputs) -> torch.Tensor:
        return vlm_ensemble(
            out.logits.softmax(-1),
            self.vlm_probabilities(out),
            out.novel_mask,
            self.option("BASE_VLM_WEIGHT"),
            self.option("NOVEL_VLM_WEIGHT"),
            self.option("RENORMALIZE"),
        )


class FViT(FVLM):
    """F-ViT: F-VLM with F-ViT's ensemble defaults (its own node, MODEL.DISTILL.FVIT)."""

    config_node = "FVIT"
    config_keys = FVIT_KEYS
