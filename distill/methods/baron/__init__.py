"""BARON (Wu et al., CVPR 2023, "Aligning Bag of Regions for Open-Vocabulary Object Detection"; wusize/ovdet).

Training: ViLD-text's classifier (base classes, learned background) plus the bag-of-regions distillation: around
the RPN's confident proposals (and the ground truth), bags of neighbouring boxes (`sampling`); each box's
box-head feature becomes K pseudo-words plus a positional encoding of the box in its bag; a bag's words, in a
few orders, go through the teacher's frozen text tower to one embedding, aligned with the teacher's image
embedding of the bag's spanning box, cropped from the training image online (`losses`: symmetric InfoNCE with
queues of past embeddings). A single-region term aligns each region's word tokens with the teacher's dense
features pooled over the region in the bag's crop. Inference is the cosine text classifier's, as ViLD-text.

Registered here without importing torch (config loading reads the keys); the class is in `method.py`.
Followed: wusize/ovdet `ovdet/methods/baron/baron_kd.py`, `baron_base.py`, `neighborhood_sampling.py`,
`ovdet/models/vlms/clip/` and the configs `configs/baron/ov_coco/baron_kd_faster_rcnn_r50_fpn_syncbn_90kx2.py`
(defaults here) and `ov_lvis/baron_kd_mask_rcnn_r50_fpn_syncbn_45kx4_lvis.py` (the LVIS recipe's values); what
differs is said in `README.md` and in each module's docstring.
"""

from __future__ import annotations

from ..registry import Key, register_lazy

NODE = "BARON"
KEYS = {
    "NUM_WORDS": Key(6, "positive", doc="pseudo-words per region (BARON: 6 COCO, 4 LVIS)"),
    "WORD_DROPOUT": Key(0.5, "unit", doc="probability of dropping a pseudo-word in training (BARON: 0.5)"),
    "BAG_WEIGHT": Key(1.0, "nonneg", doc="weight of the bag term (BARON: 1.0)"),
    "BAG_SCALE": Key(30.0, "positive", doc="logit scale of the bag term (BARON: 30 COCO, 20 LVIS)"),
    "SINGLE_WEIGHT": Key(0.1, "nonneg", doc="weight of the single-region term (BARON: 0.1; 0 skips it)"),
    "SINGLE_SCALE": Key(
        50.0, "positive", doc="logit scale of the single-region term (BARON: 50 COCO, 30 LVIS)"
    ),
    "QUEUE_LENGTH": Key(
        1024, "positive", doc="past embeddings kept as extra negatives, per queue (BARON: 1024)"
    ),
    "TOPK": Key(
        300, "positive", doc="RPN proposals per image bags are drawn around (BARON: 300 COCO, 500 LVIS)"
    ),
    "OBJECTNESS_THRESHOLD": Key(0.85, "unit", doc="kept proposals' objectness above this (BARON: 0.85)"),
    "NMS_THRESHOLD": Key(0.1, "unit", doc="NMS IoU among the kept boxes (BARON: 0.1)"),
    "MAX_GROUPS": Key(3, "positive", doc="bags drawn around each kept box (BARON: 3 COCO, 6 LVIS)"),
    "MAX_PERMUTATIONS": Key(2, "positive", doc="word orders per bag (BARON: 2)"),
    "MAX_BAGS": Key(0, "nonneg", doc="bags kept per image, best kept boxes first (0: all, as BARON)"),
    "USE_GT": Key(True, choices=(True, False), doc="ground-truth boxes join the proposals (BARON: True)"),
    "TEACHER_AMP": Key(
        True, choices=(True, False), doc="the teacher's crops in float16 autocast on CUDA (CPU: float32)"
    ),
}

register_lazy(
    "baron",
    f"{__name__}.method:BARON",
    NODE,
    KEYS,
    "BARON: bags of regions through the teacher's text tower, aligned with its online crops",
)
