import json
import logging
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(seed=3, num_train=24, num_val=12, image_size=96)


@pytest.fixture(autouse=True)
def _log_handlers_left_as_found():
    """Handlers a test adds are removed after it: detectron2's setup_logger, run in-process, writes to pytest's
    capture stream of that test, closed afterwards, and a later record there prints a logging traceback."""
    loggers = [logging.getLogger(n) for n in (None, "detectron2", "fvcore", "d2", "distill")]
    before = [list(lg.handlers) for lg in loggers]
    yield
    for lg, had in zip(loggers, before):
        for h in [h for h in lg.handlers if h not in had]:
            lg.removeHandler(h)


@pytest.fixture(autouse=True)
def _method_registry_left_as_found():
    """Methods a test registers are gone after it: a method's config node would otherwise reach every config
    (and every checkpoint's config) of the tests after it."""
    from distill.methods import registry

    saved = dict(registry._METHODS)
    yield
    registry._METHODS.clear()
    registry._METHODS.update(saved)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic benchmark, made once per test session."""
    from distill.data.synthetic import SyntheticConfig, generate

    return generate(tmp_path_factory.mktemp("synthetic") / "bench", SyntheticConfig(**SMALL), progress=False)


@pytest.fixture
def synthetic_copy(synthetic_root, tmp_path) -> Path:
    """A private copy a test may modify."""
    dst = tmp_path / "bench"
    shutil.copytree(synthetic_root, dst)
    return dst


def load(path) -> dict:
    with open(path) as f:
        return json.load(f)


# A small R18-FPN student at 96 px, as KEY VALUE overrides (the backend and tool tests train it for a few steps)
SMALL_STUDENT = [
    "MODEL.FPN.OUT_CHANNELS",
    "16",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "32",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "16",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "INPUT.MIN_SIZE_TRAIN",
    "(96,)",
    "INPUT.MIN_SIZE_TEST",
    "96",
]
SMALL_MODEL = [*SMALL_STUDENT, "TEST.DETECTIONS_PER_IMAGE", "20"]
