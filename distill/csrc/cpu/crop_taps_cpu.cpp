// CPU kernel of distill::crop_taps: PIL's 1-D bicubic resampling taps of N crops along one axis, the
// operations of distill.teacher.crops._taps in the same float64 order (so the same indices and weights,
// without ~40 small tensor ops per image). The weight sums follow torch's CPU sum over the last dimension
// (4-wide vector lanes, leftover taps first), exact for fewer than 256 taps per pixel; past that only the
// last bit of a float64 sum can differ.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

// Keep a * b + c as two roundings, like the PyTorch reference, whatever -march the build uses.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace distill {
namespace {

// PIL's bicubic filter, a = -0.5, as crops._bicubic evaluates it.
inline double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  const double near = (((a + 2.0) * x - (a + 3.0)) * x) * x + 1.0;
  const double far = ((((x - 5.0) * x) + 8.0) * x) * a - 4.0 * a;
  return x < 1.0 ? near : (x < 2.0 ? far : 0.0);
}

// sum(w[0:k]) in the order of torch's vectorised inner sum for float64 (k < 256).
inline double torch_order_sum(const double* w, int64_t k) {
  constexpr int64_t kLanes = 4;
  const int64_t vectors = k / kLanes;
  double total = 0.0;
  for (int64_t t = vectors * kLanes; t < k; ++t) {
    total += w[t];
  }
  for (int64_t lane = 0; lane < kLanes; ++lane) {
    double partial[4] = {0.0, 0.0, 0.0, 0.0};
    const int64_t groups = vectors / 4;
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t j = 0; j < 4; ++j) {
        partial[j] += w[(g * 4 + j) * kLanes + lane];
      }
    }
    for (int64_t v = groups * 4; v < vectors; ++v) {
      partial[0] += w[v * kLanes + lane];
    }
    total += ((partial[0] + partial[1]) + partial[2]) + partial[3];
  }
  return total;
}

std::tuple<at::Tensor, at::Tensor> crop_taps_cpu(const at::Tensor& start_in, const at::Tensor& length_in,
                                                 const at::Tensor& resized_in, const at::Tensor& offset_in,
                                                 int64_t size, int64_t limit) {
  TORCH_CHECK(size > 0 && limit > 0, "crop_taps: size and limit must be positive, got ", size, " and ", limit);
  for (const at::Tensor* t : {&start_in, &length_in, &resized_in, &offset_in}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == start_in.size(0) && t->scalar_type() == at::kDouble,
                "crop_taps: start, length, resized and offset must be (N,) float64 tensors");
  }
  const int64_t n = start_in.size(0);
  const at::Tensor start = start_in.contiguous(), length = length_in.contiguous();
  const at::Tensor resized = resized_in.contiguous(), offset = offset_in.contiguous();
  const double* st = start.const_data_ptr<double>();
  const double* len = length.const_data_ptr<double>();
  const double* res = resized.const_data_ptr<double>();
  const double* off = offset.const_data_ptr<double>();

  // k = 2 * ceil(max support) + 1 taps per pixel for every crop, as crops._taps.
  double max_support = 2.0;
  for (int64_t i = 0; i < n; ++i) {
    const double support = 2.0 * std::max(len[i] / res[i], 1.0);
    TORCH_CHECK(std::isfinite(support), "crop_taps: crop ", i, " has a non-finite scale");
    max_support = i == 0 ? support : std::max(max_support, support);
  }
  const int64_t k = static_cast<int64_t>(std::ceil(max_support)) * 2 + 1;
  at::Tensor index = at::empty({n, size, k}, start.options().dtype(at::kLong));
  at::Tensor weight = at::empty({n, size, k}, start.options().dtype(at::kFloat));
  int64_t* idx = index.mutable_data_ptr<int64_t>();
  float* wout = weight.mutable_data_ptr<float>();
  const double lim = static_cast<double>(limit);
  // Serial below ~256k weights: a parallel region costs more than the work on a busy machine.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / (size * k));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    std::vector<double> w(k);
    for (int64_t c = begin; c < end; ++c) {
      const double scale = len[c] / res[c];
      const double filt = std::max(scale, 1.0);
      const double support = 2.0 * filt;
      for (int64_t i = 0; i < size; ++i) {
        const double center = ((off[c] + static_cast<double>(i)) + 0.5) * scale;
        const double lo = std::max(std::floor((center - support) + 0.5), 0.0);
        const double hi = std::min(std::floor((center + support) + 0.5), len[c]);
        for (int64_t t = 0; t < k; ++t) {
          const double tap = lo + static_cast<double>(t);
          w[t] = bicubic(((tap - center) + 0.5) / filt) * (tap < hi ? 1.0 : 0.0);
        }
        const double total = std::max(torch_order_sum(w.data(), k), 1e-12);
        const int64_t o = (c * size + i) * k;
        for (int64_t t = 0; t < k; ++t) {
          const double pos = st[c] + (lo + static_cast<double>(t));
          const double inside = (pos >= 0.0 && pos < lim) ? 1.0 : 0.0;
          wout[o + t] = static_cast<float>((w[t] / total) * inside);
          idx[o + t] = static_cast<int64_t>(std::min(std::max(pos, 0.0), lim - 1.0));
        }
      }
    }
  });
  return {index, weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(distill, CPU, m) {
  m.impl("crop_taps", &crop_taps_cpu);
}

}  // namespace distill
