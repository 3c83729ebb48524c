// CUDA kernels of distill::multilevel_roi_align: one launch covers every level (each thread maps its
// RoI to a level itself), so there is no per-level split, gather or host synchronisation.
// Only c10 CUDA headers (not ATen/cuda, which pulls cuBLAS/cuSPARSE headers a minimal toolkit lacks).
// Built for sm_75+ with CUDA 13 (which dropped sm_70/72); older toolkits also cover sm_70.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../roi_align_checks.h"

namespace distill {
namespace {

constexpr int kThreads = 256;

// Per-level base pointers and sizes, passed to the kernels by value.
template <typename T>
struct LevelTable {
  T* data[kMaxLevels];
  int height[kMaxLevels];
  int width[kMaxLevels];
};

int64_t num_blocks(int64_t total) {
  return std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 20);
}

// One RoI's sampling grid on its level; `level` < 0 marks a RoI whose batch index is out of range
// (only reachable when the caller skipped the host-side check): it pools zeros and gets no gradient.
template <typename T>
struct RoIGrid {
  int64_t batch;
  int level;
  AxisGrid<T> y;
  AxisGrid<T> x;
  T inv_count;
};

template <typename T>
__device__ __forceinline__ RoIGrid<T> roi_grid(const T* roi, const PoolerParams& p, int64_t batch) {
  RoIGrid<T> r;
  r.batch = static_cast<int64_t>(roi[0]);
  r.level = (roi[0] >= T(0) && r.batch < batch) ? roi_level_index(roi + 1, p) : -1;
  const T scale = level_scale<T>(p.min_level + (r.level < 0 ? 0 : r.level));
  r.y = axis_grid(roi[2], roi[4], scale, p, p.output_h);
  r.x = axis_grid(roi[1], roi[3], scale, p, p.output_w);
  r.inv_count = T(1) / T(max(r.y.grid * r.x.grid, 1));
  return r;
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(int64_t total, LevelTable<const scalar_t> levels, const acc_t* rois,
                               PoolerParams p, int64_t batch, int64_t channels, scalar_t* out) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t pw = idx % p.output_w;
    const int64_t ph = (idx / p.output_w) % p.output_h;
    const int64_t c = (idx / (p.output_w * p.output_h)) % channels;
    const int64_t k = idx / (p.output_w * p.output_h * channels);
    const RoIGrid<acc_t> r = roi_grid(rois + k * 5, p, batch);
    acc_t sum = acc_t(0);
    if (r.level >= 0) {
      const int h = levels.height[r.level];
      const int w = levels.width[r.level];
      const scalar_t* plane = levels.data[r.level] + (r.batch * channels + c) * h * w;
      for (int iy = 0; iy < r.y.grid; ++iy) {
        const AxisTap<acc_t> ty = axis_tap(sample_position(r.y, ph, iy), h);
        if (ty.w_low == acc_t(0) && ty.w_high == acc_t(0)) {
          continue;
        }
        const scalar_t* row_lo = plane + int64_t(ty.low) * w;
        const scalar_t* row_hi = plane + int64_t(ty.high) * w;
        for (int ix = 0; ix < r.x.grid; ++ix) {
          const AxisTap<acc_t> tx = axis_tap(sample_position(r.x, pw, ix), w);
          sum += ty.w_low * (tx.w_low * static_cast<acc_t>(row_lo[tx.low]) +
                             tx.w_high * static_cast<acc_t>(row_lo[tx.high])) +
                 ty.w_high * (tx.w_low * static_cast<acc_t>(row_hi[tx.low]) +
                              tx.w_high * static_cast<acc_t>(row_hi[tx.high]));
        }
      }
    }
    out[idx] = static_cast<scalar_t>(sum * r.inv_count);
  }
}

// Scatters one output bin's gradient g into plane (h, w) along the RoI's sampling grid.
template <typename acc_t, bool kAtomic>
__device__ __forceinline__ void scatter_bin(const RoIGrid<acc_t>& r, int64_t ph, int64_t pw, acc_t g,
                                            acc_t* plane, int h, int w) {
  for (int iy = 0; iy < r.y.grid; ++iy) {
    const AxisTap<acc_t> ty = axis_tap(sample_position(r.y, ph, iy), h);
    if (ty.w_low == acc_t(0) && ty.w_high == acc_t(0)) {
      continue;
    }
    for (int ix = 0; ix < r.x.grid; ++ix) {
      const AxisTap<acc_t> tx = axis_tap(sample_position(r.x, pw, ix), w);
      if (tx.w_low == acc_t(0) && tx.w_high == acc_t(0)) {
        continue;
      }
      const int64_t lo = int64_t(ty.low) * w;
      const int64_t hi = int64_t(ty.high) * w;
      const acc_t v[4] = {g * ty.w_low * tx.w_low, g * ty.w_low * tx.w_high, g * ty.w_high * tx.w_low,
                          g * ty.w_high * tx.w_high};
      const int64_t at[4] = {lo + tx.low, lo + tx.high, hi + tx.low, hi + tx.high};
      for (int t = 0; t < 4; ++t) {
        if (kAtomic) {
          atomicAdd(plane + at[t], v[t]);
        } else {
          plane[at[t]] += v[t];
        }
      }
    }
  }
}

// One thread per output bin; fp32 (or fp64) atomics into the flat gradient buffer.
template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(int64_t total, const scalar_t* grad, const acc_t* rois, PoolerParams p,
                                int64_t batch, int64_t channels, LevelTable<acc_t> levels) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t pw = idx % p.output_w;
    const int64_t ph = (idx / p.output_w) % p.output_h;
    const int64_t c = (idx / (p.output_w * p.output_h)) % channels;
    const int64_t k = idx / (p.output_w * p.output_h * channels);
    const RoIGrid<acc_t> r = roi_grid(rois + k * 5, p, batch);
    if (r.level < 0) {
      continue;
    }
    const int h = levels.height[r.level];
    const int w = levels.width[r.level];
    acc_t* plane = levels.data[r.level] + (r.batch * channels + c) * h * w;
    scatter_bin<acc_t, true>(r, ph, pw, static_cast<acc_t>(grad[idx]) * r.inv_count, plane, h, w);
  }
}

// Deterministic variant (torch.use_deterministic_algorithms): one thread owns one (level, image,
// channel) plane and adds the RoIs' contributions in RoI order, so no atomics and a fixed sum order.
// Slower (parallel over L*B*C planes only), but bitwise reproducible.
template <typename scalar_t, typename acc_t>
__global__ void backward_deterministic_kernel(int64_t total, int64_t num_rois, const scalar_t* grad,
                                              const acc_t* rois, PoolerParams p, int64_t batch,
                                              int64_t channels, LevelTable<acc_t> levels) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t c = idx % channels;
    const int64_t b = (idx / channels) % batch;
    const int level = static_cast<int>(idx / (channels * batch));
    const int h = levels.height[level];
    const int w = levels.width[level];
    acc_t* plane = levels.data[level] + (b * channels + c) * h * w;
    for (int64_t k = 0; k < num_rois; ++k) {
      const RoIGrid<acc_t> r = roi_grid(rois + k * 5, p, batch);
      if (r.level != level || r.batch != b) {
        continue;
      }
      const scalar_t* g = grad + (k * channels + c) * p.output_h * p.output_w;
      for (int64_t ph = 0; ph < p.output_h; ++ph) {
        for (int64_t pw = 0; pw < p.output_w; ++pw) {
          const acc_t gv = static_cast<acc_t>(g[ph * p.output_w + pw]) * r.inv_count;
          scatter_bin<acc_t, false>(r, ph, pw, gv, plane, h, w);
        }
      }
    }
  }
}

at::Tensor forward_cuda(at::TensorList features_in, const at::Tensor& rois_in, int64_t output_h,
                        int64_t output_w, int64_t sampling_ratio, bool aligned, int64_t min_level,
                        double canonical_box_size, int64_t canonical_level) {
  std::vector<at::Tensor> features = check_features(features_in, rois_in);
  const PoolerParams p = make_params(output_h, output_w, sampling_ratio, aligned, min_level,
                                     static_cast<int64_t>(features.size()), canonical_box_size,
                                     canonical_level);
  const c10::cuda::CUDAGuard guard(features[0].device());
  for (auto& f : features) {
    f = f.contiguous();
  }
  const at::Tensor rois = rois_in.contiguous();
  const int64_t batch = features[0].size(0);
  const int64_t channels = features[0].size(1);
  at::Tensor out = at::empty({rois.size(0), channels, output_h, output_w}, features[0].options());
  const int64_t total = out.numel();
  if (total == 0) {
    return out;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features[0].scalar_type(),
                                  "multilevel_roi_align_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    LevelTable<const scalar_t> levels{};
    for (size_t l = 0; l < features.size(); ++l) {
      levels.data[l] = features[l].const_data_ptr<scalar_t>();
      levels.height[l] = static_cast<int>(features[l].size(2));
      levels.width[l] = static_cast<int>(features[l].size(3));
    }
    forward_kernel<scalar_t, acc_t><<<num_blocks(total), kThreads, 0, stream>>>(
        total, levels, rois.const_data_ptr<acc_t>(), p, batch, channels, out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor backward_cuda(const at::Tensor& grad_in, const at::Tensor& rois_in, int64_t batch,
                         int64_t channels, at::IntArrayRef heights, at::IntArrayRef widths,
                         int64_t sampling_ratio, bool aligned, int64_t min_level, double canonical_box_size,
                         int64_t canonical_level) {
  const std::vector<int64_t> offsets = level_offsets(batch, channels, heights, widths);
  TORCH_CHECK(grad_in.dim() == 4 && rois_in.dim() == 2 && grad_in.size(0) == rois_in.size(0) &&
                  grad_in.size(1) == channels,
              "multilevel_roi_align_backward: grad must be (K, C, out_h, out_w)");
  TORCH_CHECK(rois_in.device() == grad_in.device(), "multilevel_roi_align_backward: device mismatch");
  TORCH_CHECK(rois_in.scalar_type() == at::toOpMathType(grad_in.scalar_type()),
              "multilevel_roi_align_backward: rois must have grad's accumulation dtype");
  const PoolerParams p = make_params(grad_in.size(2), grad_in.size(3), sampling_ratio, aligned, min_level,
                                     static_cast<int64_t>(heights.size()), canonical_box_size,
                                     canonical_level);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor rois = rois_in.contiguous();
  // The gradient accumulates in fp32 (fp64 for double) whatever the feature dtype.
  const auto acc_dtype = at::toOpMathType(grad.scalar_type());
  at::Tensor buffer = at::zeros({offsets.back()}, grad.options().dtype(acc_dtype));
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const int64_t total = deterministic ? int64_t(heights.size()) * batch * channels : grad.numel();
  if (grad.numel() > 0 && total > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                    "multilevel_roi_align_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      LevelTable<acc_t> levels{};
      for (size_t l = 0; l < heights.size(); ++l) {
        levels.data[l] = buffer.mutable_data_ptr<acc_t>() + offsets[l];
        levels.height[l] = static_cast<int>(heights[l]);
        levels.width[l] = static_cast<int>(widths[l]);
      }
      const scalar_t* g = grad.const_data_ptr<scalar_t>();
      const acc_t* r = rois.const_data_ptr<acc_t>();
      if (deterministic) {
        backward_deterministic_kernel<scalar_t, acc_t><<<num_blocks(total), kThreads, 0, stream>>>(
            total, rois.size(0), g, r, p, batch, channels, levels);
      } else {
        backward_kernel<scalar_t, acc_t><<<num_blocks(total), kThreads, 0, stream>>>(
            total, g, r, p, batch, channels, levels);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return acc_dtype == grad.scalar_type() ? buffer : buffer.to(grad.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(distill, CUDA, m) {
  m.impl("multilevel_roi_align", &forward_cuda);
  m.impl("multilevel_roi_align_backward", &backward_cuda);
}

}  // namespace distill
