"""Zero-shot detection with the teacher alone (ViLD's "CLIP on cropped regions"), wired to the tools: the
proposal sources (a trained proposal network of either backend, or the training-free selective search), the
teacher and vocabulary, and the demo's output (drawn images + predictions.json).

    detector = build_zero_shot(ZeroShotSpec(teacher="ViT-B-32", pretrained="openai", names=["cat", "dog"]))
    det = detector(image)   # (3, H, W) uint8 → {"boxes", "scores", "labels"}
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..modeling.zero_shot import Proposer, ZeroShotConfig, ZeroShotDetector, selective_search_proposer
from ..teacher.embeddings import ClassEmbeddings
from ..utils.errors import DistillInputError

PROPOSAL_SOURCES = ("selective-search", "rpn")
DEFAULT_TEACHER = "synthetic-tiny-teacher"  # the shipped tiny teacher (synthetic shapes only)
# ViLD's baseline multiplies in the RPN's objectness (geometric mean); selective search has none
DEFAULT_OBJECTNESS_WEIGHT = {"rpn": 0.5, "selective-search": 0.0}


@dataclass
class ZeroShotSpec:
    """What a zero-shot detector is made of (the tools' flags)."""

    names: list[str]
    teacher: str | None = (
        None  # open_clip arch or model-zoo teacher; None: the proposal network's, or the tiny one
    )
    pretrained: str | None = None
    templates: str | None = None  # None: the proposal network's config's, else "vild"
    proposals: str = "selective-search"
    weights: str | None = None  # the proposal network's checkpoint (proposals "rpn")
    config_file: str | None = None  # its config (None: the checkpoint's own)
    opts: list[str] = field(default_factory=list)
    backend: str = "auto"
    top_k: int = 300  # proposals per image
    objectness_weight: float | None = None  # None: DEFAULT_OBJECTNESS_WEIGHT of the source
    max_detections: int = 100
    device: str | None = None  # the teacher's; None: CUDA when available, else CPU


def check_spec(spec: ZeroShotSpec) -> None:
    """Flag errors that need no model."""
    if spec.proposals not in PROPOSAL_SOURCES:
        raise DistillInputError(
            f"unknown proposal source {spec.proposals!r}; expected one of {PROPOSAL_SOURCES}"
        )
    if spec.proposals == "rpn" and not spec.weights:
        raise DistillInputError("--proposals rpn needs --weights (a trained detector's checkpoint)")
    if spec.proposals == "selective-search" and spec.weights:
        raise DistillInputError("--weights is the proposal network's: use it with --proposals rpn")
    if spec.weights and not Path(spec.weights).is_file():
        raise DistillInputError("weights not found", spec.weights)


def rpn_proposer(backend_name: str, backend, model, cfg, top_k: int) -> Proposer:
    """A trained detector's class-agnostic RPN proposals: image (3, H, W) uint8 → (boxes (K, 4) XYXY in its
    pixels, objectness probabilities (K,)), read at INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST like the detector."""
    if backend_name == "torchvision":
        from .torchvision.mapper import resized_hw
        from .torchvision.proposals import rpn_proposals

        def propose(image: torch.Tensor):
            h0, w0 = image.shape[1:]
            h, w = resized_hw(h0, w0, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
            x = image.float()[None]
            if (h, w) != (h0, w0):  # as the dataset mapper resizes
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            item = {"image": x[0], "scale": (h / h0, w / w0), "height": h0, "width": w0, "image_id": 0}
            boxes, scores = rpn_proposals(model, [item], top_k)[0]
            return boxes.cpu(), scores.cpu()

        return propose

    def propose_via_file(image: torch.Tensor):  # other backends read images from files: a lossless PNG
        import cv2

        h, w = image.shape[1:]
        fd, path = tempfile.mkstemp(suffix=".png")
        os.close(fd)
        try:
            cv2.imwrite(path, image.permute(1, 2, 0).numpy()[:, :, ::-1])
            record = {"file_name": path, "height": h, "width": w, "image_id": 0}
            it = backend.iter_dataset_proposals(
                model, [record], cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, top_k, False
            )
            _, boxes, scores = next(iter(it))
        finally:
            os.unlink(path)
        return boxes, scores

    return propose_via_file


def _load_rpn(spec: ZeroShotSpec):
    """(config, proposer) of the proposal network (its checkpoint's own config unless spec.config_file)."""
    from ..model_zoo import resolve_weights
    from ..teacher.vocabulary import vocabulary_embeddings
    from .backend import backend_name_for, get_backend
    from .inference import inference_config

    weights = resolve_weights(spec.weights)
    name = backend_name_for(spec.backend, weights)
    backend = get_backend(name)
    cfg, _ = inference_config(weights, "detector", spec.config_file, spec.opts, backend.load_config)
    dim = _embedding_dim(weights)
    if dim is None:  # no region-embedding head found: assume the config's teacher's width
        t = cfg.MODEL.DISTILL.TEACHER
        vocab = vocabulary_embeddings(["object"], t.ARCH, t.PRETRAINED, t.TEMPLATES)
    else:  # only the RPN is used: any vocabulary of the head's width loads the checkpoint
        vocab = ClassEmbeddings(F.normalize(torch.ones(1, dim), dim=1), ["object"])
    model = backend.load_for_inference(cfg, weights, vocab)
    return cfg, rpn_proposer(name, backend, model, cfg, spec.top_k)


def _embedding_dim(weights: str) -> int | None:
    """The region-embedding width of a detector checkpoint (its embed head's output), or None."""
    from ..utils.checkpoint import load_torch_file

    ckpt = load_torch_file(weights, "detector checkpoint")
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else {}
    for key, value in state.items():
        if key.endswith("embed_head.proj.weight") and getattr(value, "ndim", 0) == 2:
            return int(value.shape[0])
    return None


def build_zero_shot(spec: ZeroShotSpec) -> ZeroShotDetector:
    """The detector `spec` describes: teacher (spec's, else the proposal network's config's, else the shipped
    tiny teacher), its text embeddings of `spec.names` (cached), the proposal source."""
    from ..teacher import create_teacher
    from ..teacher.vocabulary import vocabulary_embeddings

    check_spec(spec)
    arch, pretrained, templates = spec.teacher, spec.pretrained, spec.templates
    if spec.proposals == "rpn":
        cfg, proposer = _load_rpn(spec)
        t = cfg.MODEL.DISTILL.TEACHER
        if arch is None:
            arch, pretrained = t.ARCH, pretrained or t.PRETRAINED
        templates = templates or t.TEMPLATES
    else:
        proposer = selective_search_proposer(spec.top_k)
    arch = arch or DEFAULT_TEACHER
    templates = templates or "vild"
    device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
    teacher = create_teacher(arch, pretrained or None, device=device)
    if teacher.pretrained is None:  # random weights (a rehearsal): this very model's text tower, uncached
        classes = teacher.encode_text(spec.names, templates).cpu()
    else:
        classes = vocabulary_embeddings(spec.names, arch, pretrained or "", templates).embeddings
    weight = spec.objectness_weight
    cfg = ZeroShotConfig(
        objectness_weight=DEFAULT_OBJECTNESS_WEIGHT[spec.proposals] if weight is None else weight,
        max_detections=spec.max_detections,
    )
    return ZeroShotDetector(teacher, classes, proposer, cfg)
