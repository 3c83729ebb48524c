"""How the op runs: compiled extension present, torch.compile, autocast, the reference fallback and
DISTILL_REQUIRE_OPS, CPU vs CUDA parity."""

import shutil
import warnings

import pytest
import torch

import distill.ops as ops
from distill.ops import _loader, has_compiled_ops, multilevel_roi_align
from tests.ops.roi_oracle import STRIDES, random_features, random_rois

needs_ops = pytest.mark.skipif(not has_compiled_ops(), reason="distill._C extension not built")


def test_extension_built_where_a_compiler_exists():
    """CI machines have a C++ compiler, so a silently failed build must not pass as a fallback."""
    if not has_compiled_ops() and shutil.which("c++") is not None:
        pytest.fail(f"distill._C is missing although a C++ compiler exists: {_loader.missing_reason()}")


@needs_ops
@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_runs_the_compiled_op(dynamic):
    torch._dynamo.reset()
    features = random_features(channels=4, seed=30)
    rois = random_rois(60, seed=31)

    def pool(features, rois):
        return multilevel_roi_align(features, rois, (7, 7), STRIDES).square().sum()

    compiled = torch.compile(pool, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    leaves = [f.clone().requires_grad_() for f in features]
    out = compiled(leaves, rois)
    out.backward()
    eager_leaves = [f.clone().requires_grad_() for f in features]
    expected = pool(eager_leaves, rois)
    expected.backward()
    torch.testing.assert_close(out, expected)
    for a, b in zip(leaves, eager_leaves):
        torch.testing.assert_close(a.grad, b.grad)


@needs_ops
def test_torch_compile_graph_holds_the_custom_op():
    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    fn = torch.compile(lambda f, r: multilevel_roi_align(f, r, 7, STRIDES), backend=backend, fullgraph=True)
    fn(random_features(channels=2), random_rois(10))
    assert "distill.multilevel_roi_align" in graphs[0].code


@needs_ops
def test_autocast_bf16_on_cpu():
    features = random_features(channels=8, seed=32)
    rois = random_rois(80, seed=33)
    conv = torch.nn.Conv2d(8, 8, 1)
    expected = multilevel_roi_align([conv(f) for f in features], rois, (7, 7), STRIDES)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = [conv(f) for f in features]
        assert maps[0].dtype == torch.bfloat16
        out = multilevel_roi_align(maps, rois, (7, 7), STRIDES)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


@pytest.fixture
def hidden_extension(monkeypatch):
    """The extension as if it had not been built."""
    monkeypatch.setattr(_loader, "ops_available", lambda: False)
    monkeypatch.setitem(_loader._state, "warned", False)
    monkeypatch.delenv(_loader.REQUIRE_ENV, raising=False)


def test_fallback_warns_once_and_matches(hidden_extension):
    features = random_features(channels=3, seed=34)
    rois = random_rois(30, seed=35)
    assert not ops.has_compiled_ops()
    with pytest.warns(RuntimeWarning, match="pure-PyTorch reference"):
        out = multilevel_roi_align(features, rois, (7, 7), STRIDES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        multilevel_roi_align(features, rois, (7, 7), STRIDES)
    from tests.ops.roi_oracle import torchvision_levels

    assert (out - torchvision_levels(features, rois, (7, 7), STRIDES)).abs().max().item() <= 1e-5


def test_require_ops_env_turns_fallback_into_error(hidden_extension, monkeypatch):
    monkeypatch.setenv(_loader.REQUIRE_ENV, "1")
    with pytest.raises(RuntimeError, match="DISTILL_REQUIRE_OPS"):
        multilevel_roi_align(random_features(channels=2), random_rois(4), (7, 7), STRIDES)


def cuda_ops_available():
    return torch.cuda.is_available() and has_compiled_ops() and _loader.cuda_compiled()


needs_cuda = pytest.mark.skipif(
    not cuda_ops_available(), reason="needs a CUDA device and distill._C built with CUDA"
)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_cpu_cuda_parity(dtype, sampling_ratio):
    features = random_features(channels=16, seed=36, dtype=dtype)
    rois = random_rois(300, seed=37)
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}.get(dtype, 2e-2)

    def run(device):
        leaves = [f.to(device).requires_grad_() for f in features]
        out = multilevel_roi_align(leaves, rois.to(device), (7, 7), STRIDES, sampling_ratio)
        weight = torch.linspace(-1, 1, out.numel(), device=device).view_as(out).to(dtype)
        grads = torch.autograd.grad((out * weight).sum(), leaves)
        return out.cpu(), [g.cpu() for g in grads]

    out_cpu, grads_cpu = run("cpu")
    out_gpu, grads_gpu = run("cuda")
    torch.testing.assert_close(out_gpu, out_cpu, rtol=tol, atol=tol)
    for a, b in zip(grads_gpu, grads_cpu):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.gpu
@needs_cuda
def test_cuda_deterministic_backward():
    features = [f.cuda().requires_grad_() for f in random_features(channels=32, seed=38)]
    rois = random_rois(500, seed=39).cuda()

    def grads():
        out = multilevel_roi_align(features, rois, (7, 7), STRIDES)
        return torch.autograd.grad(out.sum(), features)

    fast = grads()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = grads(), grads()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    for a, b in zip(first, fast):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_capture_and_no_sync():
    features = [f.cuda() for f in random_features(channels=8, seed=40)]
    rois = random_rois(100, seed=41).cuda()
    multilevel_roi_align(features, rois, (7, 7), STRIDES)  # warm-up outside the graph
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = multilevel_roi_align(features, rois, (7, 7), STRIDES)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = multilevel_roi_align(features, rois, (7, 7), STRIDES)
    graph.replay()
    torch.testing.assert_close(captured, out)
