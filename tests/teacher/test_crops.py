import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from distill.teacher import center_square, crop_resize_normalize, scale_boxes

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_scale_boxes_geometry_and_no_aliasing():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    keep = boxes.clone()
    big = scale_boxes(boxes, 1.5)
    # each side moves out by a quarter of the width / height: 1.5x, not 2x
    assert big.tolist() == [[0.0, 0.0, 60.0, 120.0]]
    assert torch.equal(boxes, keep)
    same = scale_boxes(boxes, 1.0)
    same[0, 0] = -1
    assert torch.equal(boxes, keep)


def test_center_square():
    sq = center_square(torch.tensor([[0.0, 0.0, 40.0, 100.0], [10.0, 10.0, 30.0, 20.0]]))
    assert sq.tolist() == [[0.0, 30.0, 40.0, 70.0], [15.0, 10.0, 25.0, 20.0]]


@pytest.fixture(scope="module")
def smooth_image(synthetic_root):
    bgr = cv2.imread(str(synthetic_root / "images/val/000001.png"))
    rgb = cv2.resize(bgr[:, :, ::-1], (384, 320), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb)


@pytest.mark.parametrize("size", [64, 224])
def test_center_crops_match_pil_preprocessing(smooth_image, size):
    """What open_clip's preprocessing does to a PIL crop of each box, to within resampling differences."""
    import open_clip

    pre = open_clip.image_transform(size, is_train=False, mean=MEAN, std=STD)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(24, 2, generator=g) * torch.tensor([300.0, 250.0])
    boxes = torch.cat([xy, xy + 8 + torch.rand(24, 2, generator=g) * 300], 1).round()  # some past the border
    pil = Image.fromarray(smooth_image)
    ref = torch.stack([pre(pil.crop(tuple(b.tolist()))) for b in boxes])
    out = crop_resize_normalize(
        torch.from_numpy(smooth_image).permute(2, 0, 1), boxes, size, MEAN, STD, "center"
    )
    cos = torch.nn.functional.cosine_similarity(out.flatten(1), ref.flatten(1))
    assert cos.min() > 0.999
    # PIL rounds between its two passes; we round once: at most a few 8-bit levels apart
    raw_diff = ((out - ref) * torch.tensor(STD).view(1, 3, 1, 1)).abs()
    assert raw_diff.mean() < 1 / 255 and raw_diff.max() < 8 / 255


def test_stretch_and_black_padding():
    img = torch.full((3, 40, 40), 0.5)
    # box half outside on the left: that half is black (0 before normalisation), the rest grey
    out = crop_resize_normalize(img, torch.tensor([[-20.0, 0.0, 20.0, 40.0]]), 32, MEAN, STD, "stretch")
    raw = out * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert torch.allclose(raw[0, :, :, :14], torch.zeros(3, 32, 14), atol=1e-5)
    assert torch.allclose(raw[0, :, :, 18:], torch.full((3, 32, 14), 0.5), atol=1 / 255)
    assert crop_resize_normalize(img, torch.zeros(0, 4), 32, MEAN, STD).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="geometry"):
        crop_resize_normalize(img, torch.zeros(1, 4), 32, MEAN, STD, "square")
