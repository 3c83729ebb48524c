"""The web demo's result pieces without a browser: the line shown when nothing is detected, the segmentation's
legend apart from the picture (the picture's toolbar covers its top-right corner)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.config import get_cfg
from distill.teacher.embeddings import ClassEmbeddings

pytest.importorskip("gradio", reason="gradio not installed (pip install -e '.[demo]')")


def vocab(names):
    return ClassEmbeddings(F.normalize(torch.ones(len(names), 8), dim=1), names)


def models_with(monkeypatch, model, names):
    from distill.integrations.web_demo import DemoModels

    m = DemoModels(get_cfg(), "unused.pth", get_cfg(), "unused.pth")
    monkeypatch.setattr(m, "vocabulary", lambda cfg, text: vocab(names))
    monkeypatch.setattr(m, "detector", lambda vocabulary=None: model)
    monkeypatch.setattr(m, "segmenter", lambda dim: model)
    return m


def test_nothing_detected_says_so(monkeypatch):
    from distill.integrations.web_demo import detect

    det = {
        "boxes": torch.tensor([[2.0, 2, 20, 20]]),
        "scores": torch.tensor([0.1]),
        "labels": torch.tensor([0]),
    }

    def fake(batch):  # a detector: one box scoring 0.1
        return [det]

    fake.roi_heads = SimpleNamespace(set_vocabulary=lambda v: None)
    m = models_with(monkeypatch, fake, ["star", "moon"])
    drawn, rows, status = detect(m, np.zeros((40, 40, 3), np.uint8), "star, moon", 0.5)
    assert rows == [] and drawn.ndim == 3
    assert status.startswith("no detection above the threshold 0.5 for the vocabulary star, moon")
    _, rows, status = detect(m, np.zeros((40, 40, 3), np.uint8), "star, moon", 0.05)
    assert len(rows) == 1 and status.startswith("1 detection(s)")


def test_segmentation_legend_is_apart_from_the_picture(monkeypatch):
    import distill.integrations.torchvision.sem_seg as sem_seg
    from distill.integrations.web_demo import segment

    predictor = SimpleNamespace(background=True, set_vocabulary=lambda v, values: None)
    m = models_with(monkeypatch, SimpleNamespace(predictor=predictor), ["star", "moon"])
    pred = torch.zeros(64, 64, dtype=torch.int64)
    pred[10:30, 10:30] = 1
    monkeypatch.setattr(sem_seg, "predict_sem_seg", lambda model, images: [pred])
    drawn, legend, rows = segment(m, np.zeros((64, 64, 3), np.uint8), "star, moon")
    assert drawn.shape == (512, 512, 3)  # the picture only (scaled 8x), no legend strip on its right
    assert legend.ndim == 3 and legend.shape[0] >= 3 * 14 and (legend < 255).any()
    assert {r[0] for r in rows} == {"background", "star"}
