"""Zero-shot detection by the teacher alone: the training-free proposals, the scoring, the selection, and the
RPN proposal source of a (random) torchvision detector."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from distill.modeling.selective_search import SelectiveSearchConfig, selective_search, superpixels
from distill.modeling.zero_shot import (
    ZeroShotConfig,
    ZeroShotDetector,
    class_probabilities,
    combine_objectness,
    detect_regions,
    logit_scale,
    select_detections,
)
from tests.teacher.conftest import tiny_teacher, tiny_weights  # noqa: F401  (fixtures)

OBJECTS = ((12, 10, 40, 34), (50, 30, 88, 70))  # XYXY of two filled shapes on a 96 x 80 image


def _image(h=80, w=96) -> np.ndarray:
    """(H, W, 3) uint8: a striped, noisy background with a red rectangle and a blue disc (OBJECTS)."""
    rng = np.random.default_rng(0)
    img = np.full((h, w, 3), 120, np.uint8)
    img[:, ::6] = 100
    img = np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = OBJECTS[0]
    img[y0:y1, x0:x1] = (220, 40, 40)
    x0, y0, x1, y1 = OBJECTS[1]
    cv2.ellipse(
        img, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, (40, 80, 220), -1
    )
    return img


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------ selective search
def test_superpixels_cover_the_image_with_dense_labels():
    labels = superpixels(_image(), 8)
    assert labels.shape == (80, 96) and labels.min() == 0
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))  # no gaps, no watershed lines
    assert 60 <= labels.max() + 1 <= 130  # about one region per 8 x 8 seed cell


def test_selective_search_finds_the_objects_inside_the_image_deterministically():
    img = _image()
    cfg = SelectiveSearchConfig(max_proposals=50)
    boxes, scores = selective_search(_tensor(img), cfg)
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4 and 2 <= boxes.shape[0] <= 50
    assert scores.shape == (boxes.shape[0],) and ((scores > 0) & (scores <= 1)).all()
    assert (scores[:-1] >= scores[1:]).all()  # best first
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 80).all()
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    best = box_iou(torch.tensor(OBJECTS, dtype=torch.float32), boxes).max(1).values
    assert (best >= 0.7).all(), best
    again, again_scores = selective_search(img, cfg)  # the (H, W, 3) array form gives the same
    assert torch.equal(boxes, again) and torch.equal(scores, again_scores)


def test_selective_search_of_a_large_photo_works_at_its_working_size_and_answers_in_its_pixels():
    img = cv2.resize(_image(), (960, 800), interpolation=cv2.INTER_NEAREST)  # 10x
    boxes, _ = selective_search(img, SelectiveSearchConfig(max_proposals=50))
    assert boxes.shape[0] <= 50 and (boxes[:, 2] <= 960).all() and (boxes[:, 3] <= 800).all()
    objects = torch.tensor(OBJECTS, dtype=torch.float32) * 10
    assert (box_iou(objects, boxes).max(1).values >= 0.5).all()  # AP50's criterion


def test_selective_search_config_is_checked():
    with pytest.raises(ValueError, match="unknown strategies"):
        SelectiveSearchConfig(strategies=("colour",))
    with pytest.raises(ValueError, match="grid fractions"):
        SelectiveSearchConfig(grid_fractions=(0.0,))


# ------------------------------------------------------------------ scoring and selection
def test_class_probabilities_are_a_softmax_of_scaled_cosines():
    g = torch.Generator().manual_seed(0)
    regions = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    classes = F.normalize(torch.randn(3, 8, generator=g), dim=1)
    p = class_probabilities(regions, classes, 20.0)
    assert p.shape == (5, 3) and torch.allclose(p.sum(1), torch.ones(5))
    assert torch.allclose(p, torch.softmax(20.0 * regions @ classes.t(), 1))
    obj = torch.rand(5, generator=g)
    assert torch.allclose(combine_objectness(p, obj, 0.5), (p * obj[:, None]).sqrt())
    assert torch.equal(combine_objectness(p, obj, 0.0), p) and torch.equal(
        combine_objectness(p, None, 0.5), p
    )


def test_select_detections_is_per_class_nms():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.2, 0.3]])
    det = select_detections(boxes, scores, ZeroShotConfig(nms_thresh=0.5))
    got = {(int(b[0]), int(b[3]), int(lab)) for b, lab in zip(det["boxes"], det["labels"])}
    # class 0: box 1 suppressed by box 0; class 1: box 1 (0.7) suppresses box 0 (0.1)
    assert got == {(0, 10, 0), (0, 11, 1), (50, 60, 0), (50, 60, 1)}
    assert (det["scores"][:-1] >= det["scores"][1:]).all()
    assert select_detections(boxes, scores, ZeroShotConfig(max_detections=2))[
        "scores"
    ].tolist() == pytest.approx([0.9, 0.7])


def test_detect_regions_labels_each_proposal_by_its_own_embedding(tiny_teacher):  # noqa: F811
    """Class k's embedding is proposal k's region embedding: each proposal is detected as its own class, with
    its box unchanged (no regression)."""
    image = _tensor(_image())
    proposals = torch.tensor([[*OBJECTS[0]], [*OBJECTS[1]], [0, 40, 30, 80]], dtype=torch.float32)
    classes = tiny_teacher.encode_regions([image], [proposals], (1.0, 1.5))
    cfg = ZeroShotConfig(nms_thresh=1.0)
    det = detect_regions(tiny_teacher, image, proposals, None, classes, cfg)
    assert det["boxes"].shape == (9, 4) and det["scores"].shape == (9,) and det["labels"].dtype == torch.int64
    assert ((det["scores"] >= 0) & (det["scores"] <= 1)).all()
    for k in range(3):  # the best detection of proposal k's box is class k
        mine = (det["boxes"] == proposals[k]).all(1)
        assert mine.sum() == 3
        assert det["labels"][mine][det["scores"][mine].argmax()] == k
    assert torch.equal(
        detect_regions(tiny_teacher, image, proposals, None, classes, cfg)["scores"], det["scores"]
    )


def test_detect_regions_drops_unusable_proposals_and_clips_to_the_image(tiny_teacher):  # noqa: F811
    image = _tensor(_image())
    classes = tiny_teacher.encode_text(["red square", "blue circle"], "simple")
    proposals = torch.tensor(
        [[-20, -20, 40, 34], [50, 50, 50, 60], [200, 200, 300, 300]], dtype=torch.float32
    )
    det = detect_regions(tiny_teacher, image, proposals, torch.tensor([1.0, 1.0, 1.0]), classes)
    assert det["boxes"].shape[0] == 2  # the empty and the outside proposals give nothing
    assert torch.equal(det["boxes"][0], torch.tensor([0.0, 0.0, 40.0, 34.0]))
    nothing = detect_regions(tiny_teacher, image, torch.zeros(0, 4), None, classes)
    assert nothing["boxes"].shape == (0, 4) and nothing["labels"].shape == (0,)
    with pytest.raises(ValueError, match="class embeddings"):
        detect_regions(tiny_teacher, image, proposals, None, torch.zeros(2, 7))


def test_the_detector_combines_proposer_teacher_and_objectness(tiny_teacher):  # noqa: F811
    image = _tensor(_image())
    boxes = torch.tensor([[*OBJECTS[0]], [*OBJECTS[1]]], dtype=torch.float32)
    objectness = torch.tensor([1.0, 0.01])
    classes = tiny_teacher.encode_text(["red square", "blue circle"], "simple")
    plain = ZeroShotDetector(tiny_teacher, classes, lambda img: (boxes, objectness))(image)
    weighted = ZeroShotDetector(
        tiny_teacher, classes, lambda img: (boxes, objectness), ZeroShotConfig(objectness_weight=0.5)
    )(image)
    on_second = (weighted["boxes"] == boxes[1]).all(1)
    plain_second = (plain["boxes"] == boxes[1]).all(1)
    assert torch.allclose(
        weighted["scores"][on_second].sort()[0], (plain["scores"][plain_second] * 0.01).sqrt().sort()[0]
    )
    assert 0 < logit_scale(tiny_teacher) <= 100


# ------------------------------------------------------------------ RPN proposals of a torchvision detector
def test_rpn_proposer_answers_in_the_image_pixels():
    from distill.config import load_config
    from distill.integrations.torchvision import backend as tv_backend
    from distill.integrations.torchvision.builders import build_detector
    from distill.integrations.zero_shot import rpn_proposer
    from distill.teacher import ClassEmbeddings
    from tests.conftest import REPO, SMALL_STUDENT

    cfg = load_config(
        str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml"),
        [*SMALL_STUDENT, "MODEL.RPN.POST_NMS_TOPK_TEST", "40", "MODEL.BACKBONE.WEIGHTS", ""],
    )
    torch.manual_seed(0)
    vocab = ClassEmbeddings(F.normalize(torch.randn(3, 128), dim=1), ["a", "b", "c"])
    model = build_detector(cfg, vocab).eval()
    image = _tensor(cv2.resize(_image(), (192, 160)))  # read at MIN_SIZE_TEST 96: boxes scaled back by 5/3
    propose = rpn_proposer("torchvision", tv_backend.TorchvisionBackend(), model, cfg, 25)
    boxes, scores = propose(image)
    assert 1 <= boxes.shape[0] <= 25 and scores.shape == (boxes.shape[0],)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (boxes[:, 2] <= 192 + 1e-3).all() and (boxes[:, 3] <= 160 + 1e-3).all() and (boxes >= 0).all()
    assert boxes[:, 2].max() > 96 or boxes[:, 3].max() > 80  # in original pixels, not the resized image's
