"""ONNX export of the `distill` ops with the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`).

`distill::multilevel_roi_align` becomes standard ONNX: the FPN level of each RoI (detectron2's
`assign_boxes_to_levels`, as `_reference.assign_levels`), then one `RoiAlign` per level (opset 16's
`half_pixel` coordinates for aligned=True) on the RoIs of that level, scattered back in RoI order.
`distill::nms` becomes `NonMaxSuppression`, as torchvision's nms. No custom-op library is needed to run
the graph in a stock onnxruntime.
"""

from __future__ import annotations

import math

import torch

MIN_OPSET = 16  # RoiAlign's coordinate_transformation_mode
_registered: set[int] = set()


def _const(g, value, dtype=torch.float32):
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


def _column(g, rois, i: int):
    return g.op("Gather", rois, _const(g, i, torch.int64), axis_i=1)


def _levels(g, rois, min_level: int, num_levels: int, canonical_box_size: float, canonical_level: int):
    """(K,) int64 level index in [0, num_levels) of each RoI (K, 5); empty or inverted boxes: the finest."""
    x0, y0, x1, y1 = (_column(g, rois, i) for i in range(1, 5))
    area = g.op("Mul", g.op("Sub", x1, x0), g.op("Sub", y1, y0))
    ratio = g.op(
        "Add", g.op("Div", g.op("Sqrt", area), _const(g, float(canonical_box_size))), _const(g, 1e-8)
    )
    log2 = g.op("Div", g.op("Log", ratio), _const(g, math.log(2.0)))
    level = g.op("Floor", g.op("Add", _const(g, float(canonical_level)), log2))
    level = g.op("Where", g.op("Greater", area, _const(g, 0.0)), level, _const(g, float(min_level)))
    level = g.op("Clip", level, _const(g, float(min_level)), _const(g, float(min_level + num_levels - 1)))
    return g.op("Cast", g.op("Sub", level, _const(g, float(min_level))), to_i=7)  # 7: INT64


def _multilevel_roi_align(
    g,
    features,
    rois,
    output_h,
    output_w,
    sampling_ratio,
    aligned,
    min_level,
    canonical_box_size,
    canonical_level,
):
    from torch.onnx import symbolic_helper as sh

    feats = sh._unpack_list(features)
    output_h, output_w, sampling_ratio, min_level, canonical_level = (
        sh._get_const(v, "i", n)
        for v, n in (
            (output_h, "output_h"),
            (output_w, "output_w"),
            (sampling_ratio, "sampling_ratio"),
            (min_level, "min_level"),
            (canonical_level, "canonical_level"),
        )
    )
    aligned = sh._get_const(aligned, "b", "aligned")
    canonical_box_size = sh._get_const(canonical_box_size, "f", "canonical_box_size")
    level = _levels(g, rois, min_level, len(feats), canonical_box_size, canonical_level)
    boxes = g.op(
        "Slice", rois, _const(g, [1], torch.int64), _const(g, [5], torch.int64), _const(g, [1], torch.int64)
    )
    batch_index = g.op("Cast", _column(g, rois, 0), to_i=7)
    k = g.op("Slice", g.op("Shape", rois), _const(g, [0], torch.int64), _const(g, [1], torch.int64))
    c = g.op("Slice", g.op("Shape", feats[0]), _const(g, [1], torch.int64), _const(g, [2], torch.int64))
    shape = g.op("Concat", k, c, _const(g, [output_h, output_w], torch.int64), axis_i=0)
    out = g.op("Expand", _const(g, 0.0), shape)
    mode = "half_pixel" if aligned else "output_half_pixel"
    for i, f in enumerate(feats):
        where = g.op("NonZero", g.op("Equal", level, _const(g, i, torch.int64)))  # (1, n)
        flat = g.op("Reshape", where, _const(g, [-1], torch.int64))
        pooled = g.op(
            "RoiAlign",
            f,
            g.op("Gather", boxes, flat, axis_i=0),
            g.op("Gather", batch_index, flat),
            mode_s="avg",
            output_height_i=output_h,
            output_width_i=output_w,
            sampling_ratio_i=sampling_ratio,
            spatial_scale_f=1.0 / 2 ** (min_level + i),
            coordinate_transformation_mode_s=mode,
        )
        out = g.op("ScatterND", out, g.op("Transpose", where, perm_i=[1, 0]), pooled)
    return out


def register_onnx_symbolics(opset: int) -> None:
    """Register the distill ops' ONNX decompositions for `opset` (>= 16); idempotent."""
    if opset < MIN_OPSET:
        raise ValueError(
            f"ONNX export needs opset >= {MIN_OPSET} (RoiAlign with half-pixel coordinates), got {opset}"
        )
    if opset in _registered:
        return
    from torchvision.ops._register_onnx_ops import symbolic_multi_label_nms

    torch.onnx.register_custom_op_symbolic("distill::multilevel_roi_align", _multilevel_roi_align, opset)
    torch.onnx.register_custom_op_symbolic("distill::nms", symbolic_multi_label_nms, opset)
    _registered.add(opset)
