"""ViLD (Gu et al., ICLR 2022): ViLD-text, ViLD (text + image) and the ViLD ensemble.

Registered here without importing torch (config loading reads the keys); the classes are in `method.py`.
Followed: the paper and its reference code (tensorflow/tpu, models/official/detection/projects/vild): text
temperature 0.01, learned background, image-loss weight 0.5, ensemble exponents 2/3 (base) and 1/3 (novel).
"""

from __future__ import annotations

from ..registry import Key, register_lazy

NODE = "VILD"
KEYS = {
    "TEXT_LOSS_WEIGHT": Key(1.0, "nonneg", doc="ViLD-text cross entropy"),
    "IMAGE_LOSS_WEIGHT": Key(
        0.5, "nonneg", doc="ViLD-image L1 to the teacher's region embeddings (ViLD: 0.5)"
    ),
    "NOVEL_LOGIT_MODE": Key(
        "zero",
        choices=("zero", "neg_inf"),
        doc='novel classes in the training vocabulary: "zero" (ViLD: logits x 0, kept in the softmax) or '
        '"neg_inf" (DetPro: dropped)',
    ),
    "REGION_STORE": Key("", doc="region-embedding store of the training set (ViLD, ViLD ensemble)"),
    "NUM_DISTILL_PROPOSALS": Key(300, "nonneg", doc="store regions per image distilled each step"),
    "BASE_TEXT_WEIGHT": Key(2 / 3, "unit", doc="ensemble: exponent of p_text for base classes (ViLD: 2/3)"),
    "NOVEL_TEXT_WEIGHT": Key(1 / 3, "unit", doc="ensemble: exponent of p_text for novel classes (ViLD: 1/3)"),
}

register_lazy(
    "vild_text", f"{__name__}.method:ViLDText", NODE, KEYS, "ViLD-text: text-embedding classifier only"
)
register_lazy("vild", f"{__name__}.method:ViLD", NODE, KEYS, "ViLD: ViLD-text + L1 to the teacher's regions")
register_lazy(
    "vild_ensemble",
    f"{__name__}.method:ViLDEnsemble",
    NODE,
    KEYS,
    "ViLD ensemble: a separate image head, geometric mean of both branches at inference",
)
