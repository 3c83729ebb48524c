"""Python-side registrations for the ops declared in distill/csrc/ops.cpp: fake (meta) kernels for
torch.compile and the autograd formula. Called once by the loader after the extension is imported."""

from __future__ import annotations

import torch

_FORWARD = "distill::multilevel_roi_align"
_BACKWARD = "distill::multilevel_roi_align_backward"
_RESAMPLE_CROPS = "distill::resample_crops"
_RESAMPLE_CROPS_OUT = "distill::resample_crops_out"
_CROP_TAPS = "distill::crop_taps"
_NMS = "distill::nms"


def _fake_forward(
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
    """(K, C, output_h, output_w) in the features' dtype."""
    f0 = features[0]
    return f0.new_empty((rois.shape[0], f0.shape[1], output_h, output_w))


def _fake_backward(
    grad,
    rois,
    batch_size,
    channels,
    heights,
    widths,
    sampling_ratio,
    aligned,
    min_level,
    canonical_box_size,
    canonical_level,
):
    """Flat (sum_l B * C * H_l * W_l,) buffer in grad's dtype."""
    numel = sum(batch_size * channels * h * w for h, w in zip(heights, widths))
    return grad.new_empty((numel,))


def _fake_resample_crops(image, y_index, y_weight, x_index, x_weight, mean, std):
    """(N, C, S_y, S_x) float32."""
    return image.new_empty(
        (y_index.shape[0], image.shape[0], y_index.shape[1], x_index.shape[1]), dtype=torch.float32
    )


def _fake_resample_crops_out(image, y_index, y_weight, x_index, x_weight, mean, std, out):
    """Writes `out` in place; returns nothing."""
    return None


def _fake_crop_taps(start, length, resized, offset, size, limit):
    """(N, size, K) int64 and float32; K depends on the data."""
    k = torch.library.get_ctx().new_dynamic_size()
    shape = (start.shape[0], size, k)
    return start.new_empty(shape, dtype=torch.int64), start.new_empty(shape, dtype=torch.float32)


def _fake_nms(boxes, scores, iou_threshold):
    """(K,) int64; K depends on the data."""
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)


def _setup_context(ctx, inputs, output):
    features, rois, *params = inputs
    ctx.save_for_backward(rois)
    ctx.params = params
    ctx.shape = (features[0].shape[0], features[0].shape[1])
    ctx.heights = [f.shape[2] for f in features]
    ctx.widths = [f.shape[3] for f in features]


def split_levels(flat, batch_size, channels, heights, widths):
    """Views of the flat gradient buffer as per-level (B, C, H_l, W_l) tensors."""
    sizes = [batch_size * channels * h * w for h, w in zip(heights, widths)]
    return [
        chunk.view(batch_size, channels, h, w)
        for chunk, h, w in zip(torch.split(flat, sizes), heights, widths)
    ]


def _backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    output_h, output_w, sampling_ratio, aligned, min_level, box_size, level = ctx.params
    batch_size, channels = ctx.shape
    grads = None
    if ctx.needs_input_grad[0]:
        flat = torch.ops.distill.multilevel_roi_align_backward(
            grad.contiguous(),
            rois,
            batch_size,
            channels,
            ctx.heights,
            ctx.widths,
            sampling_ratio,
            aligned,
            min_level,
            box_size,
            level,
        )
        grads = split_levels(flat, batch_size, channels, ctx.heights, ctx.widths)
    return grads, None, None, None, None, None, None, None, None


def register() -> None:
    torch.library.register_fake(_FORWARD)(_fake_forward)
    torch.library.register_fake(_BACKWARD)(_fake_backward)
    torch.library.register_fake(_RESAMPLE_CROPS)(_fake_resample_crops)
    if hasattr(torch.ops.distill, "resample_crops_out"):  # absent from extensions built before it
        torch.library.register_fake(_RESAMPLE_CROPS_OUT)(_fake_resample_crops_out)
    torch.library.register_fake(_CROP_TAPS)(_fake_crop_taps)
    torch.library.register_fake(_NMS)(_fake_nms)
    torch.library.register_autograd(_FORWARD, _backward, setup_context=_setup_context)
