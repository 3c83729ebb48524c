"""ONNX export of the torchvision backend's open-vocabulary detector and open-vocabulary segmenter, the vocabulary's
class embeddings baked in as constants. Torchvision-only (tools/export_model.py refuses detectron2 checkpoints).

The graphs take a fixed-size canvas: `images` (B, 3, H, W) float32 RGB 0-255, each image resized by the size
rule of model.json and placed at the top-left, and `image_sizes` (B, 2) int64 (h, w) of the image inside
the canvas. Detector outputs, over the whole batch: boxes (N, 4) XYXY in canvas pixels, scores (N,),
classes (N,) vocabulary indices, masks (N, 28, 28) mask probabilities inside each box, batch_index (N,).
Segmenter output: labels (B, H, W) int64, 0 background and i + 1 the i-th class (meaningless outside each
image).

Parity with the eager model: the graph first crops the canvas to the batch's largest (h, w) rounded up to
the model's size_divisible (32), normalises it and zeroes it past each image: the tensor `normalize_and_pad`
builds for the same batch. The network then runs at the eager model's size whatever the canvas (a larger
canvas would change the features near the padded edge, where the eager convolutions see zero padding, and
add anchors the eager model never has); proposals and boxes are clipped to each image's (h, w). For one
image per run (OnnxModel) the outputs are the eager model's on that image; for a batch, the eager model's on
that batch. The canvas must be a multiple of size_divisible; the default one, INPUT.MAX_SIZE_TEST rounded up,
square, holds every image the detector's size rule makes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import nms

from ...modeling.clip_backbone import VLM_KEY
from ...ops.onnx import register_onnx_symbolics
from ...ops.roi_align import has_compiled_ops, multilevel_roi_align
from ...teacher.embeddings import ClassEmbeddings, names_sha256
from ...utils.checkpoint import load_torch_file
from ...utils.errors import DistillInputError
from ...utils.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)
FORMAT = "distill.onnx_model/1"
DETECTOR_OUTPUTS = ["boxes", "scores", "classes", "masks", "batch_index"]
SEGMENTER_OUTPUTS = ["labels"]


def _normalize(images: torch.Tensor, image_sizes: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
    """(B, 3, H, W) 0-255 → normalised, zero outside each image's (h, w), as `normalize_and_pad`."""
    h, w = images.shape[-2:]
    rows = torch.arange(h, device=images.device)[None, :, None] < image_sizes[:, 0, None, None]
    cols = torch.arange(w, device=images.device)[None, None, :] < image_sizes[:, 1, None, None]
    return (images - mean) / std * (rows & cols)[:, None].to(images.dtype)


def _padded_batch(images: torch.Tensor, image_sizes: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """The eager model's input tensor: the canvas (B, 3, H, W) cropped to the batch's largest (h, w) rounded
    up to `model.size_divisible`, normalised and zero past each image, as `normalize_and_pad` builds it.

    Cropping, not masking: convolutions near the padded edge see zeros past it in the eager model, and
    anchors exist only inside it; a larger canvas would change both. The crop is data-dependent (a Range
    and a Gather in the graph), so the network runs at the eager model's size whatever the canvas."""
    d = int(model.size_divisible)
    crop = []
    for axis in (0, 1):
        side = (image_sizes[:, axis].max() + (d - 1)) // d * d
        side = side.clamp(max=images.shape[2 + axis])  # image_sizes past the canvas: no out-of-range crop
        crop.append(torch.arange(side, device=images.device))
    x = images.index_select(2, crop[0]).index_select(3, crop[1])
    return _normalize(x, image_sizes, model.pixel_mean, model.pixel_std)


def _clip(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes clipped to per-box (N, 2) (h, w)."""
    wh = sizes.flip(1).to(boxes.dtype).repeat(1, 2)
    return torch.min(boxes.clamp(min=0), wh)


def _batched_nms(boxes, scores, groups, iou: float, offset: torch.Tensor) -> torch.Tensor:
    """NMS within each group: boxes offset by group * `offset` (larger than any coordinate), as torchvision's
    coordinate trick. Kept indices by decreasing score."""
    return nms(boxes + (groups.to(boxes.dtype) * offset)[:, None], scores, iou)


def _first_per_image(image: torch.Tensor, k: int, batch) -> torch.Tensor:
    """(N,) bool: among entries in decreasing score, the first `k` of each image."""
    onehot = (image[:, None] == torch.arange(batch, device=image.device)[None]).to(torch.int64)
    return (onehot.cumsum(0) * onehot).sum(1) <= k


def _pool(pooler, levels, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    rois = torch.cat([image[:, None].to(boxes.dtype), boxes], 1)
    return multilevel_roi_align(
        levels,
        rois,
        pooler.output_size,
        pooler.strides,
        pooler.sampling_ratio,
        pooler.aligned,
        pooler.canonical_box_size,
        pooler.canonical_level,
        check_inputs=False,
    )


class ExportableDetector(nn.Module):
    """`OpenVocabDetector` inference as one traceable graph (batched, no per-image Python loop)."""

    def __init__(self, model: nn.Module, nms: bool = True):
        super().__init__()
        self.model = model
        self.nms = nms
        self.eval()  # torch.onnx.export restores the wrapper's mode, and with it the model's

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor):
        x = _padded_batch(images, image_sizes, self.model)
        features = dict(self.model.backbone(x))
        vlm = features.pop(VLM_KEY, None)  # a frozen teacher tower's region embedder (F-VLM), in the graph
        levels = list(features.values())
        offset = (image_sizes.max() + 1).to(images.dtype)  # past any coordinate of a box clipped to its image
        boxes, image = self._proposals(x, levels, image_sizes, offset)
        return self._detect(levels[:4], boxes, image, image_sizes, images.shape[0], offset, vlm)

    def _proposals(self, x, levels, image_sizes, offset: torch.Tensor):
        """RPN proposals (P, 4) and their image index (P,), as `RPN.filter_proposals` per image."""
        rpn, b = self.model.rpn, x.shape[0]
        objectness, deltas = rpn.head(levels)
        # anchors per level from the traced shapes (the feature sizes follow the data-dependent crop)
        per_level = [o.shape[1] * o.shape[2] * o.shape[3] for o in objectness]
        level = torch.cat(
            [torch.zeros_like(o[0], dtype=torch.int64).reshape(-1) + i for i, o in enumerate(objectness)]
        )
        anchors = rpn.anchor_generator(ImageList(x[:1], [tuple(x.shape[-2:])]), levels)[0]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        anchors = anchors[None].expand(b, -1, -1).reshape(-1, 4)
        proposals = rpn.box_coder.decode_single(deltas, anchors).view(b, -1, 4)
        objectness = objectness.view(b, -1)
        top = rpn.top_candidates(objectness, per_level)  # (B, K)
        # gathers, not advanced indexing (which ONNX exports as a chain that breaks on negative indices)
        scores = torch.sigmoid(objectness.gather(1, top)).reshape(-1)
        level = level.index_select(0, top.reshape(-1))
        image = torch.arange(b)[:, None].expand_as(top).reshape(-1)
        boxes = proposals.gather(1, top[:, :, None].expand(-1, -1, 4)).reshape(-1, 4)
        boxes = _clip(boxes, image_sizes[image])
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = torch.where(
            (wh[:, 0] >= rpn.min_size) & (wh[:, 1] >= rpn.min_size) & (scores >= rpn.score_thresh)
        )[0]
        boxes, scores, level, image = boxes[keep], scores[keep], level[keep], image[keep]
        keep = _batched_nms(boxes, scores, image * len(per_level) + level, rpn.nms_thresh, offset)
        keep = keep[_first_per_image(image[keep], rpn.post_nms_top_n(), b)]
        return boxes[keep], image[keep]

    def _detect(self, levels, proposals, image, image_sizes, batch, offset: torch.Tensor, vlm=None):
        rh = self.model.roi_heads
        x = rh.box_head(_pool(rh.box_pooler, levels, image, proposals))
        scores, deltas = rh.box_predictor.predict(x, (proposals, image), vlm)
        scores = scores[:, :-1]
        boxes = _clip(rh.box_coder.decode_single(deltas, proposals), image_sizes[image])
        n, c = scores.shape
        classes = torch.arange(c)[None].expand(n, c).reshape(-1)
        boxes = boxes[:, None].expand(n, c, 4).reshape(-1, 4)
        image = image[:, None].expand(n, c).reshape(-1)
        scores = scores.reshape(-1)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = torch.where((scores > rh.score_thresh) & (wh[:, 0] >= 1e-2) & (wh[:, 1] >= 1e-2))[0]
        boxes, scores, classes, image = boxes[keep], scores[keep], classes[keep], image[keep]
        if self.nms:
            keep = _batched_nms(boxes, scores, image * c + classes, rh.nms_thresh, offset)
            keep = keep[_first_per_image(image[keep], rh.detections_per_img, batch)]
        else:
            keep = scores.argsort(descending=True)
        boxes, scores, classes, image = boxes[keep], scores[keep], classes[keep], image[keep]
        if rh.has_mask():
            masks = rh.mask_head(_pool(rh.mask_pooler, levels, image, boxes)).sigmoid()[:, 0]
        else:
            masks = boxes.new_zeros((boxes.shape[0], 0, 0))
        return boxes, scores, classes, masks, image


class ExportableSegmenter(nn.Module):
    """`OpenVocabSegmenter` inference → (B, H, W) int64 pixel values; with the model's `flip_test`, the class of
    the highest mean probability over each image and its mirror, as `predict_sem_seg`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()
        lm = model.predictor.label_map
        values = lm.class_values + ([] if lm.background_value is None else [lm.background_value])
        self.register_buffer("values", torch.tensor(values, dtype=torch.int64), persistent=False)

    def _logits(self, images: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        feats = self.model.backbone(_padded_batch(images, image_sizes, self.model))
        return self.model.predictor([feats[k] for k in ("0", "1", "2", "3")], [])[0]

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        logits = self._logits(images, image_sizes)
        if self.model.flip_test:
            # each image mirrored inside its own width (the eager model mirrors images before padding them)
            idx = _mirror_columns(image_sizes[:, 1], images.shape[3])
            mirrored = self._logits(_gather_columns(images, idx), image_sizes).softmax(1)
            logits = logits.softmax(1) + _gather_columns(mirrored, idx[:, : mirrored.shape[3]])
        return _to_canvas(self.values[logits.argmax(1)], images.shape[-2:])


def _mirror_columns(widths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) column indices that mirror columns 0..w-1 of each image (w its width); past w, column 0."""
    cols = torch.arange(width, device=widths.device)
    return (widths[:, None] - 1 - cols[None, :]).clamp(min=0)


def _gather_columns(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) and (B, W') column indices → (B, C, H, W')."""
    b, c, h, _ = x.shape
    return x.gather(3, idx[:, None, None, :].expand(b, c, h, idx.shape[1]))


def _to_canvas(labels: torch.Tensor, canvas) -> torch.Tensor:
    """(B, h, w) → (B, H, W) on the canvas, the last row and column repeated past (h, w) (pixels outside each
    image mean nothing; the canvas shape keeps the graph's output static)."""
    for axis, side in ((1, canvas[0]), (2, canvas[1])):
        idx = torch.arange(side, device=labels.device).clamp(max=labels.shape[axis] - 1)
        labels = labels.index_select(axis, idx)
    return labels


def _ceil32(v: int) -> int:
    return -(-int(v) // 32) * 32


def default_canvas(cfg, task: str) -> tuple[int, int]:
    """INPUT.MAX_SIZE_TEST rounded up to 32, square: the detector's size rule makes no side longer, either
    way round, so every image keeps the eager model's size. Where nothing is resized (the segmenter, or
    MIN_SIZE_TEST 0) images up to this size are exact and larger ones are shrunk to fit."""
    return (_ceil32(max(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)),) * 2


@contextlib.contextmanager
def _known_export_warnings():
    """Silence, around the export only, the warnings the trace raises by design (the others still show):
    torch's group_norm tests the traced batch size in Python (a check, nothing the graph computes);
    torchvision's box decoding and top-k bound make constants (0.5, pre-NMS top-n) with torch.tensor;
    the TorchScript exporter (dynamo=False, chosen for the custom-op symbolics) announces its deprecation."""
    with warnings.catch_warnings():
        tracer = torch.jit.TracerWarning
        warnings.filterwarnings(
            "ignore", "Converting a tensor to a Python boolean", tracer, r"torch\.nn\.functional"
        )
        warnings.filterwarnings(
            "ignore",
            "torch.tensor results are registered as constants",
            tracer,
            r"torchvision\.models\.detection",
        )
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
        )
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx")
        yield


def _trace_to_onnx(module: nn.Module, canvas, outputs: list[str], dynamic_batch: bool, opset: int) -> bytes:
    if not has_compiled_ops():
        raise DistillInputError(
            "ONNX export traces the compiled distill ops: build them first (make install)"
        )
    register_onnx_symbolics(opset)
    h, w = canvas
    images = torch.zeros(1, 3, h, w)
    sizes = torch.tensor([[h, w]], dtype=torch.int64)
    axes = {"images": {0: "batch"}, "image_sizes": {0: "batch"}} if dynamic_batch else {}
    for name in outputs:
        axes[name] = {0: "batch" if name == "labels" else "detections"}
    if not dynamic_batch and outputs == SEGMENTER_OUTPUTS:
        axes = {}
    buf = io.BytesIO()
    with torch.no_grad(), _known_export_warnings():
        torch.onnx.export(
            module,
            (images, sizes),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["images", "image_sizes"],
            output_names=outputs,
            dynamic_axes=axes,
        )
    return buf.getvalue()


def _check_output(out_dir: Path, force: bool) -> None:
    for name in ("model.onnx", "model.json"):
        if (out_dir / name).exists() and not force:
            raise DistillInputError(f"{name} exists already (use --force to overwrite)", out_dir / name)


def export_model(
    task: str,
    model: nn.Module,
    vocabulary: ClassEmbeddings,
    out_dir: str | os.PathLike,
    *,
    size_rule: dict,
    canvas: tuple[int, int],
    provenance: dict,
    nms: bool = True,
    dynamic_batch: bool = False,
    opset: int = 17,
    force: bool = False,
) -> Path:
    """Trace `model` (a OpenVocabDetector or an OpenVocabSegmenter, vocabulary already set) to DIR/model.onnx and
    write DIR/model.json; returns DIR/model.json."""
    import hashlib

    out = Path(out_dir)
    _check_output(out, force)
    d = int(model.size_divisible)
    if len(canvas) != 2 or any(int(v) <= 0 or int(v) % d for v in canvas):
        # the eager model pads each image to a multiple of d: the canvas must hold that padding
        raise DistillInputError(f"the canvas must be (H, W), positive multiples of {d}, got {tuple(canvas)}")
    if task == "detect":
        module, outputs = ExportableDetector(model, nms), DETECTOR_OUTPUTS
    else:
        module, outputs = ExportableSegmenter(model), SEGMENTER_OUTPUTS
    data = _trace_to_onnx(module, canvas, outputs, dynamic_batch, opset)
    meta = {
        "format": FORMAT,
        "task": task,
        "backend": "torchvision",
        "onnx": "model.onnx",
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "opset": opset,
        "inputs": {
            "images": {
                "shape": ["batch" if dynamic_batch else 1, 3, *canvas],
                "dtype": "float32",
                "layout": "RGB, 0-255, the image at the top-left of the canvas",
            },
            "image_sizes": {
                "shape": ["batch" if dynamic_batch else 1, 2],
                "dtype": "int64",
                "layout": "(h, w) of each image inside the canvas",
            },
        },
        "outputs": outputs,
        "canvas": list(canvas),
        # the graph runs on the canvas cropped to the batch's largest image rounded up to this, as the eager model
        "size_divisible": d,
        "size_rule": size_rule,
        "normalization": {
            "pixel_mean": model.pixel_mean.flatten().tolist(),
            "pixel_std": model.pixel_std.flatten().tolist(),
            "inside_graph": True,
        },
        "class_names": list(vocabulary.class_names),
        "class_names_sha256": names_sha256(vocabulary.class_names),
        "embed_dim": vocabulary.dim,
        "teacher": vocabulary.provenance,
        **provenance,
    }
    if task == "detect":
        rh = model.roi_heads
        meta.update(
            {
                "score_thresh": float(rh.score_thresh),
                "nms": bool(nms),
                "nms_thresh": float(rh.nms_thresh),
                "detections_per_image": int(rh.detections_per_img) if nms else None,
                "masks": "(N, 28, 28) probabilities inside each box (paste into the image as Mask R-CNN)"
                if rh.has_mask()
                else None,
            }
        )
    else:
        lm = model.predictor.label_map
        meta.update(
            {
                "labels": "0 background, i + 1 the i-th class"
                if lm.background_value == 0
                else f"pixel values {lm.class_values}",
                "flip_test": bool(model.flip_test),
            }
        )
    atomic_write_bytes(out / "model.onnx", data)
    atomic_write_json(out / "model.json", meta, indent=1)
    return out / "model.json"


def _file_sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _segmenter_dim(weights) -> int:
    ckpt = load_torch_file(weights, "segmenter checkpoint")
    w = ckpt.get("model", {}).get("predictor.embed_head.predictor.weight") if isinstance(ckpt, dict) else None
    if w is None:
        raise DistillInputError(
            "not a segmenter checkpoint (no predictor.embed_head): a detector's?", weights
        )
    return int(w.shape[0])


def load_model_for_export(task: str, cfg, weights: str, vocabulary: ClassEmbeddings) -> nn.Module:
    """The eval-mode detector or segmenter of a checkpoint, scoring `vocabulary` (its dim must be the model's)."""
    if not os.path.isfile(weights):
        raise DistillInputError("weights not found", weights)
    if task == "detect":
        from .trainer import load_trained_model

        model = load_trained_model(cfg, weights, "cpu")
        model.roi_heads.set_vocabulary(vocabulary)
        return model.eval()
    from .sem_seg import load_segmenter

    dim = _segmenter_dim(weights)
    if vocabulary.dim != dim:
        raise DistillInputError(
            f"vocabulary embeddings have dim {vocabulary.dim}; this segmenter needs {dim}"
        )
    model = load_segmenter(weights, dim, bool(cfg.TEST.AUG.ENABLED and cfg.TEST.AUG.FLIP))
    model.predictor.set_vocabulary(vocabulary, list(range(1, len(vocabulary) + 1)))  # 0 stays the background
    return model.eval()


def export_checkpoint(
    task: str,
    cfg,
    weights: str,
    vocabulary: ClassEmbeddings,
    out_dir,
    *,
    canvas: tuple[int, int] | None = None,
    **kwargs,
) -> Path:
    """`load_model_for_export` then `export_model`, with the size rule and provenance of `cfg` / `weights`."""
    _check_output(Path(out_dir), kwargs.get("force", False))
    model = load_model_for_export(task, cfg, weights, vocabulary)
    canvas = tuple(canvas or default_canvas(cfg, task))
    if task == "detect":
        rule = {
            "kind": "shortest_edge",
            "short": int(cfg.INPUT.MIN_SIZE_TEST),
            "max": int(cfg.INPUT.MAX_SIZE_TEST),
            "interpolation": "bilinear, half-pixel centres, no antialiasing",
            "then": "shrunk to fit the canvas if larger; boxes scale back by the same factors",
        }
    else:
        rule = {
            "kind": "longest_side",
            "max": int(cfg.INPUT.MAX_SIZE_TEST),
            "interpolation": "area, on the uint8 image (the demo's fit_test_size)",
            "then": "shrunk to fit the canvas if larger; labels scale back by nearest neighbour",
        }
    provenance = {
        "weights": {"file": os.path.basename(weights), "sha256": _file_sha256(weights)},
        "config": {
            "MODEL.DISTILL.TEACHER": {
                "ARCH": cfg.MODEL.DISTILL.TEACHER.ARCH,
                "PRETRAINED": cfg.MODEL.DISTILL.TEACHER.PRETRAINED,
                "TEMPLATES": cfg.MODEL.DISTILL.TEACHER.TEMPLATES,
            }
        },
    }
    return export_model(
        task, model, vocabulary, out_dir, size_rule=rule, canvas=canvas, provenance=provenance, **kwargs
    )
