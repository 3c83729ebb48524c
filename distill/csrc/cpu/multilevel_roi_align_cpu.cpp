// CPU kernels of distill::multilevel_roi_align.
//
// RoIAlign's bilinear weight is the product of a y-weight and an x-weight, so one RoI's output plane is
// Wy * F[rows, cols] * Wx^T, where Wy (out_h, n_y) and Wx (out_w, n_x) hold each pixel's summed sample
// weights (the 1/grid average folded in) over the rows and columns any sample touches. The plans are
// built once per RoI and shared by all channels; the matrix form touches each window pixel once per
// output row band instead of four times per sample.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <type_traits>
#include <vector>

#include "../roi_align_checks.h"

// The hot loops are also compiled for AVX2 and picked at load time by CPU features (the default build targets
// baseline x86-64, i.e. SSE2), so a wheel or source build stays portable.
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(__APPLE__)
#define DISTILL_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef DISTILL_CPU_CLONES
#define DISTILL_CPU_CLONES
#endif
#define DISTILL_ALWAYS_INLINE inline __attribute__((always_inline))

namespace distill {
namespace {

template <typename T>
struct AxisPlan {
  std::vector<int64_t> index;     // (n,) touched pixels, increasing
  std::vector<T> weight;          // (bins, n)
  std::vector<int> first, last;   // (bins,) range [first, last) of j with a weight
  int64_t n = 0;
};

template <typename T>
struct PlanScratch {
  std::vector<AxisTap<T>> taps;
  std::vector<T> dense;
  std::vector<int64_t> remap;
};

template <typename T>
void build_axis_plan(const AxisGrid<T>& g, int64_t bins, int size, PlanScratch<T>& s, AxisPlan<T>& plan) {
  plan.first.assign(bins, 0);
  plan.last.assign(bins, 0);
  plan.index.clear();
  plan.n = 0;
  if (g.grid <= 0) {
    return;
  }
  const int grid = g.grid;
  const T inv_grid = T(1) / T(grid);
  s.taps.resize(bins * grid);
  int lo = INT_MAX;
  int hi = -1;
  for (int64_t b = 0; b < bins; ++b) {
    for (int i = 0; i < grid; ++i) {
      const AxisTap<T> t = axis_tap(sample_position(g, b, i), size);
      s.taps[b * grid + i] = t;
      if (t.w_low != T(0) || t.w_high != T(0)) {
        lo = std::min(lo, t.low);
        hi = std::max(hi, t.high);
      }
    }
  }
  if (hi < 0) {
    return;  // every sample falls outside the map
  }
  const int64_t span = hi - lo + 1;
  s.dense.assign(bins * span, T(0));
  s.remap.assign(span, -1);
  for (int64_t b = 0; b < bins; ++b) {
    int first = INT_MAX;
    int last = -1;
    for (int i = 0; i < grid; ++i) {
      const AxisTap<T>& t = s.taps[b * grid + i];
      if (t.w_low == T(0) && t.w_high == T(0)) {
        continue;
      }
      s.dense[b * span + t.low - lo] += t.w_low * inv_grid;
      s.dense[b * span + t.high - lo] += t.w_high * inv_grid;
      s.remap[t.low - lo] = 0;
      s.remap[t.high - lo] = 0;
      first = std::min(first, t.low - lo);
      last = std::max(last, t.high - lo + 1);
    }
    plan.first[b] = last < 0 ? 0 : first;
    plan.last[b] = last < 0 ? 0 : last;
  }
  for (int64_t p = 0; p < span; ++p) {
    if (s.remap[p] == 0) {
      s.remap[p] = plan.n++;
      plan.index.push_back(lo + p);
    }
  }
  if (plan.n == span) {
    plan.weight.swap(s.dense);
    return;
  }
  // Sparse grids (fixed sampling_ratio on large RoIs): keep only the touched pixels.
  plan.weight.assign(bins * plan.n, T(0));
  for (int64_t b = 0; b < bins; ++b) {
    for (int p = plan.first[b]; p < plan.last[b]; ++p) {
      if (s.remap[p] >= 0) {
        plan.weight[b * plan.n + s.remap[p]] = s.dense[b * span + p];
      }
    }
    if (plan.last[b] > plan.first[b]) {
      plan.first[b] = static_cast<int>(s.remap[plan.first[b]]);
      plan.last[b] = static_cast<int>(s.remap[plan.last[b] - 1]) + 1;
    }
  }
}

// Everything one RoI needs, independent of the channel.
template <typename T>
struct RoIPlan {
  int64_t batch = 0;
  int level = 0;
  AxisPlan<T> y;
  AxisPlan<T> x;
};

template <typename T>
void build_roi_plan(const T* roi, const PoolerParams& p, const std::vector<int64_t>& heights,
                    const std::vector<int64_t>& widths, PlanScratch<T>& s, RoIPlan<T>& plan) {
  plan.batch = static_cast<int64_t>(roi[0]);
  plan.level = roi_level_index(roi + 1, p);
  const T scale = level_scale<T>(p.min_level + plan.level);
  const AxisGrid<T> gy = axis_grid(roi[2], roi[4], scale, p, p.output_h);
  const AxisGrid<T> gx = axis_grid(roi[1], roi[3], scale, p, p.output_w);
  build_axis_plan(gy, p.output_h, static_cast<int>(heights[plan.level]), s, plan.y);
  build_axis_plan(gx, p.output_w, static_cast<int>(widths[plan.level]), s, plan.x);
}

// Channels-last views of the features: (B, H_l, W_l, C) per level. A no-op copy for channels_last input.
std::vector<at::Tensor> to_channels_last(const std::vector<at::Tensor>& features) {
  std::vector<at::Tensor> out;
  for (const auto& f : features) {
    out.push_back(f.permute({0, 2, 3, 1}).contiguous());
  }
  return out;
}

// a[0:n] += w * x[0:n]. A separate function so the restrict qualifiers let the compiler vectorise it.
template <typename T, typename S>
DISTILL_ALWAYS_INLINE void axpy(T* __restrict__ a, const S* __restrict__ x, T w, int64_t n) {
#pragma GCC ivdep
  for (int64_t c = 0; c < n; ++c) {
    a[c] += w * static_cast<T>(x[c]);
  }
}

// Pools one RoI from a channels-last map (H, W, C) into out (C, out_h, out_w). acc is (out_w, C)
// scratch. Output bin (ph, pw) = sum over window pixels of Wy[ph, i] * Wx[pw, j] * map[y_i, x_j, :], so
// the innermost loop runs over contiguous channels.
template <typename scalar_t, typename T>
DISTILL_ALWAYS_INLINE void pool_roi(const scalar_t* map, int64_t width, int64_t channels, const RoIPlan<T>& r, int64_t out_h,
              int64_t out_w, T* acc, scalar_t* out) {
  const AxisPlan<T>& py = r.y;
  const AxisPlan<T>& px = r.x;
  for (int64_t ph = 0; ph < out_h; ++ph) {
    std::fill(acc, acc + out_w * channels, T(0));
    const T* wy = py.weight.data() + ph * py.n;
    for (int i = py.first[ph]; i < py.last[ph]; ++i) {
      const scalar_t* row = map + py.index[i] * width * channels;
      for (int64_t pw = 0; pw < out_w; ++pw) {
        const T* wx = px.weight.data() + pw * px.n;
        for (int j = px.first[pw]; j < px.last[pw]; ++j) {
          axpy(acc + pw * channels, row + px.index[j] * channels, wy[i] * wx[j], channels);
        }
      }
    }
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t pw = 0; pw < out_w; ++pw) {
        out[(c * out_h + ph) * out_w + pw] = static_cast<scalar_t>(acc[pw * channels + c]);
      }
    }
  }
}

// Adds one RoI's gradient to a channels-last map (H, W, C) for the channel slice [0, cn) at map's
// offset; g is the RoI's gradient as (out_h, out_w, cn).
template <typename T>
DISTILL_ALWAYS_INLINE void unpool_roi(const T* g, const RoIPlan<T>& r, int64_t out_h, int64_t out_w, int64_t cn,
                T* map, int64_t width, int64_t channels) {
  const AxisPlan<T>& py = r.y;
  const AxisPlan<T>& px = r.x;
  for (int64_t ph = 0; ph < out_h; ++ph) {
    const T* wy = py.weight.data() + ph * py.n;
    for (int i = py.first[ph]; i < py.last[ph]; ++i) {
      T* row = map + py.index[i] * width * channels;
      for (int64_t pw = 0; pw < out_w; ++pw) {
        const T* wx = px.weight.data() + pw * px.n;
        for (int j = px.first[pw]; j < px.last[pw]; ++j) {
          axpy(row + px.index[j] * channels, g + (ph * out_w + pw) * cn, wy[i] * wx[j], cn);
        }
      }
    }
  }
}

DISTILL_CPU_CLONES void pool_roi_f32(const float* map, int64_t width, int64_t channels,
                                     const RoIPlan<float>& r, int64_t out_h, int64_t out_w, float* acc,
                                     float* out) {
  pool_roi(map, width, channels, r, out_h, out_w, acc, out);
}

DISTILL_CPU_CLONES void unpool_roi_f32(const float* g, const RoIPlan<float>& r, int64_t out_h, int64_t out_w,
                                       int64_t cn, float* map, int64_t width, int64_t channels) {
  unpool_roi(g, r, out_h, out_w, cn, map, width, channels);
}

// fp32 goes through the multi-versioned entry points; other dtypes use the portable build.
template <typename scalar_t, typename T>
void pool_roi_any(const scalar_t* map, int64_t width, int64_t channels, const RoIPlan<T>& r, int64_t out_h,
                  int64_t out_w, T* acc, scalar_t* out) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    pool_roi_f32(map, width, channels, r, out_h, out_w, acc, out);
  } else {
    pool_roi(map, width, channels, r, out_h, out_w, acc, out);
  }
}

template <typename T>
void unpool_roi_any(const T* g, const RoIPlan<T>& r, int64_t out_h, int64_t out_w, int64_t cn, T* map,
                    int64_t width, int64_t channels) {
  if constexpr (std::is_same_v<T, float>) {
    unpool_roi_f32(g, r, out_h, out_w, cn, map, width, channels);
  } else {
    unpool_roi(g, r, out_h, out_w, cn, map, width, channels);
  }
}

// RoIs per parallel chunk, so that small problems run inline instead of waking a thread team.
int64_t roi_grain(int64_t channels, int64_t bins) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, channels * bins * 8));
}

void check_batch_indices(const at::Tensor& rois, int64_t batch) {
  AT_DISPATCH_FLOATING_TYPES(rois.scalar_type(), "multilevel_roi_align_check", [&] {
    const scalar_t* r = rois.data_ptr<scalar_t>();
    for (int64_t k = 0; k < rois.size(0); ++k) {
      const scalar_t b = r[k * 5];
      TORCH_CHECK(b >= 0 && b < static_cast<scalar_t>(batch), "multilevel_roi_align: rois[", k,
                  ", 0] = ", b, " is not a batch index in [0, ", batch, ")");
    }
  });
}

at::Tensor forward_cpu(at::TensorList features_in, const at::Tensor& rois_in, int64_t output_h,
                       int64_t output_w, int64_t sampling_ratio, bool aligned, int64_t min_level,
                       double canonical_box_size, int64_t canonical_level) {
  const std::vector<at::Tensor> features = check_features(features_in, rois_in);
  const PoolerParams p = make_params(output_h, output_w, sampling_ratio, aligned, min_level,
                                     static_cast<int64_t>(features.size()), canonical_box_size,
                                     canonical_level);
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = rois.size(0);
  const int64_t batch = features[0].size(0);
  const int64_t channels = features[0].size(1);
  check_batch_indices(rois, batch);
  at::Tensor out = at::empty({num_rois, channels, output_h, output_w}, features[0].options());
  if (out.numel() == 0) {
    return out;
  }
  std::vector<int64_t> heights, widths;
  for (const auto& f : features) {
    heights.push_back(f.size(2));
    widths.push_back(f.size(3));
  }
  const std::vector<at::Tensor> maps = to_channels_last(features);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features[0].scalar_type(),
                                  "multilevel_roi_align_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<const scalar_t*> data;
    for (const auto& m : maps) {
      data.push_back(m.const_data_ptr<scalar_t>());
    }
    const acc_t* roi_data = rois.const_data_ptr<acc_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    const int64_t roi_size = channels * output_h * output_w;
    at::parallel_for(0, num_rois, roi_grain(channels, output_h * output_w), [&](int64_t begin, int64_t end) {
      PlanScratch<acc_t> scratch;
      RoIPlan<acc_t> plan;
      std::vector<acc_t> acc(output_w * channels);
      for (int64_t k = begin; k < end; ++k) {
        build_roi_plan(roi_data + k * 5, p, heights, widths, scratch, plan);
        const int64_t hw = heights[plan.level] * widths[plan.level];
        pool_roi_any(data[plan.level] + plan.batch * hw * channels, widths[plan.level], channels, plan, output_h,
                 output_w, acc.data(), out_data + k * roi_size);
      }
    });
  });
  return out;
}

at::Tensor backward_cpu(const at::Tensor& grad_in, const at::Tensor& rois_in, int64_t batch,
                        int64_t channels, at::IntArrayRef heights_in, at::IntArrayRef widths_in,
                        int64_t sampling_ratio, bool aligned, int64_t min_level, double canonical_box_size,
                        int64_t canonical_level) {
  const std::vector<int64_t> offsets = level_offsets(batch, channels, heights_in, widths_in);
  TORCH_CHECK(grad_in.dim() == 4 && rois_in.dim() == 2 && grad_in.size(0) == rois_in.size(0) &&
                  grad_in.size(1) == channels,
              "multilevel_roi_align_backward: grad must be (K, C, out_h, out_w)");
  TORCH_CHECK(rois_in.scalar_type() == at::toOpMathType(grad_in.scalar_type()),
              "multilevel_roi_align_backward: rois must have grad's accumulation dtype");
  const PoolerParams p = make_params(grad_in.size(2), grad_in.size(3), sampling_ratio, aligned, min_level,
                                     static_cast<int64_t>(heights_in.size()), canonical_box_size,
                                     canonical_level);
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor rois = rois_in.contiguous();
  const std::vector<int64_t> heights(heights_in.begin(), heights_in.end());
  const std::vector<int64_t> widths(widths_in.begin(), widths_in.end());
  const int64_t num_rois = rois.size(0);
  check_batch_indices(rois, batch);
  // Accumulate channels-last in the op-math dtype (fp32 for half/bf16), one buffer for all levels.
  const auto acc_dtype = at::toOpMathType(grad.scalar_type());
  at::Tensor maps = at::zeros({offsets.back()}, grad.options().dtype(acc_dtype));
  if (grad.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                    "multilevel_roi_align_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const acc_t* roi_data = rois.const_data_ptr<acc_t>();
      const scalar_t* grad_data = grad.const_data_ptr<scalar_t>();
      acc_t* map_data = maps.mutable_data_ptr<acc_t>();
      const int64_t out_h = p.output_h, out_w = p.output_w, bins = out_h * out_w;
      std::vector<RoIPlan<acc_t>> plans(num_rois);
      at::parallel_for(0, num_rois, roi_grain(1, bins), [&](int64_t begin, int64_t end) {
        PlanScratch<acc_t> scratch;
        for (int64_t k = begin; k < end; ++k) {
          build_roi_plan(roi_data + k * 5, p, heights, widths, scratch, plans[k]);
        }
      });
      // Each thread owns a channel slice of every level's gradient: no write races, no atomics, and a
      // fixed summation order. Slices stay a few SIMD vectors wide.
      const int64_t threads = num_rois * bins * channels < at::internal::GRAIN_SIZE ? 1 : at::get_num_threads();
      const int64_t slice = std::max<int64_t>(16, (channels + threads - 1) / std::max<int64_t>(threads, 1));
      const int64_t num_slices = (channels + slice - 1) / slice;
      at::parallel_for(0, num_slices, 1, [&](int64_t s_begin, int64_t s_end) {
        const int64_t c0 = s_begin * slice;
        const int64_t cn = std::min(channels, s_end * slice) - c0;
        std::vector<acc_t> g(bins * cn);
        for (int64_t k = 0; k < num_rois; ++k) {
          const RoIPlan<acc_t>& r = plans[k];
          if (r.y.n == 0 || r.x.n == 0) {
            continue;
          }
          const scalar_t* gk = grad_data + (k * channels + c0) * bins;
          for (int64_t c = 0; c < cn; ++c) {
            for (int64_t e = 0; e < bins; ++e) {
              g[e * cn + c] = static_cast<acc_t>(gk[c * bins + e]);
            }
          }
          const int64_t hw = heights[r.level] * widths[r.level];
          acc_t* map = map_data + offsets[r.level] + r.batch * hw * channels + c0;
          unpool_roi_any(g.data(), r, out_h, out_w, cn, map, widths[r.level], channels);
        }
      });
    });
  }
  // Back to the (B, C, H_l, W_l) blocks of the flat result, converting to grad's dtype on the way.
  at::Tensor flat = at::empty({offsets.back()}, grad.options());
  for (size_t l = 0; l < heights.size(); ++l) {
    const int64_t n = offsets[l + 1] - offsets[l];
    flat.narrow(0, offsets[l], n)
        .view({batch, channels, heights[l], widths[l]})
        .copy_(maps.narrow(0, offsets[l], n).view({batch, heights[l], widths[l], channels}).permute({0, 3, 1, 2}));
  }
  return flat;
}

}  // namespace

TORCH_LIBRARY_IMPL(distill, CPU, m) {
  m.impl("multilevel_roi_align", &forward_cpu);
  m.impl("multilevel_roi_align_backward", &backward_cpu);
}

}  // namespace distill
