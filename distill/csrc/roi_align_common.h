// Geometry shared by the CPU and CUDA multi-level RoIAlign kernels.
// Semantics follow detectron2's ROIPooler + ROIAlignV2 (torchvision roi_align, aligned=True):
// the same level mapper, half-pixel offset, adaptive sampling grid and bilinear clamping rules.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DISTILL_HD __host__ __device__ __forceinline__
#else
#define DISTILL_HD inline
#endif

namespace distill {

// More levels than any FPN uses; bounds the per-level pointer table passed to CUDA kernels by value.
constexpr int kMaxLevels = 8;

DISTILL_HD float math_floor(float v) { return floorf(v); }
DISTILL_HD double math_floor(double v) { return floor(v); }
DISTILL_HD float math_ceil(float v) { return ceilf(v); }
DISTILL_HD double math_ceil(double v) { return ceil(v); }
DISTILL_HD float math_sqrt(float v) { return sqrtf(v); }
DISTILL_HD double math_sqrt(double v) { return sqrt(v); }
DISTILL_HD float math_log2(float v) { return log2f(v); }
DISTILL_HD double math_log2(double v) { return log2(v); }

struct PoolerParams {
  int64_t output_h;
  int64_t output_w;
  int64_t sampling_ratio;  // 0: adaptive ceil(roi_size / output_size)
  bool aligned;
  int64_t min_level;  // log2 of the first level's stride
  int64_t num_levels;
  double canonical_box_size;
  int64_t canonical_level;
};

// Level index in [0, num_levels) of a box in image pixels (FPN eq. 1, as detectron2 computes it in the
// boxes' dtype). Empty, inverted or NaN boxes go to the finest level.
template <typename T>
DISTILL_HD int roi_level_index(const T* box, const PoolerParams& p) {
  const T area = (box[2] - box[0]) * (box[3] - box[1]);
  if (!(area > T(0))) {
    return 0;
  }
  const T level = math_floor(
      T(p.canonical_level) + math_log2(math_sqrt(area) / T(p.canonical_box_size) + T(1e-8)));
  const T lo = T(p.min_level);
  const T hi = T(p.min_level + p.num_levels - 1);
  const T clamped = level < lo ? lo : (level > hi ? hi : level);
  return static_cast<int>(clamped) - static_cast<int>(p.min_level);
}

// One RoI's sampling grid on its level, along one axis.
template <typename T>
struct AxisGrid {
  T start;   // first bin edge, in feature pixels
  T bin;     // bin size, in feature pixels
  int grid;  // samples per bin (<= 0: the RoI is empty along this axis)
};

template <typename T>
DISTILL_HD AxisGrid<T> axis_grid(T lo, T hi, T scale, const PoolerParams& p, int64_t bins) {
  const T offset = p.aligned ? T(0.5) : T(0);
  AxisGrid<T> g;
  g.start = lo * scale - offset;
  T size = hi * scale - offset - g.start;
  if (!p.aligned && size < T(1)) {
    size = T(1);  // legacy ROIAlign forces malformed RoIs to 1x1
  }
  g.bin = size / T(bins);
  g.grid = p.sampling_ratio > 0 ? static_cast<int>(p.sampling_ratio)
                                : static_cast<int>(math_ceil(size / T(bins)));
  return g;
}

// Position of sample i of bin b (same expression order as torchvision, for bitwise-close results).
template <typename T>
DISTILL_HD T sample_position(const AxisGrid<T>& g, int64_t b, int i) {
  return g.start + T(b) * g.bin + (T(i) + T(0.5)) * g.bin / T(g.grid);
}

// Bilinear taps of one sample along one axis. Both weights are 0 when the sample lies more than one
// pixel outside the map, which makes the 2-D bilinear weight the product of the two axes' weights.
template <typename T>
struct AxisTap {
  int low;
  int high;
  T w_low;
  T w_high;
};

template <typename T>
DISTILL_HD AxisTap<T> axis_tap(T pos, int size) {
  AxisTap<T> t;
  if (pos < T(-1) || pos > T(size)) {
    t.low = 0;
    t.high = 0;
    t.w_low = T(0);
    t.w_high = T(0);
    return t;
  }
  if (pos <= T(0)) {
    pos = T(0);
  }
  t.low = static_cast<int>(pos);
  if (t.low >= size - 1) {
    t.low = size - 1;
    t.high = size - 1;
    pos = T(t.low);
  } else {
    t.high = t.low + 1;
  }
  t.w_high = pos - T(t.low);
  t.w_low = T(1) - t.w_high;
  return t;
}

// 1 / 2^level: exact in any floating type.
template <typename T>
DISTILL_HD T level_scale(int64_t level) {
  return T(1) / T(int64_t(1) << level);
}

}  // namespace distill
