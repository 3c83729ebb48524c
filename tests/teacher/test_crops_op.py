"""The fused `distill::resample_crops` kernel against the pure-PyTorch reference crops."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from distill.ops import _loader, has_compiled_ops, resample_crops, resample_crops_reference
from distill.teacher import crops
from distill.teacher.crops import crop_resize_normalize, crop_resize_normalize_reference, crop_taps

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
needs_ops = pytest.mark.skipif(not has_compiled_ops(), reason="distill._C extension not built")


def random_image(dtype, height=40, width=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = (torch.rand(3, height, width, generator=g) * 255).round().to(torch.uint8)
    return img if dtype == torch.uint8 else img.to(dtype) / 255


def random_boxes(n, height=40, width=56, seed=1):
    """Boxes of 1-60 px anywhere from partly left/above to partly right/below the image, plus tiny ones."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width + 20.0, height + 20.0]) - 15
    wh = 1 + torch.rand(n, 2, generator=g) * 59
    tiny = torch.tensor(
        [
            [3.0, 4.0, 4.0, 5.0],
            [10.0, 10.0, 12.0, 11.0],
            [5.5, 6.5, 7.5, 7.5],
            [20.0, 20.0, 20.0, 20.0],
            [-3.0, -2.0, -1.0, -1.0],
            [width - 1.0, 0.0, width + 1.0, 2.0],
        ]
    )
    return torch.cat([torch.cat([xy, xy + wh], 1), tiny])


def assert_same_crops(out, ref):
    """Normalised crops equal up to float noise; a value may at most flip one 8-bit level, and rarely."""
    assert out.shape == ref.shape and out.dtype == torch.float32
    raw = (out - ref).abs() * torch.tensor(STD).view(1, 3, 1, 1)
    assert raw.max() <= 1 / 255 + 1e-6
    assert (raw > 1e-5).float().mean() <= 1e-3


@needs_ops
@pytest.mark.parametrize(
    "geometry, dtype, size",
    [
        ("center", torch.uint8, 24),
        ("center", torch.float32, 24),
        ("stretch", torch.uint8, 24),
        ("stretch", torch.float32, 24),
        ("center", torch.float64, 7),
        ("stretch", torch.uint8, 7),
    ],
)
def test_op_matches_reference(geometry, dtype, size):
    img, boxes = random_image(dtype), random_boxes(30)
    assert crops.resample_crops_compiled(img.device)  # not comparing the reference with itself
    out = crop_resize_normalize(img, boxes, size, MEAN, STD, geometry)
    ref = crop_resize_normalize_reference(img, boxes, size, MEAN, STD, geometry)
    assert_same_crops(out, ref)


@needs_ops
@pytest.mark.parametrize("geometry", ["center", "stretch"])
@pytest.mark.parametrize("size", [2, 224])
def test_compiled_taps_match_python_taps(geometry, size):
    """distill::crop_taps computes crops._taps: same K, indices and (float32) weights; size 2 needs K > 256."""
    boxes = torch.cat([random_boxes(10, 480, 640, seed=6) * 6, random_boxes(10, seed=7)])
    b, w, h, new_w, new_h, left, top = crops._geometry(boxes.double(), size, geometry)
    for args, limit in (
        ((b[:, 1].contiguous(), h, new_h, top), 480),
        ((b[:, 0].contiguous(), w, new_w, left), 640),
    ):
        index, weight = crops._taps(*args, size, limit)
        c_index, c_weight = torch.ops.distill.crop_taps(*args, size, limit)
        assert torch.equal(c_index, index)
        torch.testing.assert_close(c_weight, weight.float(), rtol=1e-6, atol=1e-9)


@needs_ops
def test_op_matches_reference_on_a_non_contiguous_image_in_chunks():
    img = random_image(torch.uint8, 48, 32).permute(0, 2, 1)  # (3, 32, 48), strided
    boxes = random_boxes(10, 32, 48, seed=2)
    out = crop_resize_normalize(img, boxes, 16, MEAN, STD, chunk=4)
    assert_same_crops(out, crop_resize_normalize_reference(img, boxes, 16, MEAN, STD))


@needs_ops
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_op_on_arbitrary_taps(dtype):
    """Any taps: repeated, unordered indices, negative weights, sums outside [0, 1] (clamped), C != 3, S_y != S_x."""
    g = torch.Generator().manual_seed(3)
    img = random_image(dtype, 9, 11)[:2]
    n, sy, sx = 5, 6, 4
    y_index, x_index = (
        torch.randint(0, 9, (n, sy, 3), generator=g),
        torch.randint(0, 11, (n, sx, 5), generator=g),
    )
    y_weight, x_weight = torch.randn(n, sy, 3, generator=g), torch.randn(n, sx, 5, generator=g)
    y_weight[0] = 0  # a crop with no rows
    x_weight[1, :, 0] = 0
    mean, std = (0.5, 0.25), (0.2, 0.4)
    out = resample_crops(img, y_index, y_weight, x_index, x_weight, mean, std)
    ref = resample_crops_reference(img, y_index, y_weight, x_index, x_weight, mean, std)
    assert out.shape == (n, 2, sy, sx)
    raw = (out - ref).abs() * torch.tensor(std).view(1, 2, 1, 1)
    assert raw.max() <= 1 / 255 + 1e-6 and (raw > 1e-5).float().mean() <= 0.01
    assert torch.allclose(
        out[0], ((0 - torch.tensor(mean)) / torch.tensor(std)).view(2, 1, 1).expand(2, sy, sx)
    )


@needs_ops
def test_empty_box_list():
    img = random_image(torch.uint8)
    for geometry in crops.GEOMETRIES:
        assert crop_resize_normalize(img, torch.zeros(0, 4), 16, MEAN, STD, geometry).shape == (0, 3, 16, 16)
    taps = crop_taps(img, torch.zeros(1, 4), 16)
    empty = [t[:0] for t in taps]
    assert resample_crops(img, *empty, MEAN, STD).shape == (0, 3, 16, 16)
    assert torch.ops.distill.resample_crops(img, *empty, list(MEAN), list(STD)).shape == (0, 3, 16, 16)


@pytest.mark.parametrize(
    "image, boxes, error, match",
    [
        (torch.zeros(40, 56), torch.zeros(1, 4), ValueError, r"image must be a \(3, H, W\)"),
        (torch.zeros(1, 3, 40, 56), torch.zeros(1, 4), ValueError, r"image must be a \(3, H, W\)"),
        (
            torch.zeros(3, 40, 56, dtype=torch.int32),
            torch.zeros(1, 4),
            TypeError,
            "image must be uint8 or floating",
        ),
        (torch.zeros(3, 40, 56), torch.zeros(1, 4, dtype=torch.int64), TypeError, "boxes must be floating"),
        (torch.zeros(3, 40, 56), torch.zeros(4), ValueError, r"boxes must be an \(N, 4\)"),
        (torch.zeros(3, 40, 56), torch.zeros(2, 5), ValueError, r"boxes must be an \(N, 4\)"),
        (torch.zeros(3, 40, 56), [[0.0, 0.0, 4.0, 4.0]], ValueError, r"boxes must be an \(N, 4\)"),
    ],
)
def test_crop_bad_input(image, boxes, error, match):
    with pytest.raises(error, match=match):
        crop_resize_normalize(image, boxes, 16, MEAN, STD)


def _taps():
    return crop_taps(random_image(torch.uint8), random_boxes(4), 8)


@pytest.mark.parametrize(
    "edit, error, match",
    [
        (lambda a: {**a, "image": a["image"][0]}, ValueError, r"image must be a non-empty \(C, H, W\)"),
        (lambda a: {**a, "image": a["image"].long()}, TypeError, "image must be uint8 or floating"),
        (lambda a: {**a, "y_index": a["y_index"].int()}, TypeError, "y_index must be int64"),
        (lambda a: {**a, "x_index": a["x_index"][0]}, ValueError, r"x_index must be \(N, S, K\)"),
        (lambda a: {**a, "x_weight": a["x_weight"].double()}, TypeError, "x_weight must be float32"),
        (lambda a: {**a, "y_weight": a["y_weight"][:, :, :2]}, ValueError, "y_weight has shape"),
        (
            lambda a: {**a, "x_index": a["x_index"][:2], "x_weight": a["x_weight"][:2]},
            ValueError,
            r"y taps for \d+ crops",
        ),
        (lambda a: {**a, "mean": (0.5, 0.5)}, ValueError, "one value per image channel"),
    ],
)
def test_op_bad_input(edit, error, match):
    iy, wy, ix, wx = _taps()
    args = dict(
        image=random_image(torch.uint8), y_index=iy, y_weight=wy, x_index=ix, x_weight=wx, mean=MEAN, std=STD
    )
    with pytest.raises(error, match=match):
        resample_crops(**edit(args))


@needs_ops
@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda a: a.__setitem__(0, a[0].float().unsqueeze(0)), r"image must be \(C, H, W\)"),
        (lambda a: a.__setitem__(0, a[0].double()), "image must be uint8 or float32"),
        (lambda a: a.__setitem__(1, a[1].int()), "y_index must be int64"),
        (lambda a: a.__setitem__(4, a[4].half()), "x_weight must be float32"),
        (lambda a: a.__setitem__(3, a[3] + 100), r"x_index holds \d+, outside \[0, 56\)"),
        (lambda a: a.__setitem__(5, [0.5]), "one value per image channel"),
    ],
)
def test_compiled_op_rejects_bad_input(edit, match):
    """Direct torch.ops calls skip the Python checks; the kernel's own checks still give clear errors."""
    args = [random_image(torch.uint8), *_taps(), list(MEAN), list(STD)]
    edit(args)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.distill.resample_crops(*args)


@needs_ops
def test_fake_kernel():
    img = random_image(torch.uint8)
    args = (img, *crop_taps(img, random_boxes(3), 12), list(MEAN), list(STD))
    mode = FakeTensorMode()
    fake_args = [mode.from_tensor(a) if torch.is_tensor(a) else a for a in args]
    with mode:
        fake = torch.ops.distill.resample_crops(*fake_args)
    assert fake.shape == (9, 3, 12, 12) and fake.dtype == torch.float32


@needs_ops
def test_compiled_taps_reject_bad_input():
    ones = torch.ones(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"\(N,\) float64"):
        torch.ops.distill.crop_taps(ones.float(), ones, ones, ones, 8, 10)
    with pytest.raises(RuntimeError, match=r"\(N,\) float64"):
        torch.ops.distill.crop_taps(ones, ones[:2], ones, ones, 8, 10)
    with pytest.raises(RuntimeError, match="size and limit must be positive"):
        torch.ops.distill.crop_taps(ones, ones, ones, ones, 0, 10)


@pytest.mark.gpu
@pytest.mark.skipif(
    not (torch.cuda.is_available() and has_compiled_ops() and _loader.cuda_compiled()),
    reason="needs a CUDA device and distill._C built with CUDA",
)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("geometry", ["center", "stretch"])
def test_cuda_kernel_matches_cpu(dtype, geometry):
    img, boxes = random_image(dtype, 120, 160, seed=4), random_boxes(200, 120, 160, seed=5)
    out = crop_resize_normalize(img.cuda(), boxes.cuda(), 32, MEAN, STD, geometry)
    assert out.is_cuda
    assert_same_crops(out.cpu(), crop_resize_normalize(img, boxes, 32, MEAN, STD, geometry))


def test_fallback_without_compiled_kernels(monkeypatch):
    img, boxes = random_image(torch.uint8), random_boxes(5)
    ref = crop_resize_normalize_reference(img, boxes, 16, MEAN, STD)
    monkeypatch.setattr(crops, "resample_crops_compiled", lambda device: False)
    monkeypatch.setattr(crops._loader, "require_or_warn", lambda: None)
    assert torch.equal(crop_resize_normalize(img, boxes, 16, MEAN, STD), ref)


@pytest.mark.parametrize("compiled", [True, False])
def test_out_buffer_and_crop_batcher_equal_the_plain_call(monkeypatch, compiled):
    if compiled and not has_compiled_ops():
        pytest.skip("distill._C extension not built")
    if not compiled:
        monkeypatch.setattr(crops, "resample_crops_compiled", lambda device: False)
        monkeypatch.setattr(crops._loader, "require_or_warn", lambda: None)
    imgs = [random_image(torch.uint8, seed=s) for s in (0, 1, 2)]
    boxes = [random_boxes(5, seed=1), torch.zeros(0, 4), random_boxes(13, seed=3)]  # 11, 0 and 19 boxes
    want = torch.cat([crop_resize_normalize(i, b, 16, MEAN, STD) for i, b in zip(imgs, boxes)])
    out = torch.full((19, 3, 16, 16), float("nan"))
    assert crop_resize_normalize(imgs[2], boxes[2], 16, MEAN, STD, chunk=4, out=out) is out
    assert torch.equal(out, want[-19:])
    batcher = crops.CropBatcher(4, 16, MEAN, STD)
    got = []
    for i, b in zip(imgs, boxes):
        got += [batch.clone() for batch in batcher.add(i, b)]  # views of one buffer: copy to keep
    assert [g.shape[0] for g in got] == [4] * 7
    last = batcher.flush()
    assert last.shape[0] == 2 and batcher.flush() is None
    assert torch.equal(torch.cat([*got, last]), want)
    with pytest.raises(ValueError, match="out must be float32"):
        resample_crops(imgs[0], *crop_taps(imgs[0], boxes[0], 16), MEAN, STD, out=torch.empty(4, 3, 16, 16))
