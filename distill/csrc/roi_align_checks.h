// Host-side argument checks shared by the CPU and CUDA entry points. The Python wrapper already
// raises ValueError/TypeError for bad input; these guard direct torch.ops calls.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "roi_align_common.h"

namespace distill {

inline PoolerParams make_params(int64_t output_h, int64_t output_w, int64_t sampling_ratio, bool aligned,
                                int64_t min_level, int64_t num_levels, double canonical_box_size,
                                int64_t canonical_level) {
  TORCH_CHECK(output_h > 0 && output_w > 0, "multilevel_roi_align: output size must be positive");
  TORCH_CHECK(sampling_ratio >= 0, "multilevel_roi_align: sampling_ratio must be >= 0");
  TORCH_CHECK(num_levels >= 1 && num_levels <= kMaxLevels, "multilevel_roi_align: 1 to ", kMaxLevels,
              " levels are supported, got ", num_levels);
  TORCH_CHECK(min_level >= 0 && min_level + num_levels <= 30, "multilevel_roi_align: bad min_level");
  TORCH_CHECK(canonical_box_size > 0, "multilevel_roi_align: canonical_box_size must be positive");
  return PoolerParams{output_h, output_w, sampling_ratio, aligned, min_level, num_levels,
                      canonical_box_size, canonical_level};
}

// Checks the features agree on batch, channels, dtype and device; returns them in a vector (each
// backend picks its own memory layout).
inline std::vector<at::Tensor> check_features(const at::TensorList features, const at::Tensor& rois) {
  TORCH_CHECK(!features.empty(), "multilevel_roi_align: features is empty");
  const auto& f0 = features[0];
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "multilevel_roi_align: rois must be (K, 5)");
  TORCH_CHECK(rois.device() == f0.device(), "multilevel_roi_align: rois and features on different devices");
  TORCH_CHECK(rois.scalar_type() == at::toOpMathType(f0.scalar_type()),
              "multilevel_roi_align: rois must have the features' accumulation dtype");
  std::vector<at::Tensor> out;
  out.reserve(features.size());
  for (const auto& f : features) {
    TORCH_CHECK(f.dim() == 4, "multilevel_roi_align: features must be 4-D (B, C, H, W)");
    TORCH_CHECK(f.scalar_type() == f0.scalar_type() && f.device() == f0.device(),
                "multilevel_roi_align: features differ in dtype or device");
    TORCH_CHECK(f.size(0) == f0.size(0) && f.size(1) == f0.size(1),
                "multilevel_roi_align: features differ in batch size or channels");
    TORCH_CHECK(f.size(2) > 0 && f.size(3) > 0, "multilevel_roi_align: empty feature map");
    out.push_back(f);
  }
  return out;
}

// Offsets of each level's (B, C, H_l, W_l) block in the flat gradient buffer; the last entry is its size.
inline std::vector<int64_t> level_offsets(int64_t batch, int64_t channels, at::IntArrayRef heights,
                                          at::IntArrayRef widths) {
  TORCH_CHECK(heights.size() == widths.size(), "multilevel_roi_align_backward: heights/widths mismatch");
  std::vector<int64_t> offsets(heights.size() + 1, 0);
  for (size_t l = 0; l < heights.size(); ++l) {
    TORCH_CHECK(heights[l] > 0 && widths[l] > 0, "multilevel_roi_align_backward: empty feature map");
    offsets[l + 1] = offsets[l] + batch * channels * heights[l] * widths[l];
  }
  return offsets;
}

}  // namespace distill
