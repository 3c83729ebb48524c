import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from distill.teacher import check_boxes, create_teacher
from distill.teacher.prompts import build_prompts
from distill.utils import DistillInputError


def test_unknown_names_are_clear_errors(tiny_weights):
    with pytest.raises(DistillInputError, match="did you mean ViT-B-32"):
        create_teacher("ViT-B-3")
    with pytest.raises(DistillInputError, match="unknown pretrained tag 'nope'"):
        create_teacher("distill-tiny-vit", "nope")
    with pytest.raises(DistillInputError, match="teacher checkpoint not found"):
        create_teacher("distill-tiny-vit", "/no/such/file.pt")


def test_encode_text_is_the_normalised_mean_of_normalised_prompts(tiny_teacher):
    t = tiny_teacher
    emb = t.encode_text(["traffic_light", "star"], "vild")
    assert emb.shape == (2, t.dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    prompts = build_prompts("traffic_light", "vild")
    with torch.no_grad():
        each = F.normalize(t.model.encode_text(t.tokenizer(prompts)).float(), dim=-1)
    assert torch.allclose(emb[0], F.normalize(each.mean(0), dim=0), atol=1e-5)
    with pytest.raises(DistillInputError, match="empty vocabulary"):
        t.encode_text([])


def _image(synthetic_root, name="000002.png"):
    bgr = cv2.imread(str(synthetic_root / "images/val" / name))
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _gt_boxes(synthetic_root, image_index=2):
    val = json.loads((synthetic_root / "annotations/instances_val.json").read_text())
    image_id = val["images"][image_index - 1]["id"]
    b = torch.tensor([a["bbox"] for a in val["annotations"] if a["image_id"] == image_id])
    return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def test_encode_regions_sums_normalised_scales(tiny_teacher, synthetic_root):
    t = tiny_teacher
    img = torch.from_numpy(_image(synthetic_root)).permute(2, 0, 1)
    boxes = _gt_boxes(synthetic_root)
    emb = t.encode_regions([img, img], [boxes, boxes[:1]], scales=(1.0, 1.5))
    assert emb.shape == (boxes.shape[0] + 1, t.dim)
    one = t.encode_image(t.crop_regions(img, boxes, 1.0))
    big = t.encode_image(t.crop_regions(img, boxes, 1.5))
    assert torch.allclose(emb[: boxes.shape[0]], F.normalize(one + big, dim=-1), atol=1e-5)
    assert torch.allclose(emb[-1], emb[0], atol=1e-5)
    assert t.encode_regions([img], [torch.zeros(0, 4)]).shape == (0, t.dim)


def test_center_mode_agrees_with_per_box_pil_reference(tiny_teacher, synthetic_root):
    """Batched crops vs PIL crop → open_clip preprocess → encode, box by box (ViLD's two scales)."""
    t = tiny_teacher
    rgb = _image(synthetic_root)
    boxes = _gt_boxes(synthetic_root)
    ours = t.encode_regions([torch.from_numpy(rgb).permute(2, 0, 1)], [boxes], scales=(1.0, 1.5))
    pil = Image.fromarray(rgb)
    ref = []
    for s in (1.0, 1.5):
        from distill.teacher import scale_boxes

        crops = torch.stack([t.preprocess(pil.crop(tuple(b.tolist()))) for b in scale_boxes(boxes, s)])
        ref.append(t.encode_image(crops))
    ref = F.normalize(ref[0] + ref[1], dim=-1)
    assert F.cosine_similarity(ours, ref).min() >= 0.99


def test_encode_pixels_vit_shapes_and_value_path(tiny_teacher):
    t = tiny_teacher
    imgs = torch.rand(2, 3, 96, 128)
    dense = t.encode_pixels(imgs)
    assert dense.shape == (2, t.dim, 12, 16)
    assert torch.allclose(dense.norm(dim=1), torch.ones(2, 12, 16), atol=1e-4)
    # a different image changes the embeddings; the same image gives the same
    assert torch.allclose(t.encode_pixels(imgs[:1]), dense[:1], atol=1e-5)
    assert not torch.allclose(dense[0], dense[1])


def test_encode_pixels_resnet(tmp_path):
    import open_clip

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "distill-test-rn.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "distill-test-rn.json")
    t = create_teacher("distill-test-rn")
    dense = t.encode_pixels(torch.rand(1, 3, 128, 96))
    assert dense.shape == (1, 32, 4, 3)


def test_check_boxes():
    b = torch.tensor(
        [[0, 0, 10, 10], [5, 5, 5, 20], [200, 200, 300, 300], [0, 0, float("nan"), 4], [-5, -5, 3, 3]]
    )
    assert check_boxes(b.float(), 100, 100).tolist() == [True, False, False, False, True]
    with pytest.raises(DistillInputError, match=r"\(N, 4\)"):
        check_boxes(torch.zeros(3), 10, 10)
