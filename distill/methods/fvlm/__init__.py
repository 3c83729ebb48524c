"""F-VLM (Kuo et al., ICLR 2023) and F-ViT (its ViT form, Wu et al., ICLR 2024): the teacher's image tower is the
detector's frozen backbone (MODEL.BACKBONE.NAME build_clip_fpn_backbone), only the FPN, RPN and heads train
(ViLD-text's loss: base classes and a learned background), and at test time the detector's class probabilities
are combined per class with the VLM's own region scores from the same forward:
s = p_det^(1 - w) * p_vlm^w, w = BASE_VLM_WEIGHT for base classes and NOVEL_VLM_WEIGHT for novel ones.

No region store, no proposal stage. Registered without importing torch; the classes are in `method.py`.
Followed: google-research/google-research fvlm/modeling/heads/task_heads.py (`ensemble_class_outputs`: 0.35 /
0.65, background from the detector, renormalised; VLM scale 100) and wusize/CLIPSelf F-ViT/models/fvit_head.py
(0.1 / 0.8 on COCO, VLM scale 75, not renormalised).
"""

from __future__ import annotations

from ..registry import Key, register_lazy


def _keys(base: float, novel: float, temperature: float, renormalize: bool) -> dict[str, Key]:
    return {
        "BASE_VLM_WEIGHT": Key(
            base, "unit", doc="exponent of p_vlm for base classes (F-VLM 0.35, F-ViT 0.1)"
        ),
        "NOVEL_VLM_WEIGHT": Key(
            novel, "unit", doc="exponent of p_vlm for novel classes (F-VLM 0.65, F-ViT 0.8)"
        ),
        "VLM_TEMPERATURE": Key(
            temperature, "positive", doc="VLM logits = cosine / T (F-VLM 0.01, F-ViT 1/75 COCO, 1/50 LVIS)"
        ),
        "RENORMALIZE": Key(
            renormalize,
            choices=(True, False),
            doc="scores (background from the detector) rescaled to sum 1 (F-VLM) or not (F-ViT)",
        ),
    }


KEYS = _keys(0.35, 0.65, 0.01, True)
FVIT_KEYS = _keys(0.1, 0.8, 1 / 75, False)
BACKBONE = "build_clip_fpn_backbone"

register_lazy(
    "fvlm",
    f"{__name__}.method:FVLM",
    "FVLM",
    KEYS,
    "F-VLM: frozen teacher tower as backbone, detector x VLM scores at test time",
)
register_lazy(
    "fvit",
    f"{__name__}.method:FViT",
    "FVIT",
    FVIT_KEYS,
    "F-ViT: F-VLM with F-ViT's ensemble (a 0.1, b 0.8, VLM temperature 1/75)",
)
