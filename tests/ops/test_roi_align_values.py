"""Forward values of distill.ops.multilevel_roi_align against a float64 scalar oracle, torchvision's
roi_align applied level by level (detectron2 ROIPooler semantics) and the pure-PyTorch reference."""

import pytest
import torch

from distill.ops import has_compiled_ops, multilevel_roi_align
from distill.ops._reference import multilevel_roi_align_reference
from tests.ops.roi_oracle import STRIDES, oracle_roi_align, random_features, random_rois, torchvision_levels

needs_ops = pytest.mark.skipif(not has_compiled_ops(), reason="distill._C extension not built")


def compiled(features, rois, output_size, strides, sampling_ratio=0, aligned=True):
    return multilevel_roi_align(features, rois, output_size, strides, sampling_ratio, aligned)


def reference(features, rois, output_size, strides, sampling_ratio=0, aligned=True):
    return multilevel_roi_align_reference(features, rois, output_size, strides, sampling_ratio, aligned)


BACKENDS = [pytest.param(compiled, id="compiled", marks=needs_ops), pytest.param(reference, id="reference")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sampling_ratio, aligned", [(0, True), (2, True), (0, False), (3, False)])
def test_matches_scalar_oracle(backend, sampling_ratio, aligned):
    features = random_features(channels=2, dtype=torch.float64, seed=1)
    rois = random_rois(15, seed=2, dtype=torch.float64)
    out = backend(features, rois, (3, 4), STRIDES, sampling_ratio, aligned)
    expected = torch.tensor(
        oracle_roi_align(features, rois, (3, 4), STRIDES, sampling_ratio, aligned), dtype=torch.float64
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sampling_ratio, aligned", [(0, True), (2, True), (0, False), (1, False)])
@pytest.mark.parametrize("output_size", [(7, 7), (5, 3)])
def test_matches_torchvision_per_level(backend, sampling_ratio, aligned, output_size):
    features = random_features(channels=8, seed=3)
    rois = random_rois(300, seed=4)
    out = backend(features, rois, output_size, STRIDES, sampling_ratio, aligned)
    expected = torchvision_levels(features, rois, output_size, STRIDES, sampling_ratio, aligned)
    assert out.shape == (300, 8, *output_size)
    assert (out - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("strides", [[8], [16, 32], [2, 4, 8, 16, 32, 64]])
def test_other_level_ranges(backend, strides):
    features = random_features(channels=4, strides=strides, seed=5)
    rois = random_rois(120, seed=6)
    out = backend(features, rois, (7, 7), strides)
    assert (out - torchvision_levels(features, rois, (7, 7), strides)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_rois(backend):
    features = random_features(channels=5)
    out = backend(features, torch.zeros(0, 5), (7, 7), STRIDES)
    assert out.shape == (0, 5, 7, 7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_boxes_pool_finest_level_or_zero(backend):
    features = random_features(channels=3)
    rois = torch.tensor(
        [[0, 10, 10, 10, 10], [1, 20, 30, 5, 8], [0, 5, 5, 5.5, 40], [1, -50, -50, -20, -20.0]]
    )
    out = backend(features, rois, (2, 2), STRIDES)
    expected = torchvision_levels(features, rois, (2, 2), STRIDES)
    assert (out - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_roi_order_and_batch_index_order(backend):
    features = random_features(channels=3, batch=3)
    rois = random_rois(40, batch=3, seed=7)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    out = backend(features, rois, (7, 7), STRIDES)
    # the compiled op pools each RoI alone (bit-exact under any order); the reference's batched weight
    # products may round differently when the RoIs sit at other positions of the batch
    atol = 0 if backend is compiled else 1e-6
    torch.testing.assert_close(backend(features, rois[perm], (7, 7), STRIDES), out[perm], rtol=0, atol=atol)


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_compiled_matches_reference(dtype, sampling_ratio):
    features = random_features(channels=6, dtype=dtype, seed=8)
    rois = random_rois(200, seed=9, dtype=dtype)
    torch.testing.assert_close(
        compiled(features, rois, (7, 7), STRIDES, sampling_ratio),
        reference(features, rois, (7, 7), STRIDES, sampling_ratio),
    )


@needs_ops
def test_channels_last_and_non_contiguous_inputs():
    features = random_features(channels=6, seed=10)
    rois = random_rois(50, seed=11)
    expected = compiled(features, rois, (7, 7), STRIDES)
    channels_last = [f.contiguous(memory_format=torch.channels_last) for f in features]
    torch.testing.assert_close(compiled(channels_last, rois, (7, 7), STRIDES), expected, rtol=0, atol=0)
    wide = torch.cat([rois, torch.zeros(50, 3)], dim=1)[:, :5]
    torch.testing.assert_close(compiled(features, wide, (7, 7), STRIDES), expected, rtol=0, atol=0)


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_accumulates_in_fp32(dtype):
    features = random_features(channels=16, seed=12)
    rois = random_rois(100, seed=13)
    expected = compiled(features, rois, (7, 7), STRIDES)
    low = [f.to(dtype) for f in features]
    out = compiled(low, rois, (7, 7), STRIDES)
    assert out.dtype == dtype
    exact = compiled([f.float() for f in low], rois, (7, 7), STRIDES)  # same inputs, fp32 all the way
    torch.testing.assert_close(out.float(), exact, rtol=1e-2, atol=1e-2)
    assert (out.float() - expected).abs().max().item() < 0.05
