// Shared by the CPU and CUDA kernels of distill::resample_crops: argument checks and the table mapping
// a quantised value to its normalised output.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace distill {

struct CropShape {
  int64_t crops, channels, height, width;
  int64_t out_h, taps_y, out_w, taps_x;
};

inline void check_taps(const at::Tensor& index, const at::Tensor& weight, const char* axis,
                       const at::Tensor& image) {
  TORCH_CHECK(index.dim() == 3, "resample_crops: ", axis, "_index must be (N, S, K), got shape ",
              index.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong, "resample_crops: ", axis, "_index must be int64, got ",
              index.scalar_type());
  TORCH_CHECK(weight.scalar_type() == at::kFloat, "resample_crops: ", axis, "_weight must be float32, got ",
              weight.scalar_type());
  TORCH_CHECK(weight.sizes() == index.sizes(), "resample_crops: ", axis, "_weight has shape ",
              weight.sizes(), ", ", axis, "_index ", index.sizes());
  TORCH_CHECK(index.device() == image.device() && weight.device() == image.device(), "resample_crops: ",
              axis, " taps and image on different devices");
}

inline CropShape check_resample_args(const at::Tensor& image, const at::Tensor& y_index,
                                     const at::Tensor& y_weight, const at::Tensor& x_index,
                                     const at::Tensor& x_weight, at::ArrayRef<double> mean,
                                     at::ArrayRef<double> std) {
  TORCH_CHECK(image.dim() == 3, "resample_crops: image must be (C, H, W), got shape ", image.sizes());
  TORCH_CHECK(image.scalar_type() == at::kByte || image.scalar_type() == at::kFloat,
              "resample_crops: image must be uint8 or float32, got ", image.scalar_type());
  TORCH_CHECK(image.size(0) > 0 && image.size(1) > 0 && image.size(2) > 0,
              "resample_crops: empty image of shape ", image.sizes());
  check_taps(y_index, y_weight, "y", image);
  check_taps(x_index, x_weight, "x", image);
  TORCH_CHECK(y_index.size(0) == x_index.size(0), "resample_crops: y taps for ", y_index.size(0),
              " crops, x taps for ", x_index.size(0));
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == image.size(0) &&
                  static_cast<int64_t>(std.size()) == image.size(0),
              "resample_crops: mean and std need one value per image channel (", image.size(0), ")");
  return CropShape{y_index.size(0), image.size(0), image.size(1), image.size(2),
                   y_index.size(1), y_index.size(2), x_index.size(1), x_index.size(2)};
}

// (C, 256): (q / 255 - mean[c]) / std[c] in float32, the reference's arithmetic for each 8-bit value q.
inline std::vector<float> normalise_table(at::ArrayRef<double> mean, at::ArrayRef<double> std) {
  std::vector<float> table(mean.size() * 256);
  for (size_t c = 0; c < mean.size(); ++c) {
    const float m = static_cast<float>(mean[c]);
    const float s = static_cast<float>(std[c]);
    for (int q = 0; q < 256; ++q) {
      table[c * 256 + q] = (static_cast<float>(q) / 255.0f - m) / s;
    }
  }
  return table;
}

}  // namespace distill
