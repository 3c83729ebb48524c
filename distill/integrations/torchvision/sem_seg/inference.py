"""Prediction and evaluation with the segmenter, and segmentation with any vocabulary."""

from __future__ import annotations

import os
from typing import Sequence

import torch

from ....evaluation.sem_seg import SemSegEvaluator
from ....teacher.embeddings import ClassEmbeddings
from .model import OpenVocabSegmenter, load_segmenter


@torch.no_grad()
def predict_sem_seg(
    model: OpenVocabSegmenter, images: Sequence[torch.Tensor], batch_size: int = 16
) -> list[torch.Tensor]:
    """(3, H, W) RGB images → (H, W) pixel values of the model's current vocabulary, one per image (with
    `model.flip_test`: the class of the highest mean probability over the image and its mirror)."""
    was = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(images), batch_size):
            chunk = list(images[i : i + batch_size])
            logits = model(chunk)
            if model.flip_test:
                # the padded batch is mirrored whole, so a padded image's mirror must be shifted back
                mirrored = model([im.flip(-1) for im in chunk]).softmax(1)
                probs = logits.softmax(1)
                for k, im in enumerate(chunk):
                    w = im.shape[2]
                    probs[k, :, :, :w] += mirrored[k, :, :, :w].flip(-1)
                logits = probs
            pred = model.predictor.predict(logits)
            out += [p[: im.shape[1], : im.shape[2]].cpu() for p, im in zip(pred, chunk)]
    finally:
        model.train(was)
    return out


def evaluate_segmenter(
    model: OpenVocabSegmenter, samples: Sequence[dict], evaluator: SemSegEvaluator
) -> dict:
    """Predict every sample and score it with `evaluator` (pixel-value label space)."""
    evaluator.reset()
    preds = predict_sem_seg(model, [s["image"] for s in samples])
    for p, s in zip(preds, samples):
        evaluator.update(p, s["labels"])
    return evaluator.compute()


def segment_images(
    weights: str | os.PathLike,
    images: Sequence[torch.Tensor],
    class_names: Sequence[str] | ClassEmbeddings,
    teacher=None,
    templates: str = "vild",
    flip_test: bool | None = None,
) -> tuple[list[torch.Tensor], list[str]]:
    """Segment (3, H, W) RGB images with any vocabulary: class embeddings (C, D), or class names encoded by
    `teacher`; `flip_test` is the caller's TEST.AUG.ENABLED and FLIP (None: the checkpoint's config's).

    Returns (H, W) int64 maps, 0 the background and i + 1 class_names[i], and the legend (label → name).
    """
    if isinstance(class_names, ClassEmbeddings):
        vocab = class_names
    else:
        names = list(class_names)
        vocab = ClassEmbeddings(teacher.encode_text(names, templates), names)
    names = vocab.class_names
    model = load_segmenter(weights, vocab.dim, flip_test)
    lm = model.predictor.label_map
    if lm.ignore_value <= len(names):  # labels 1..C would hit it; inference scores no ignored pixel
        lm.ignore_value = max(len(names) + 1, 1 << 16)
    model.predictor.set_vocabulary(vocab, list(range(1, len(names) + 1)))  # 0 stays the background
    legend = ["background"] + names if model.predictor.background else [""] + names
    # one image at a time: in a batch, the padding up to its largest image would change a smaller one's labels
    return predict_sem_seg(model, images, batch_size=1), legend


def fit_test_size(img: torch.Tensor, max_size: int) -> torch.Tensor:
    """A (3, H, W) uint8 image whose longer side exceeds INPUT.MAX_SIZE_TEST shrunk to it (area interpolation;
    a photo segmented at full size takes gigabytes); smaller images are left as they are. The ONNX runner's
    "longest_side" rule is this one (distill.integrations.onnx_model)."""
    import cv2

    h, w = img.shape[1:]
    if max(h, w) <= max_size:
        return img
    s = max_size / max(h, w)
    small = cv2.resize(
        img.permute(1, 2, 0).numpy(),
        (max(1, round(w * s)), max(1, round(h * s))),
        interpolation=cv2.INTER_AREA,
    )
    return torch.from_numpy(small).permute(2, 0, 1).contiguous()
