"""torch.library.opcheck for every distill:: op (schema, fake kernel, autograd registration and dispatch
agree): on CPU, and on CUDA for the ops with CUDA kernels (marked gpu)."""

import pytest
import torch

from distill.ops import _loader, has_compiled_ops
from distill.teacher.crops import crop_taps
from tests.ops.roi_oracle import random_features, random_rois

pytestmark = pytest.mark.skipif(not has_compiled_ops(), reason="distill._C extension not built")
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(
                not (torch.cuda.is_available() and has_compiled_ops() and _loader.cuda_compiled()),
                reason="needs a CUDA device and distill._C built with CUDA",
            ),
        ],
    ),
]
ROI_ALIGN_PARAMS = (3, 2, 0, True, 2, 224.0, 4)  # output_h, output_w, sampling_ratio, aligned, min_level, ...


def roi_case(device, requires_grad=False):
    features = random_features(channels=2, image=(40, 56), dtype=torch.float64, seed=5)
    rois = random_rois(8, image=(40, 56), seed=6, dtype=torch.float64)
    return [f.to(device).requires_grad_(requires_grad) for f in features], rois.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_multilevel_roi_align(device):
    features, rois = roi_case(device, requires_grad=True)
    torch.library.opcheck(torch.ops.distill.multilevel_roi_align.default, (features, rois, *ROI_ALIGN_PARAMS))


@pytest.mark.parametrize("device", DEVICES)
def test_multilevel_roi_align_backward(device):
    features, rois = roi_case(device)
    grad = torch.randn(
        rois.shape[0], 2, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7)
    )
    b, c = features[0].shape[:2]
    args = (
        grad.to(device),
        rois,
        b,
        c,
        [f.shape[2] for f in features],
        [f.shape[3] for f in features],
        *ROI_ALIGN_PARAMS[2:],
    )
    torch.library.opcheck(torch.ops.distill.multilevel_roi_align_backward.default, args)


def crop_case(device, dtype):
    g = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (3, 40, 56), generator=g, dtype=torch.uint8)
    image = image if dtype == torch.uint8 else image.float() / 255
    boxes = torch.tensor(
        [[2.0, 3.0, 30.0, 25.0], [10.5, 0.0, 56.0, 40.0], [-4.0, 5.0, 20.0, 60.0]], dtype=torch.float64
    )
    return image, boxes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_resample_crops(device, dtype):
    image, boxes = crop_case(device, dtype)
    taps = [t.to(device) for t in crop_taps(image, boxes, 16)]
    args = (image.to(device), *taps, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    torch.library.opcheck(torch.ops.distill.resample_crops.default, args)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_resample_crops_out(dtype):  # CPU only: other devices copy resample_crops' result
    image, boxes = crop_case("cpu", dtype)
    taps = crop_taps(image, boxes, 16)
    out = torch.empty(3, 3, 16, 16)
    torch.library.opcheck(
        torch.ops.distill.resample_crops_out.default, (image, *taps, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], out)
    )


def test_crop_taps():
    start = torch.tensor([2.0, 10.5, -4.0], dtype=torch.float64)
    length = torch.tensor([28.0, 45.5, 24.0], dtype=torch.float64)
    resized = torch.tensor([16.0, 26.0, 16.0], dtype=torch.float64)
    offset = torch.tensor([0.0, 5.0, 0.0], dtype=torch.float64)
    torch.library.opcheck(torch.ops.distill.crop_taps.default, (start, length, resized, offset, 16, 56))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms(dtype):
    g = torch.Generator().manual_seed(11)
    xy = torch.rand(60, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(60, 2, generator=g) * 30], 1).to(dtype)
    scores = torch.rand(60, generator=g).to(dtype)
    torch.library.opcheck(torch.ops.distill.nms.default, (boxes, scores, 0.5))
