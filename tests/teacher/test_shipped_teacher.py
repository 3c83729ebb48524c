"""The shipped tiny teacher: loads by model-zoo name, matches the per-box PIL reference, and classifies crops."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from distill.model_zoo import get_entry, has_entry
from distill.teacher import create_teacher, scale_boxes
from distill.teacher.training import zero_shot_accuracy

NAME = "synthetic-tiny-teacher"
pytestmark = pytest.mark.skipif(not has_entry(NAME), reason="the shipped teacher is not in the model zoo")


@pytest.fixture(scope="module")
def teacher():
    return create_teacher(NAME)


def test_entry_and_provenance(teacher):
    entry = get_entry(NAME)
    assert entry["kind"] == "teacher" and teacher.arch == entry["arch"] and teacher.pretrained == NAME
    assert teacher.dim == 128 and teacher.input_size == 64


def test_center_crops_agree_with_pil_reference(teacher, synthetic_root):
    val = json.loads((synthetic_root / "annotations/instances_val.json").read_text())
    cos = []
    for im in val["images"][:6]:
        rgb = np.array(
            Image.open(synthetic_root / "images/val" / im["file_name"]).convert("RGB")
        )  # writable copy
        b = torch.tensor(
            [a["bbox"] for a in val["annotations"] if a["image_id"] == im["id"]], dtype=torch.float32
        )
        boxes = torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1)
        ours = teacher.encode_regions([torch.from_numpy(rgb).permute(2, 0, 1)], [boxes], scales=(1.0, 1.5))
        pil = Image.fromarray(rgb)
        ref = sum(
            teacher.encode_image(
                torch.stack([teacher.preprocess(pil.crop(tuple(x.tolist()))) for x in scale_boxes(boxes, s)])
            )
            for s in (1.0, 1.5)
        )
        cos.append(F.cosine_similarity(ours, F.normalize(ref, dim=-1)))
    assert torch.cat(cos).min() >= 0.99


def test_zero_shot_accuracy_on_a_fresh_benchmark(teacher, synthetic_root):
    """A different seed and size than the full check in the closing note; a sanity floor, not the bar."""
    acc = zero_shot_accuracy(teacher, synthetic_root)
    assert acc["acc_all"] >= 75 and acc["acc_novel"] >= 65
