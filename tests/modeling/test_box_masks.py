import numpy as np
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from distill.integrations.torchvision.meta_arch import detections_to_coco
from distill.modeling.masks import BoxMasks, iter_full_masks
from distill.utils.visualize import draw_detections


def _dets(n=7, h=61, w=83):
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(n, 1, 14, 14, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - 5
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    boxes = torch.cat([xy, xy + wh], 1)  # some leave the image
    return probs, boxes, (h, w)


def test_box_masks_paste_the_pixels_paste_masks_in_image_pastes():
    probs, boxes, size = _dets()
    ref = paste_masks_in_image(probs, boxes, size)[:, 0]
    bm = BoxMasks(probs, boxes, size)
    assert bm.shape == (7, *size)
    assert torch.equal(bm.dense(), ref)
    assert all(torch.equal(bm.full(i), ref[i] > 0.5) for i in range(7))
    sub = bm[torch.tensor([4, 1])]
    assert torch.equal(sub.dense(), ref[[4, 1]])
    full = np.stack(list(iter_full_masks(bm)))
    assert np.array_equal(full, (ref > 0.5).numpy().astype(np.uint8))


def test_coco_rles_and_drawing_same_as_with_dense_masks():
    probs, boxes, size = _dets()
    det = {"boxes": boxes, "scores": torch.linspace(1, 0.4, 7), "labels": torch.arange(7) % 3}
    dense = detections_to_coco({**det, "masks": paste_masks_in_image(probs, boxes, size)[:, 0]}, 1, [1, 2, 3])
    lazy = detections_to_coco({**det, "masks": BoxMasks(probs, boxes, size)}, 1, [1, 2, 3])
    assert dense == lazy
    img = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    ref = paste_masks_in_image(probs, boxes, size)[:, 0].numpy() > 0.5
    from distill.modeling.masks import iter_local_masks

    a = draw_detections(img, boxes.numpy(), [0] * 7, [0.9] * 7, ["x"], ref[:1])
    b = draw_detections(
        img,
        boxes.numpy(),
        [0] * 7,
        [0.9] * 7,
        ["x"],
        list(iter_local_masks(BoxMasks(probs, boxes, size)))[:1],
    )
    assert np.array_equal(a, b)
