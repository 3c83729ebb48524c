// CUDA kernel of distill::resample_crops: one thread per output value, which sums its taps directly
// (the horizontal sum of vertical sums, in the CPU kernel's order). The explicit _rn intrinsics keep nvcc
// from contracting a * b + c into an FMA, so results match the CPU kernel bit for bit. Indices outside
// the image are skipped (the CPU kernel rejects them; checking here would synchronise with the host).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../resample_crops_common.h"

namespace distill {
namespace {

constexpr int kCropThreads = 256;

__device__ __forceinline__ float to_unit(float v) { return v; }
__device__ __forceinline__ float to_unit(uint8_t v) { return __fdiv_rn(static_cast<float>(v), 255.0f); }

template <typename T>
__global__ void resample_crops_kernel(int64_t total, const T* __restrict__ image, CropShape s,
                                      const int64_t* __restrict__ yi, const float* __restrict__ yw,
                                      const int64_t* __restrict__ xi, const float* __restrict__ xw,
                                      const float* __restrict__ table, float* __restrict__ out) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t x = e % s.out_w;
    const int64_t y = (e / s.out_w) % s.out_h;
    const int64_t c = (e / (s.out_w * s.out_h)) % s.channels;
    const int64_t n = e / (s.out_w * s.out_h * s.channels);
    const int64_t* iy = yi + (n * s.out_h + y) * s.taps_y;
    const float* wy = yw + (n * s.out_h + y) * s.taps_y;
    const int64_t* ix = xi + (n * s.out_w + x) * s.taps_x;
    const float* wx = xw + (n * s.out_w + x) * s.taps_x;
    const T* plane = image + c * s.height * s.width;
    float acc = 0.0f;
    for (int64_t t = 0; t < s.taps_x; ++t) {
      const float w = wx[t];
      const int64_t col = ix[t];
      if (w == 0.0f || col < 0 || col >= s.width) {
        continue;  // a zero weight adds nothing
      }
      float v = 0.0f;
      for (int64_t u = 0; u < s.taps_y; ++u) {
        const int64_t row = iy[u];
        if (wy[u] != 0.0f && row >= 0 && row < s.height) {
          v = __fadd_rn(v, __fmul_rn(wy[u], to_unit(plane[row * s.width + col])));
        }
      }
      acc = __fadd_rn(acc, __fmul_rn(w, v));
    }
    if (acc != acc) {
      out[e] = acc;
      continue;
    }
    const float q = rintf(__fmul_rn(fminf(fmaxf(acc, 0.0f), 1.0f), 255.0f));  // half to even
    out[e] = table[c * 256 + static_cast<int>(q)];
  }
}

at::Tensor resample_crops_cuda(const at::Tensor& image_in, const at::Tensor& y_index_in,
                               const at::Tensor& y_weight_in, const at::Tensor& x_index_in,
                               const at::Tensor& x_weight_in, at::ArrayRef<double> mean, at::ArrayRef<double> std) {
  const CropShape s = check_resample_args(image_in, y_index_in, y_weight_in, x_index_in, x_weight_in, mean, std);
  const c10::cuda::CUDAGuard guard(image_in.device());
  at::Tensor out = at::empty({s.crops, s.channels, s.out_h, s.out_w}, image_in.options().dtype(at::kFloat));
  const int64_t total = out.numel();
  if (total == 0) {
    return out;
  }
  const at::Tensor image = image_in.contiguous();
  const at::Tensor y_index = y_index_in.contiguous(), y_weight = y_weight_in.contiguous();
  const at::Tensor x_index = x_index_in.contiguous(), x_weight = x_weight_in.contiguous();
  const std::vector<float> host_table = normalise_table(mean, std);
  const at::Tensor table = at::tensor(at::ArrayRef<float>(host_table), at::TensorOptions().dtype(at::kFloat))
                               .to(out.options());
  const int64_t blocks = std::min<int64_t>((total + kCropThreads - 1) / kCropThreads, int64_t(1) << 20);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t* yi = y_index.const_data_ptr<int64_t>();
  const float* yw = y_weight.const_data_ptr<float>();
  const int64_t* xi = x_index.const_data_ptr<int64_t>();
  const float* xw = x_weight.const_data_ptr<float>();
  if (image.scalar_type() == at::kByte) {
    resample_crops_kernel<uint8_t><<<blocks, kCropThreads, 0, stream>>>(
        total, image.const_data_ptr<uint8_t>(), s, yi, yw, xi, xw, table.const_data_ptr<float>(),
        out.mutable_data_ptr<float>());
  } else {
    resample_crops_kernel<float><<<blocks, kCropThreads, 0, stream>>>(
        total, image.const_data_ptr<float>(), s, yi, yw, xi, xw, table.const_data_ptr<float>(),
        out.mutable_data_ptr<float>());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(distill, CUDA, m) {
  m.impl("resample_crops", &resample_crops_cuda);
}

}  // namespace distill
