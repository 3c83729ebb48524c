"""The three ViLD methods on the method interface (`distill.methods.base`)."""

from __future__ import annotations

import torch

from ...modeling.heads import RegionEmbeddingHead
from ...modeling.losses import vild_image_loss, vild_text_loss
from ...utils.errors import DistillInputError
from ..base import DistillMethod, RoIBatch, RoIOutputs
from ..targets import RegionStoreSource, RegionTargets
from . import KEYS, NODE


def ensemble_scores(
    text_logits: torch.Tensor,
    image_embeddings: torch.Tensor,
    class_embeddings: torch.Tensor,
    novel_mask: torch.Tensor,
    temperature: float = 0.01,
    base_text_weight: float = 2 / 3,
    novel_text_weight: float = 1 / 3,
) -> torch.Tensor:
    """ViLD-ensemble class scores: per-class geometric mean of text-branch and image-branch probabilities.

    Args:
        text_logits: (N, C + 1) text-branch logits, background last.
        image_embeddings: (N, D) normalised image-branch region embeddings (the ones distilled from the teacher).
        class_embeddings: (C, D) normalised.
        novel_mask: (C,) bool, True for novel classes.
        base_text_weight: exponent of p_text for base classes (ViLD: 2/3); p_image gets the rest.
        novel_text_weight: exponent of p_text for novel classes (ViLD: 1/3); p_image gets the rest.
    Returns:
        (N, C + 1) scores; the background column is p_text's.
    """
    p_text = text_logits.softmax(-1)
    p_image = (image_embeddings @ class_embeddings.t() / temperature).softmax(
        -1
    )  # no background: teacher has none
    w = torch.where(novel_mask.to(p_text.device), novel_text_weight, base_text_weight).to(p_text.dtype)
    cls = p_text[:, :-1].clamp_min(1e-12) ** w * p_image.clamp_min(1e-12) ** (1 - w)
    return torch.cat([cls, p_text[:, -1:]], 1)


class ViLDText(DistillMethod):
    """ViLD-text: cross entropy of the region embeddings against the text embeddings of the base classes and a
    learned background (novel classes in the training vocabulary: NOVEL_LOGIT_MODE); softmax scores."""

    config_node = NODE
    config_keys = KEYS

    def losses(self, batch: RoIBatch) -> dict[str, torch.Tensor]:
        novel = batch.novel_mask if batch.novel_mask.any() else None
        loss = vild_text_loss(batch.logits, batch.labels, novel, self.option("NOVEL_LOGIT_MODE"))
        return {"loss_vild_text": self.option("TEXT_LOSS_WEIGHT") * loss}


class ViLD(ViLDText):
    """ViLD: ViLD-text, plus ViLD-image: L1 between the student's embeddings of the region-store boxes (pooled
    with the sampled RoIs, no box or class loss) and the teacher's embeddings of the same crops."""

    @classmethod
    def target_source(cls, cfg, is_train: bool):
        v = cfg.MODEL.DISTILL[cls.config_node]
        return (
            RegionStoreSource(v.REGION_STORE, v.NUM_DISTILL_PROPOSALS)
            if is_train and v.REGION_STORE
            else None
        )

    @classmethod
    def check_training(cls, cfg, image_ids, vocabulary) -> None:
        from ...teacher.checks import check_region_store

        d, node = cfg.MODEL.DISTILL, cls.config_node
        if not d[node].REGION_STORE:
            raise DistillInputError(
                f"MODEL.DISTILL.METHOD {d.METHOD} distils region embeddings: set MODEL.DISTILL.{node}.REGION_STORE "
                "(tools/precompute_region_embeddings.py), or train MODEL.DISTILL.METHOD vild_text"
            )
        check_region_store(
            d[node].REGION_STORE,
            vocabulary,
            "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
            list(image_ids),
            d.TEACHER,
        )

    def extra_rois(self, targets: list[RegionTargets] | None):
        return None if targets is None else [t.boxes for t in targets]

    def losses(self, batch: RoIBatch) -> dict[str, torch.Tensor]:
        losses = super().losses(batch)
        if batch.targets is not None:
            student = self.image_embeddings(batch.extra_features, batch.embed_head)
            teacher = RegionTargets.cat_embeddings(batch.targets, student.device)
            losses["loss_vild_image"] = self.option("IMAGE_LOSS_WEIGHT") * vild_image_loss(student, teacher)
        return losses

    def image_embeddings(self, features: torch.Tensor, embed_head) -> torch.Tensor:
        """(M, F) box-head features → (M, D) the embeddings distilled from the teacher."""
        return embed_head(features)


class ViLDEnsemble(ViLD):
    """ViLD ensemble: ViLD-image distils a separate image head; at inference the class scores are the
    per-class geometric mean of the two branches (p_text^w p_image^(1-w), w 2/3 base, 1/3 novel)."""

    def build(self, feature_dim: int, embed_dim: int) -> None:
        self.image_embed_head = RegionEmbeddingHead(feature_dim, embed_dim)

    def image_embeddings(self, features: torch.Tensor, embed_head) -> torch.Tensor:
        return self.image_embed_head(features)

    def scores(self, out: RoIOutputs) -> torch.Tensor:
        return ensemble_scores(
            out.logits,
            self.image_embed_head(out.features),
            out.classifier.class_embeddings,
            out.novel_mask,
            out.classifier.temperature,
            self.option("BASE_TEXT_WEIGHT"),
            self.option("NOVEL_TEXT_WEIGHT"),
        )
