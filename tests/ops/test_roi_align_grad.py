"""Gradients of distill.ops.multilevel_roi_align: gradcheck in float64 and agreement with torchvision's
per-level backward and with the reference."""

import pytest
import torch

from distill.ops import has_compiled_ops, multilevel_roi_align
from distill.ops._reference import multilevel_roi_align_reference
from tests.ops.roi_oracle import STRIDES, random_features, random_rois, torchvision_levels

needs_ops = pytest.mark.skipif(not has_compiled_ops(), reason="distill._C extension not built")


def small_case(seed=0):
    features = random_features(channels=2, image=(40, 56), dtype=torch.float64, seed=seed)
    rois = random_rois(8, image=(40, 56), seed=seed + 1, dtype=torch.float64)
    return [f.requires_grad_() for f in features], rois


@needs_ops
@pytest.mark.parametrize("sampling_ratio, aligned", [(0, True), (2, False)])
def test_gradcheck_compiled(sampling_ratio, aligned):
    features, rois = small_case()
    fn = lambda *fs: multilevel_roi_align(list(fs), rois, (3, 2), STRIDES, sampling_ratio, aligned)  # noqa: E731
    assert torch.autograd.gradcheck(fn, features, eps=1e-6, atol=1e-6)


def test_gradcheck_reference():
    features, rois = small_case(seed=3)
    fn = lambda *fs: multilevel_roi_align_reference(list(fs), rois, (3, 2), STRIDES)  # noqa: E731
    assert torch.autograd.gradcheck(fn, features, eps=1e-6, atol=1e-6, fast_mode=True)


def grads(fn, features, rois, sampling_ratio):
    leaves = [f.detach().clone().requires_grad_() for f in features]
    out = fn(leaves, rois, (7, 7), STRIDES, sampling_ratio, True)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return torch.autograd.grad((out * weight).sum(), leaves, allow_unused=True)


@needs_ops
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_backward_matches_torchvision_per_level(sampling_ratio):
    features = random_features(channels=4, seed=20)
    rois = random_rois(200, seed=21)
    ours = grads(multilevel_roi_align, features, rois, sampling_ratio)
    theirs = grads(torchvision_levels, features, rois, sampling_ratio)
    for a, b in zip(ours, theirs):
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # sums of many fp32 terms


@needs_ops
def test_backward_matches_reference_float64():
    features = random_features(channels=3, dtype=torch.float64, seed=22)
    rois = random_rois(100, seed=23, dtype=torch.float64)
    for a, b in zip(
        grads(multilevel_roi_align, features, rois, 0),
        grads(multilevel_roi_align_reference, features, rois, 0),
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@needs_ops
def test_backward_empty_rois_gives_zero_gradients():
    features = [f.requires_grad_() for f in random_features(channels=3)]
    out = multilevel_roi_align(features, torch.zeros(0, 5), (7, 7), STRIDES)
    out.sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() == 0 for f in features)


@needs_ops
def test_backward_is_deterministic_on_cpu():
    features = random_features(channels=16, seed=24)
    rois = random_rois(300, seed=25)
    first = grads(multilevel_roi_align, features, rois, 0)
    second = grads(multilevel_roi_align, features, rois, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
