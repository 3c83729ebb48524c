"""The web demo's Detection tab with the teacher alone (no detector checkpoint), in-process."""

import numpy as np
import pytest

from distill.config import load_config
from distill.integrations.web_demo import METHODS, DemoModels, detect
from distill.utils.errors import DistillInputError
from tests.conftest import REPO
from tests.modeling.test_zero_shot import _image


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    cfg = load_config(str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml"))  # the shipped tiny teacher
    return DemoModels(cfg, "")  # no detector


def test_teacher_on_selective_search_needs_no_detector(models):
    rgb = _image()
    method = next(m for m, p in METHODS.items() if p == "selective-search")
    drawn, rows, _ = detect(models, rgb, "square, circle", 0.0, method)
    assert drawn.dtype == np.uint8 and drawn.ndim == 3 and drawn.shape[2] == 3
    assert (
        drawn.shape[0] % rgb.shape[0] == 0
        and drawn.shape[1] // drawn.shape[0] == rgb.shape[1] // rgb.shape[0]
    )
    assert 1 <= len(rows) <= 50
    for name, score, x0, y0, x1, y1 in rows:
        assert name in ("square", "circle") and 0 <= score <= 1
        assert 0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0]
    assert detect(models, rgb, "square, circle", 0.0, method)[1] == rows  # deterministic


def test_the_trained_detector_without_weights_and_unknown_methods_are_clear_errors(models):
    with pytest.raises(DistillInputError, match="detector weights not found"):
        detect(models, _image(), "square", 0.3, "trained detector")
    with pytest.raises(DistillInputError, match="unknown method"):
        detect(models, _image(), "square", 0.3, "magic")
