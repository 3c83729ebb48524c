"""get_backend and the Backend protocol: both backends implement it; names and a missing detectron2 are one
clear error."""

import importlib.util
import inspect

import pytest

from distill.integrations import backend as B
from distill.utils import DistillInputError

HAS_D2 = importlib.util.find_spec("detectron2") is not None
PROTOCOL_METHODS = sorted(
    n for n, v in vars(B.Backend).items() if inspect.isfunction(v) and not n.startswith("_")
)


def test_protocol_lists_what_the_pipeline_uses():
    assert {
        "load_config",
        "register_synthetic",
        "train",
        "load_model",
        "dataset_proposals",
        "iter_dataset_proposals",
        "evaluate",
        "load_for_inference",
        "predict",
        "draw_predictions_grid",
        "train_net",
    } == set(PROTOCOL_METHODS)


@pytest.mark.parametrize(
    "name",
    [
        "torchvision",
        pytest.param(
            "detectron2",
            marks=pytest.mark.skipif(
                not HAS_D2, reason="detectron2 is not installed (README, 'detectron2 backend')"
            ),
        ),
    ],
)
def test_each_backend_implements_the_protocol(name):
    b = B.get_backend(name)
    assert isinstance(b, B.Backend) and b.name == name
    for method in PROTOCOL_METHODS:  # same parameters as the protocol, so callers can pass them by name
        want = list(inspect.signature(getattr(B.Backend, method)).parameters)[1:]
        assert list(inspect.signature(getattr(b, method)).parameters) == want, method
    assert type(b).__mro__[1] is object  # no backend inherits another


def test_auto_and_unknown_names():
    assert B.get_backend("auto").name == ("detectron2" if B.detectron2_installed() else "torchvision")
    with pytest.raises(DistillInputError, match="unknown backend 'caffe'"):
        B.get_backend("caffe")


@pytest.mark.skipif(HAS_D2, reason="detectron2 is installed")
def test_missing_detectron2_is_one_clear_error():
    with pytest.raises(DistillInputError, match="needs detectron2"):
        B.get_backend("detectron2")
