// CPU kernel of distill::resample_crops: N crops of one image resampled with given separable taps
// (vertical pass, then horizontal), quantised to 8 bits and normalised, in one pass.
//
// Blocks of 8 output rows are resampled vertically into row buffers spanning the columns the crop's
// horizontal taps read, transposed so each column is one SIMD vector, then resampled horizontally 8 rows
// at a time straight into the output: nothing larger than 8 image rows is materialised. The sums run in
// float32 in tap order with the reference's operations (distill.ops.resample_crops_reference) and no
// contraction into FMA, so the result matches it bit for bit. Taps with a zero weight at either end of a
// pixel's list are skipped (they add nothing).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../resample_crops_common.h"

// Keep a * b + c as two roundings, like the PyTorch reference, whatever -march the build uses.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(__APPLE__)
#define DISTILL_CROP_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef DISTILL_CROP_CLONES
#define DISTILL_CROP_CLONES
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // BlockVec helpers are always inlined: no ABI crosses a call
#endif

namespace distill {
namespace {

struct TapRange {
  int32_t begin = 0, end = 0;  // taps [begin, end) of one output pixel, trimmed of zero weights
};

// Trims each pixel's taps to the non-zero weights and checks every index lies in [0, limit).
// index, weight: (pixels, k). Returns the [lo, hi) span of the indices the trimmed taps read.
std::pair<int64_t, int64_t> plan_axis(const int64_t* index, const float* weight, int64_t pixels, int64_t k,
                                      int64_t limit, const char* axis, TapRange* ranges) {
  int64_t lo = std::numeric_limits<int64_t>::max();
  int64_t hi = std::numeric_limits<int64_t>::min();
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t* idx = index + p * k;
    const float* w = weight + p * k;
    int64_t b = 0, e = k;
    for (int64_t t = 0; t < k; ++t) {
      TORCH_CHECK(idx[t] >= 0 && idx[t] < limit, "resample_crops: ", axis, "_index holds ", idx[t],
                  ", outside [0, ", limit, ")");
    }
    while (b < e && w[b] == 0.0f) ++b;
    while (e > b && w[e - 1] == 0.0f) --e;
    ranges[p] = TapRange{static_cast<int32_t>(b), static_cast<int32_t>(e)};
    for (int64_t t = b; t < e; ++t) {
      lo = std::min(lo, idx[t]);
      hi = std::max(hi, idx[t] + 1);
    }
  }
  return hi > lo ? std::make_pair(lo, hi) : std::make_pair(int64_t(0), int64_t(0));
}

constexpr int kBlock = 8;  // output rows resampled together: one SIMD vector per column in the horizontal pass

// kBlock floats as one vector (GCC/Clang vector extension: AVX in the AVX2 clone, two SSE halves otherwise).
typedef float BlockVec __attribute__((vector_size(kBlock * sizeof(float))));

__attribute__((always_inline)) inline BlockVec load_vec(const float* p) {
  BlockVec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

__attribute__((always_inline)) inline void store_vec(float* p, BlockVec v) { std::memcpy(p, &v, sizeof(v)); }

// row[j] = sum_t w[t] * plane[idx[t], col0 + j] for j < cols, in tap order (kBlock columns per step, the
// sum kept in registers).
DISTILL_CROP_CLONES void vertical_pass(float* __restrict__ row, const float* __restrict__ plane, int64_t width,
                                       const int64_t* idx, const float* w, TapRange r, int64_t col0,
                                       int64_t cols) {
  if (r.begin == r.end) {
    std::fill(row, row + cols, 0.0f);
    return;
  }
  const float* base = plane + col0;
  int64_t j = 0;
  for (; j + kBlock <= cols; j += kBlock) {
    BlockVec acc = w[r.begin] * load_vec(base + idx[r.begin] * width + j);
    for (int32_t t = r.begin + 1; t < r.end; ++t) {
      const BlockVec term = w[t] * load_vec(base + idx[t] * width + j);
      acc += term;
    }
    store_vec(row + j, acc);
  }
  for (; j < cols; ++j) {
    float acc = w[r.begin] * base[idx[r.begin] * width + j];
    for (int32_t t = r.begin + 1; t < r.end; ++t) {
      const float term = w[t] * base[idx[t] * width + j];
      acc += term;
    }
    row[j] = acc;
  }
}

// block[col * kBlock + u] = rows[u][col]: the block's columns become contiguous vectors.
DISTILL_CROP_CLONES void transpose_block(float* __restrict__ block, const float* __restrict__ rows,
                                         int64_t stride, int64_t cols) {
  for (int64_t j = 0; j < cols; ++j) {
    for (int u = 0; u < kBlock; ++u) {
      block[j * kBlock + u] = rows[u * stride + j];
    }
  }
}

// In place: v[j][u] becomes v[u][j] (8 x 8).
__attribute__((always_inline)) inline void transpose8(BlockVec* v) {
  BlockVec t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(v[i], v[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(v[i], v[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    s[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    s[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    s[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = __builtin_shufflevector(s[i], s[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    v[i + 4] = __builtin_shufflevector(s[i], s[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// out[u * out_w + j] = (round(255 * clamp(v, 0, 1)) / 255 - mean) / std for u < rows, j < out_w, with
// v = sum_t w[j, t] * block[idx[j, t] - col0][u]: the horizontal pass of kBlock rows at once, quantised and
// normalised with the reference's float32 operations (NaN stays NaN), stored back as rows.
DISTILL_CROP_CLONES void horizontal_pass(float* __restrict__ out, const float* __restrict__ block,
                                         const int64_t* idx, const float* w, const TapRange* ranges,
                                         int64_t rows, int64_t out_w, int64_t k, int64_t col0, float mean,
                                         float std) {
  const BlockVec zero = {};
  const BlockVec one = zero + 1.0f, levels = zero + 255.0f;
  const BlockVec round = zero + 8388608.0f;  // 2^23: adding and subtracting it rounds half to even (torch.round)
  for (int64_t j0 = 0; j0 < out_w; j0 += 8) {
    const int64_t count = std::min<int64_t>(8, out_w - j0);
    BlockVec v[8];
    for (int64_t jj = 0; jj < 8; ++jj) {
      if (jj >= count) {
        v[jj] = zero;
        continue;
      }
      const int64_t j = j0 + jj;
      const TapRange r = ranges[j];
      const int64_t* ij = idx + j * k;
      const float* wj = w + j * k;
      BlockVec acc = zero;
      for (int32_t t = r.begin; t < r.end; ++t) {
        const BlockVec term = wj[t] * load_vec(block + (ij[t] - col0) * kBlock);
        acc += term;
      }
      BlockVec x = acc < zero ? zero : acc;  // NaN fails both tests and stays NaN
      x = x > one ? one : x;
      x = x * levels;
      x = x + round;
      x = x - round;
      x = x / levels;
      x = x - mean;
      v[jj] = x / std;
    }
    if (count == 8 && rows == kBlock) {
      transpose8(v);
      for (int u = 0; u < kBlock; ++u) {
        store_vec(out + u * out_w + j0, v[u]);
      }
    } else {
      for (int64_t u = 0; u < rows; ++u) {
        for (int64_t jj = 0; jj < count; ++jj) {
          out[u * out_w + j0 + jj] = v[jj][u];
        }
      }
    }
  }
}

// Asks for transparent huge pages over the 2 MiB-aligned interior of a fresh, large buffer: first touching
// tens of MiB of 4 KiB pages costs as much as resampling into them. Advisory only.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end >= begin + 2 * kHuge) {
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
}

// (C, H, W) uint8 -> float32 value / 255, as the reference's image.float() / 255.0.
DISTILL_CROP_CLONES void bytes_to_unit(const uint8_t* __restrict__ src, float* __restrict__ dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = static_cast<float>(src[i]) / 255.0f;
  }
}

void resample_crops_into(const at::Tensor& image_in, const at::Tensor& y_index_in, const at::Tensor& y_weight_in,
                         const at::Tensor& x_index_in, const at::Tensor& x_weight_in, at::ArrayRef<double> mean,
                         at::ArrayRef<double> std, const CropShape& s, at::Tensor& out) {
  if (out.numel() == 0) {
    return;
  }
  const at::Tensor y_index = y_index_in.contiguous(), y_weight = y_weight_in.contiguous();
  const at::Tensor x_index = x_index_in.contiguous(), x_weight = x_weight_in.contiguous();
  const int64_t plane_size = s.height * s.width;
  at::Tensor image;
  if (image_in.scalar_type() == at::kByte) {
    const at::Tensor bytes = image_in.contiguous();
    image = at::empty({s.channels, s.height, s.width}, out.options());
    advise_huge_pages(image.mutable_data_ptr(), image.nbytes());
    const uint8_t* src = bytes.const_data_ptr<uint8_t>();
    float* dst = image.mutable_data_ptr<float>();
    at::parallel_for(0, s.channels * plane_size, 1 << 16, [&](int64_t begin, int64_t end) {
      bytes_to_unit(src + begin, dst + begin, end - begin);
    });
  } else {
    image = image_in.contiguous();
  }

  // Per crop: taps trimmed to their non-zero weights and the span of columns the horizontal taps read.
  std::vector<TapRange> y_ranges(s.crops * s.out_h), x_ranges(s.crops * s.out_w);
  std::vector<int64_t> col0(s.crops), cols(s.crops);
  const int64_t* yi = y_index.const_data_ptr<int64_t>();
  const float* yw = y_weight.const_data_ptr<float>();
  const int64_t* xi = x_index.const_data_ptr<int64_t>();
  const float* xw = x_weight.const_data_ptr<float>();
  const int64_t y_stride = s.out_h * s.taps_y, x_stride = s.out_w * s.taps_x;
  const int64_t plan_grain = std::max<int64_t>(1, (int64_t(1) << 18) / (y_stride + x_stride + 1));
  at::parallel_for(0, s.crops, plan_grain, [&](int64_t begin, int64_t end) {  // serial unless large
    for (int64_t n = begin; n < end; ++n) {
      plan_axis(yi + n * y_stride, yw + n * y_stride, s.out_h, s.taps_y, s.height, "y", &y_ranges[n * s.out_h]);
      const auto span = plan_axis(xi + n * x_stride, xw + n * x_stride, s.out_w, s.taps_x, s.width, "x",
                                  &x_ranges[n * s.out_w]);
      col0[n] = span.first;
      cols[n] = span.second - span.first;
    }
  });

  const std::vector<float> mean_f(mean.begin(), mean.end()), std_f(std.begin(), std.end());
  const float* src = image.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  // One task per block of kBlock output rows of one crop channel; a grain of a crop channel keeps tasks coarse.
  const int64_t blocks_y = (s.out_h + kBlock - 1) / kBlock;
  at::parallel_for(0, s.crops * s.channels * blocks_y, blocks_y, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(kBlock * s.width), block(kBlock * s.width);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t y0 = (task % blocks_y) * kBlock;
      const int64_t c = (task / blocks_y) % s.channels;
      const int64_t n = task / (blocks_y * s.channels);
      const int64_t count = std::min<int64_t>(kBlock, s.out_h - y0);
      for (int64_t u = 0; u < kBlock; ++u) {
        const int64_t yp = n * s.out_h + y0 + u;
        if (u < count) {
          vertical_pass(rows.data() + u * s.width, src + c * plane_size, s.width, yi + yp * s.taps_y,
                        yw + yp * s.taps_y, y_ranges[yp], col0[n], cols[n]);
        } else {
          std::fill(rows.data() + u * s.width, rows.data() + u * s.width + cols[n], 0.0f);
        }
      }
      transpose_block(block.data(), rows.data(), s.width, cols[n]);
      horizontal_pass(dst + ((n * s.channels + c) * s.out_h + y0) * s.out_w, block.data(), xi + n * x_stride,
                      xw + n * x_stride, &x_ranges[n * s.out_w], count, s.out_w, s.taps_x, col0[n], mean_f[c],
                      std_f[c]);
    }
  });
}

at::Tensor resample_crops_cpu(const at::Tensor& image, const at::Tensor& y_index, const at::Tensor& y_weight,
                              const at::Tensor& x_index, const at::Tensor& x_weight, at::ArrayRef<double> mean,
                              at::ArrayRef<double> std) {
  const CropShape s = check_resample_args(image, y_index, y_weight, x_index, x_weight, mean, std);
  at::Tensor out = at::empty({s.crops, s.channels, s.out_h, s.out_w}, image.options().dtype(at::kFloat));
  advise_huge_pages(out.mutable_data_ptr(), out.nbytes());
  resample_crops_into(image, y_index, y_weight, x_index, x_weight, mean, std, s, out);
  return out;
}

void resample_crops_out_cpu(const at::Tensor& image, const at::Tensor& y_index, const at::Tensor& y_weight,
                            const at::Tensor& x_index, const at::Tensor& x_weight, at::ArrayRef<double> mean,
                            at::ArrayRef<double> std, at::Tensor out) {
  const CropShape s = check_resample_args(image, y_index, y_weight, x_index, x_weight, mean, std);
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.device() == image.device(),
              "resample_crops_out: out must be a contiguous float32 tensor on the image's device");
  TORCH_CHECK(out.sizes() == at::IntArrayRef({s.crops, s.channels, s.out_h, s.out_w}),
              "resample_crops_out: out has shape ", out.sizes(), ", the crops need ",
              at::IntArrayRef({s.crops, s.channels, s.out_h, s.out_w}));
  resample_crops_into(image, y_index, y_weight, x_index, x_weight, mean, std, s, out);
}

}  // namespace

TORCH_LIBRARY_IMPL(distill, CPU, m) {
  m.impl("resample_crops", &resample_crops_cpu);
  m.impl("resample_crops_out", &resample_crops_out_cpu);
}

}  // namespace distill
