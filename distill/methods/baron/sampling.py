"""BARON's bags of regions: from an image's candidate boxes to bags of neighbouring boxes, seeded.

Followed (wusize/ovdet):
- `ovdet/methods/baron/baron_kd.py:BaronKD.sample`, `_sample_topk_proposals`, `_add_gt_boxes`, `_sample_on_topk`:
  the top-k proposals by objectness, ground truth prepended with score 1.
- `ovdet/methods/baron/baron_base.py:BaronBase.preprocess_proposals`: aspect ratio w / h strictly inside
  (thr, 1 / thr), the box's intersection with the image box (0, 0, w - 1, h - 1) over the image's area above
  `area_ratio_thr` (mmdet's 'iof' with the image first), objectness above `objectness_thr`, then NMS.
- `ovdet/methods/baron/neighborhood_sampling.py:NeighborhoodSampling` (`sample`, `_get_left_right_up_down_possibility`,
  `_get_box_possibilities`, `group_generator`, `_sample_boxes_per_group`, `get_spanned_box`, `get_normed_boxes`,
  `pseudo_permutations`): the 3 x 3 grid of the box's size (cells overlap by `-interval` of the box, -0.1 in both
  configs), neighbour probabilities, distinct groups by Bernoulli draws (the centre always in), neighbours clamped
  to [0, w] x [0, h], the spanning box, the boxes normalised to it, distinct random word orders.
- Defaults: `configs/baron/ov_coco/baron_kd_faster_rcnn_r50_fpn_syncbn_90kx2.py` (`sampling_cfg`); LVIS changes
  topk 300 → 500 and max_groups 3 → 6 (`BagSamplingConfig.lvis()`).

Where this differs:
- Randomness comes from a `torch.Generator` (the official code mixes torch's global RNG for the groups and Python's
  `random` for the orders), so the same seed gives the same bags.
- `max_groups` is per KEPT BOX, as in the code (`NeighborhoodSampling.sample` is called per box); a summary that
  says "per image" is not what the code does.
- An image with no usable box gives no bag (`fallback=False`, default). The official code instead keeps the
  highest-scoring candidate when none passes the filters, and samples around the whole image when there is no
  candidate at all: `fallback=True` does that.
- Group and order draws stop after `max_draws` tries (the official generators loop until they find a new one);
  the limit is only reached with vanishing neighbour probabilities, and then the box has fewer groups.
- Neighbours are clamped to the image as in the code, so a neighbour at the border can be smaller than the
  kept box; boxes whose neighbour would leave less than `cut_off_thr + interval` of the box's size to the border
  are never drawn (probability 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...ops import nms
from ...utils.errors import DistillInputError

__all__ = ["Bag", "BagSamplingConfig", "filter_candidates", "neighbour_probabilities", "sample_bags"]

# cells of the 3 x 3 grid, row-major; 4 is the kept box
CENTRE = 4
_LEFT, _RIGHT, _UP, _DOWN = [0, 3, 6], [2, 5, 8], [0, 1, 2], [6, 7, 8]
_CORNERS = [0, 2, 6, 8]


@dataclass(frozen=True)
class BagSamplingConfig:
    """The official `sampling_cfg` (COCO defaults)."""

    topk: int = 300
    shape_ratio_thr: float = 0.25
    area_ratio_thr: float = 0.01
    objectness_thr: float = 0.85
    nms_thr: float = 0.1
    max_groups: int = 3  # per kept box
    max_permutations: int = 2
    alpha: float = 3.0
    cut_off_thr: float = 0.3
    base_probability: float = 0.3
    interval: float = -0.1
    fallback: bool = False  # True: the official fallbacks (see the module docstring)
    max_draws: int = 10_000

    @classmethod
    def lvis(cls, **overrides) -> "BagSamplingConfig":
        return cls(**{"topk": 500, "max_groups": 6, **overrides})


@dataclass
class Bag:
    """One group of neighbouring boxes around a kept box, K boxes, P word orders.

    boxes: (K, 4) XYXY in the image, in increasing grid-cell order.
    normed_boxes: (K, 4) XYXY of `boxes` relative to `spanned_box` ((box - x1y1) / (span wh + 1e-12), in [0, 1]).
    spanned_box: (4,) XYXY, the smallest box holding all K boxes (the teacher's crop).
    cells: (K,) int64 grid cells, 0..8 row-major, 4 the kept box.
    permutations: (P, K) int64 distinct word orders: sequence p is `boxes[permutations[p]]`.
    source: index of the kept box (in `filter_candidates`' output) the bag was drawn around.
    """

    boxes: torch.Tensor
    normed_boxes: torch.Tensor
    spanned_box: torch.Tensor
    cells: torch.Tensor
    permutations: torch.Tensor
    source: int


def _check_boxes(name: str, boxes: torch.Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise DistillInputError(f"BARON bag sampling: {name} must be (M, 4) XYXY, got {tuple(boxes.shape)}")


def filter_candidates(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_hw: tuple[int, int],
    cfg: BagSamplingConfig = BagSamplingConfig(),
    gt_boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """The boxes bags are drawn around (official `_sample_topk_proposals` + `_add_gt_boxes` + `preprocess_proposals`).

    Args:
        boxes: (M, 4) XYXY proposals in the input image; scores: (M,) their objectness in [0, 1].
        image_hw: the input image's (h, w).
        gt_boxes: (G, 4) XYXY ground truth, added with objectness 1 (official `use_gt=True`), or None.
    Returns:
        (K, 4) kept boxes, in NMS order (decreasing score); (0, 4) when none is usable and `cfg.fallback` is off.
    """
    _check_boxes("boxes", boxes)
    if scores.shape != boxes.shape[:1]:
        raise DistillInputError(
            f"BARON bag sampling: scores must be ({boxes.shape[0]},), got {tuple(scores.shape)}"
        )
    h, w = float(image_hw[0]), float(image_hw[1])
    boxes, scores = boxes.float(), scores.float()
    if boxes.shape[0] > cfg.topk:
        top = scores.topk(cfg.topk).indices
        boxes, scores = boxes[top], scores[top]
    if gt_boxes is not None and gt_boxes.numel() > 0:
        _check_boxes("gt_boxes", gt_boxes)
        gt = gt_boxes.to(boxes)
        boxes, scores = torch.cat([gt, boxes]), torch.cat([scores.new_ones(gt.shape[0]), scores])
    if boxes.shape[0] == 0:
        if not cfg.fallback:
            return boxes.new_zeros((0, 4))
        return boxes.new_tensor([[0.0, 0.0, w - 1.0, h - 1.0]])  # official: the whole image, score 1

    wh = boxes[:, 2:] - boxes[:, :2]
    ratio = wh[:, 0] / (wh[:, 1] + 1e-12)
    # mmdet bbox_overlaps(image_box, boxes, 'iof'): intersection over the IMAGE box's area
    iw = (boxes[:, 2].clamp(max=w - 1.0) - boxes[:, 0].clamp(min=0.0)).clamp(min=0.0)
    ih = (boxes[:, 3].clamp(max=h - 1.0) - boxes[:, 1].clamp(min=0.0)).clamp(min=0.0)
    area_ratio = iw * ih / ((w - 1.0) * (h - 1.0))
    valid = (
        (ratio > cfg.shape_ratio_thr)
        & (ratio < 1.0 / cfg.shape_ratio_thr)
        & (area_ratio > cfg.area_ratio_thr)
        & (scores > cfg.objectness_thr)
    )
    if not valid.any():
        if not cfg.fallback:
            return boxes.new_zeros((0, 4))
        return boxes[scores.argmax()][None]  # official: the best candidate alone, no NMS
    boxes, scores = boxes[valid], scores[valid]
    return boxes[nms(boxes, scores, cfg.nms_thr)]


def neighbour_probabilities(
    box: tuple[float, float, float, float], image_hw: tuple[int, int], cfg: BagSamplingConfig
) -> torch.Tensor:
    """(9,) float32 probability of each grid cell joining a group; the centre (4) is 1.

    Official `_get_left_right_up_down_possibility` then `_get_box_possibilities`: left / right
    base * (h / w) ** alpha, up / down base * (w / h) ** alpha, zero where the border is no farther than
    (cut_off_thr + interval) box sizes, clipped to [0, base]; side cells take one direction, corners the square
    root of the product of their two."""
    img_h, img_w = float(image_hw[0]), float(image_hw[1])
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1 + 1e-12, y2 - y1 + 1e-12
    lrud = torch.tensor([bh / bw, bh / bw, bw / bh, bw / bh], dtype=torch.float32) ** cfg.alpha
    lrud = lrud * cfg.base_probability
    room = torch.tensor([x1 / bw, (img_w - x2) / bw, y1 / bh, (img_h - y2) / bh], dtype=torch.float32)
    lrud = lrud * (room > cfg.cut_off_thr + cfg.interval).float()
    lrud = lrud.clamp(0.0, cfg.base_probability).nan_to_num(0.0)
    p = torch.ones(9, dtype=torch.float32)
    for cells, q in zip((_LEFT, _RIGHT, _UP, _DOWN), lrud):
        p[cells] *= q
    p[_CORNERS] = p[_CORNERS].sqrt()
    return p.clamp(0.0, 1.0)


def _grid(box: tuple[float, float, float, float], interval: float) -> torch.Tensor:
    """(9, 4) XYXY the 3 x 3 cells of the box's size, cell 4 the box (official `box_templates`)."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1 + 1e-12, y2 - y1 + 1e-12
    cells = []
    for i in range(3):
        dy = (i - 1.0) * interval
        for j in range(3):
            dx = (j - 1.0) * interval
            cells.append([j + dx, i + dy, j + 1.0 + dx, i + 1.0 + dy])
    t = torch.tensor(cells, dtype=torch.float32) * torch.tensor([bw, bh, bw, bh], dtype=torch.float32)
    return t + (torch.tensor(box, dtype=torch.float32) - t[CENTRE])


def _distinct_groups(p: torch.Tensor, n: int, cfg: BagSamplingConfig, g: torch.Generator) -> list[list[int]]:
    seen: set[tuple[int, ...]] = set()
    groups: list[list[int]] = []
    for _ in range(cfg.max_draws):
        if len(groups) == n:
            break
        cells = tuple(torch.bernoulli(p, generator=g).nonzero().flatten().tolist())
        if cells not in seen:
            seen.add(cells)
            groups.append(list(cells))
    return groups


def _distinct_orders(k: int, cfg: BagSamplingConfig, g: torch.Generator) -> torch.Tensor:
    n = min(math.factorial(k), cfg.max_permutations)
    seen: set[tuple[int, ...]] = set()
    orders: list[tuple[int, ...]] = []
    for _ in range(cfg.max_draws):
        if len(orders) == n:
            break
        perm = tuple(torch.randperm(k, generator=g).tolist())
        if perm not in seen:
            seen.add(perm)
            orders.append(perm)
    return torch.tensor(orders, dtype=torch.int64).reshape(len(orders), k)


def sample_bags(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_hw: tuple[int, int],
    generator: torch.Generator,
    cfg: BagSamplingConfig = BagSamplingConfig(),
    gt_boxes: torch.Tensor | None = None,
) -> list[Bag]:
    """One image's bags (official `BaronKD.sample`): kept boxes by `filter_candidates`, then up to
    `cfg.max_groups` distinct groups around each (min(max_groups, n!) for n drawable neighbours), each with up to
    `cfg.max_permutations` distinct word orders (min(max_permutations, K!)).

    Args:
        boxes: (M, 4) XYXY proposals; scores: (M,) objectness; image_hw: (h, w) of the input image.
        generator: a CPU `torch.Generator`; the only source of randomness.
        gt_boxes: (G, 4) XYXY ground truth or None.
    Returns:
        bags in kept-box order, groups in draw order; [] when no box is usable. Tensors on `boxes.device`.
    """
    kept = filter_candidates(boxes, scores, image_hw, cfg, gt_boxes).cpu()
    h, w = float(image_hw[0]), float(image_hw[1])
    bags: list[Bag] = []
    for source, box in enumerate(kept.tolist()):
        p = neighbour_probabilities(box, image_hw, cfg)
        n_context = int((p > 0).sum()) - 1
        groups = _distinct_groups(p, min(cfg.max_groups, math.factorial(n_context)), cfg, generator)
        grid = _grid(box, cfg.interval)
        for cells in groups:
            b = grid[cells].clone()
            b[:, 0::2] = b[:, 0::2].clamp(0.0, w)  # official clamp_with_image_size: x to [0, w], y to [0, h]
            b[:, 1::2] = b[:, 1::2].clamp(0.0, h)
            span = torch.cat([b[:, :2].min(0).values, b[:, 2:].max(0).values])
            normed = (b.view(-1, 2, 2) - span[:2]) / (span[2:] - span[:2] + 1e-12)
            bags.append(
                Bag(
                    boxes=b.to(boxes.device),
                    normed_boxes=normed.view(-1, 4).to(boxes.device),
                    spanned_box=span.to(boxes.device),
                    cells=torch.tensor(cells, dtype=torch.int64, device=boxes.device),
                    permutations=_distinct_orders(len(cells), cfg, generator).to(boxes.device),
                    source=source,
                )
            )
    return bags
