"""get_backend and the Backend protocol: both backends implement it; names and a missing detectron2 are one
clear error."""

import importlib.util
import inspect

import pytest
import torch

from distill.integrations import backend as B
from distill.utils import DistillInputError

HAS_D2 = importlib.util.find_spec("detectron2") is not None
PROTOCOL_METHODS = sorted(
    n for n, v in vars(B.Backend).items() if inspect.isfunction(v) and not n.startswith("_")
)


def test_protocol_holds_only_what_a_framework_does():
    """Config, dataset catalog, training, loading, inference, proposals, evaluation: an application's helper (the
    quickstart's picture, a benchmark's data, the list form of the proposals) composes these and lives with it."""
    assert {
        "load_config",
        "register_datasets",
        "train",
        "train_net",
        "load_model",
        "load_for_inference",
        "predict",
        "evaluate",
        "iter_dataset_proposals",
    } == set(PROTOCOL_METHODS)


def test_dataset_proposals_are_the_per_image_proposals_as_records():
    class OneImage:
        def iter_dataset_proposals(self, model, dicts, min_size, max_size, top_k=300, progress=True):
            assert (model, min_size, max_size, top_k, progress) == ("m", 96, 200, 2, False)
            for d in dicts:
                yield (
                    d["image_id"],
                    torch.tensor([[1.0, 2.0, 5.0, 8.0], [0.0, 0.0, 4.0, 4.0]]),
                    torch.tensor([0.9, 0.5]),
                )

    records = B.dataset_proposals(OneImage(), "m", [{"image_id": 7}, {"image_id": 8}], 96, 200, 2, False)
    assert [r["image_id"] for r in records] == [7, 7, 8, 8]
    assert records[0]["bbox"] == pytest.approx([1.0, 2.0, 4.0, 6.0]) and records[1]["score"] == pytest.approx(
        0.5
    )


@pytest.mark.parametrize(
    "name",
    [
        "torchvision",
        pytest.param(
            "detectron2",
            marks=pytest.mark.skipif(
                not HAS_D2, reason="detectron2 is not installed (INSTALL.md, 'detectron2')"
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
