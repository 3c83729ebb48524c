"""Config readers both backends share: the training and test vocabularies (one error each), the text
classifier, the optimizer choice and the segmentation predictor, built from MODEL.DISTILL / SOLVER keys over
the core's plain-value pieces (`distill.modeling`)."""

from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import torch

from ..modeling.heads import TextClassifier, no_weight_decay_params
from ..modeling.sem_seg import OpenVocabSemSegPredictor, SemSegEmbedHead, SemSegLabelMap
from ..teacher.checks import load_class_embeddings
from ..teacher.embeddings import ClassEmbeddings
from ..utils.errors import DistillInputError

_BUILD_VOCABULARY: list[ClassEmbeddings] = []  # set by `building_with`: inference needs no training file


@contextlib.contextmanager
def building_with(vocabulary: ClassEmbeddings):
    """Models built in the block take `vocabulary` instead of reading MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS (the
    class embeddings are no weights: a checkpoint loads into either)."""
    _BUILD_VOCABULARY.append(vocabulary)
    try:
        yield
    finally:
        _BUILD_VOCABULARY.pop()


def load_train_vocabulary(cfg) -> ClassEmbeddings:
    """MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS: the (C, D) vocabulary the model is built and trained for, checked
    against the config's teacher."""
    if _BUILD_VOCABULARY:
        return _BUILD_VOCABULARY[-1]
    return load_class_embeddings(
        cfg.MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS, cfg, "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS"
    )


def load_test_vocabulary(cfg, meta, embed_dim: int) -> tuple[ClassEmbeddings, torch.Tensor]:
    """MODEL.DISTILL.TEST_CLASS_EMBEDDINGS checked against a dataset's classes (`meta.thing_classes`, in its
    order) and the model's embedding size; when it is not set, those names encoded by the config's teacher
    (cached, as the demo does). Returns the (C, D) vocabulary and its (C,) novel mask."""
    path = cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS
    if path:
        vocab = load_class_embeddings(
            path,
            cfg,
            "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
            expected_dim=embed_dim,
            expected_names=meta.thing_classes,
        )
    else:
        from ..teacher.vocabulary import vocabulary_embeddings

        t = cfg.MODEL.DISTILL.TEACHER
        vocab = vocabulary_embeddings(list(meta.thing_classes), t.ARCH, t.PRETRAINED, t.TEMPLATES)
        if vocab.dim != embed_dim:
            raise DistillInputError(
                f"MODEL.DISTILL.TEACHER {t.ARCH} embeds in {vocab.dim} dims, the model in {embed_dim}: set "
                "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS (tools/dump_text_embeddings.py) with the model's teacher"
            )
    novel = torch.zeros(len(meta.thing_classes), dtype=torch.bool)
    novel[meta.contiguous_ids("novel")] = True
    return vocab, novel


def text_classifier(cfg, vocabulary: ClassEmbeddings) -> TextClassifier:
    """The classifier of MODEL.DISTILL's temperature and background init over `vocabulary`."""
    d = cfg.MODEL.DISTILL
    return TextClassifier(
        vocabulary.embeddings, d.TEMPERATURE, d.BG_INIT_STD, class_names=vocabulary.class_names
    )


def build_optimizer(cfg, params: Iterable) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER over parameter groups (each may set its own weight decay; SOLVER.WEIGHT_DECAY
    is the default)."""
    s = cfg.SOLVER
    name = s.OPTIMIZER
    if name == "SGD":
        return torch.optim.SGD(
            params, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV, weight_decay=s.WEIGHT_DECAY
        )
    if name == "AdamW":
        return torch.optim.AdamW(params, lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY)
    raise DistillInputError(f"SOLVER.OPTIMIZER must be SGD or AdamW, got {name!r}")


def without_decay(groups: list[dict], model: torch.nn.Module, reduce=None) -> list[dict]:
    """Parameter groups (detectron2's `get_default_optimizer_params`) with weight decay 0 for the parameters that
    `model`'s modules list in `no_weight_decay()` (no name lookups). With `reduce` (detectron2's
    `reduce_param_groups`), the groups are rebuilt from the parameters in module order, as detectron2 builds
    them: the same groups, in the same order, as a name override would give (full-model gradient clipping sums
    the norms in that order)."""
    no_decay = no_weight_decay_params(model)
    hyper = {id(p): {k: v for k, v in g.items() if k != "params"} for g in groups for p in g["params"]}
    per_param, seen = [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) not in hyper or id(p) in seen:
                continue
            seen.add(id(p))
            h = {**hyper[id(p)], **({"weight_decay": 0.0} if id(p) in no_decay else {})}
            per_param.append({"params": [p], **h})
    return reduce(per_param) if reduce is not None else per_param


def build_sem_seg_predictor(
    cfg,
    vocabulary,
    in_channels: Sequence[int],
    in_strides: Sequence[int],
    class_values: Sequence[int] | None = None,
) -> OpenVocabSemSegPredictor:
    """MODEL.DISTILL(.SEM_SEG)'s predictor over features of `in_channels` at `in_strides`, for `vocabulary`
    (a `ClassEmbeddings`, the training vocabulary); class_values: pixel value of each of its classes (default
    SEM_SEG.TRAIN_LABEL_VALUES, else 0..C-1)."""
    d, s = cfg.MODEL.DISTILL, cfg.MODEL.DISTILL.SEM_SEG
    head = SemSegEmbedHead(
        list(in_channels), list(in_strides), vocabulary.dim, s.CONVS_DIM, s.COMMON_STRIDE, s.NORM
    )
    values = list(
        class_values if class_values is not None else (s.TRAIN_LABEL_VALUES or range(len(vocabulary)))
    )
    label_map = SemSegLabelMap(values, None if s.BACKGROUND_VALUE < 0 else s.BACKGROUND_VALUE, s.IGNORE_VALUE)
    return OpenVocabSemSegPredictor(
        head,
        text_classifier(cfg, vocabulary),
        label_map,
        s.LOSS_WEIGHT,
        d.PIXEL_LOSS_WEIGHT,
        d.PIXEL_LOSS,
        s.DISTILL_BACKGROUND,
    )
