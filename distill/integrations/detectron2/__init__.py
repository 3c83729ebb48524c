"""detectron2 backend: open-vocabulary RoI heads, meta-architecture, dataset mapper / registration, OV evaluators, trainer.

    import distill.integrations.detectron2 as d2_distill   # registers OpenVocabROIHeads (ROI_HEADS_REGISTRY) and
                                                          # OpenVocabRCNN (META_ARCH_REGISTRY); nothing else happens
    cfg = d2_distill.get_detectron2_cfg()                 # detectron2's get_cfg() + MODEL.DISTILL
    d2_distill.register_synthetic("datasets/synthetic")   # datasets: explicit calls, `distill_` names

`FusedROIPooler` (poolers.py) needs no detectron2 and imports without it; everything else needs detectron2
(official source install, see INSTALL.md).
"""

from __future__ import annotations

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without detectron2
    _IMPORT_ERROR: ImportError | None = e
else:
    _IMPORT_ERROR = None

if _IMPORT_ERROR is None:
    from . import demo, proposals
    from .backend import Detectron2Backend
    from .builders import (
        add_distill_config,
        build_detector,
        get_detectron2_cfg,
        load_detectron2_config,
        to_detectron2_cfg,
    )
    from .datasets import OpenVocabDatasetMapper, register_ov_coco, register_ov_lvis, register_synthetic
    from .evaluation import OVEvaluator
    from .meta_arch import OpenVocabRCNN
    from .poolers import FusedROIPooler
    from .roi_heads import OpenVocabOutputLayers, OpenVocabROIHeads
    from .sem_seg import OpenVocabSemanticSegmentor, OpenVocabSemSegHead  # noqa: F401  (registers both)
    from .trainer import DistillTrainer, train_main

    __all__ = [
        "add_distill_config",
        "build_detector",
        "get_detectron2_cfg",
        "load_detectron2_config",
        "to_detectron2_cfg",
        "OpenVocabDatasetMapper",
        "register_ov_coco",
        "register_ov_lvis",
        "register_synthetic",
        "OVEvaluator",
        "OpenVocabRCNN",
        "FusedROIPooler",
        "OpenVocabOutputLayers",
        "OpenVocabROIHeads",
        "DistillTrainer",
        "train_main",
        "demo",
        "proposals",
        "Detectron2Backend",
    ]
else:
    from ...utils.errors import DistillInputError

    class Detectron2Missing(DistillInputError, ImportError):
        """An ImportError for library users; tools print it as one line (it is also a DistillInputError)."""

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise Detectron2Missing(
            f"distill.integrations.detectron2.{name} needs detectron2, which is not installed "
            f"({_IMPORT_ERROR}); install it from source (INSTALL.md, 'detectron2') or use "
            "--backend torchvision"
        )
