// CPU kernel of distill::nms: greedy non-maximum suppression with torchvision.ops.nms's result (same stable
// descending score order, same IoU formula and comparison), on boxes gathered in score order so that the
// inner loop over the lower-scored boxes is branch-free and vectorises; torchvision's loop gathers through
// the order and branches per box, which makes it several times slower for the few hundred boxes per
// feature level of an RPN.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace distill {
namespace {

template <typename scalar_t>
int64_t nms_sorted(const scalar_t* x1, const scalar_t* y1, const scalar_t* x2, const scalar_t* y2,
                   const scalar_t* area, int64_t n, double threshold, uint8_t* suppressed,
                   int64_t* keep) {
  const scalar_t thr = static_cast<scalar_t>(threshold);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    keep[kept++] = i;
    const scalar_t ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
    // every j > i is scored, suppressed or not: a suppressed box stays suppressed, and no branch
    for (int64_t j = i + 1; j < n; ++j) {
      const scalar_t w = std::max(scalar_t(0), std::min(ix2, x2[j]) - std::max(ix1, x1[j]));
      const scalar_t h = std::max(scalar_t(0), std::min(iy2, y2[j]) - std::max(iy1, y1[j]));
      const scalar_t inter = w * h;
      const scalar_t ovr = inter / (iarea + area[j] - inter);
      suppressed[j] |= static_cast<uint8_t>(ovr > thr);
    }
  }
  return kept;
}

at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  TORCH_CHECK(dets.dim() == 2 && dets.size(1) == 4, "distill::nms: boxes must be (N, 4), got ",
              dets.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == dets.size(0),
              "distill::nms: scores must be (N,) for N = ", dets.size(0), " boxes, got ", scores.sizes());
  TORCH_CHECK(dets.scalar_type() == scores.scalar_type(), "distill::nms: boxes are ", dets.scalar_type(),
              " but scores are ", scores.scalar_type());
  TORCH_CHECK(dets.scalar_type() == at::kFloat || dets.scalar_type() == at::kDouble,
              "distill::nms: boxes must be float32 or float64 (as for torchvision's CPU kernel), got ",
              dets.scalar_type());
  const int64_t n = dets.size(0);
  if (n == 0) return at::empty({0}, dets.options().dtype(at::kLong));
  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted = dets.index_select(0, order).t().contiguous();  // (4, N) in score order
  std::vector<uint8_t> suppressed(n, 0);
  at::Tensor keep = at::empty({n}, dets.options().dtype(at::kLong));
  int64_t kept = 0;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "distill_nms", [&] {
    const at::Tensor area = (sorted[2] - sorted[0]) * (sorted[3] - sorted[1]);  // torchvision's areas
    const scalar_t* p = sorted.data_ptr<scalar_t>();
    kept = nms_sorted<scalar_t>(p, p + n, p + 2 * n, p + 3 * n, area.data_ptr<scalar_t>(), n, iou_threshold,
                                suppressed.data(), keep.data_ptr<int64_t>());
  });
  return order.index_select(0, keep.narrow(0, 0, kept));
}

}  // namespace

TORCH_LIBRARY_IMPL(distill, CPU, m) {
  m.impl("nms", &nms_cpu);
}

}  // namespace distill
