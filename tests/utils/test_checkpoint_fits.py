"""A checkpoint that does not fit the model is one line; a training's start may leave the method's own tensors
fresh (a checkpoint of another method), nothing else."""

from types import SimpleNamespace

import pytest

from distill.utils import DistillInputError
from distill.utils.checkpoint import METHOD_PREFIX
from distill.utils.errors import check_checkpoint_fits


def _incompatible(missing=(), shapes=()):
    return SimpleNamespace(missing_keys=list(missing), incorrect_shapes=list(shapes))


def test_missing_tensors_are_refused_unless_they_are_the_methods_and_allowed():
    head = METHOD_PREFIX + "word_proj.weight"
    with pytest.raises(DistillInputError, match=f"{head} missing"):
        check_checkpoint_fits(_incompatible([head]))
    assert check_checkpoint_fits(_incompatible([head, METHOD_PREFIX + "step"]), (METHOD_PREFIX,)) == [
        head,
        METHOD_PREFIX + "step",
    ]
    # the allowance covers the method only: a missing backbone tensor or a wrong shape is still refused
    with pytest.raises(DistillInputError, match="backbone.conv1.weight missing"):
        check_checkpoint_fits(_incompatible([head, "backbone.conv1.weight"]), (METHOD_PREFIX,))
    with pytest.raises(DistillInputError, match=r"\(4, 2\) vs \(4, 3\)"):
        check_checkpoint_fits(_incompatible(shapes=[(head, (4, 2), (4, 3))]), (METHOD_PREFIX,))
