// The one place the `distill` op schemas are declared; kernels live in cpu/ and cuda/, the autograd
// formula and fake (meta) kernels are registered from Python (distill/ops/_registrations.py).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(distill, m) {
  // features: L tensors (B, C, H_l, W_l) of one dtype; rois: (K, 5) [batch, x0, y0, x1, y1] in image
  // pixels, in the features' accumulation dtype. Returns (K, C, output_h, output_w).
  m.def(
      "multilevel_roi_align(Tensor[] features, Tensor rois, int output_h, int output_w, "
      "int sampling_ratio, bool aligned, int min_level, float canonical_box_size, "
      "int canonical_level) -> Tensor");
  // grad: (K, C, output_h, output_w). Returns the gradients of all levels in one flat buffer
  // (level after level, each (B, C, H_l, W_l) contiguous), in grad's dtype.
  m.def(
      "multilevel_roi_align_backward(Tensor grad, Tensor rois, SymInt batch_size, SymInt channels, "
      "SymInt[] heights, SymInt[] widths, int sampling_ratio, bool aligned, int min_level, "
      "float canonical_box_size, int canonical_level) -> Tensor");
  // Fused crop resampling: image (C, H, W) uint8 (read as value / 255) or float32; y_index / y_weight
  // (N, S_y, K_y) int64 / float32 taps of each output row, x_index / x_weight (N, S_x, K_x) of each
  // output column; mean, std: C values. Returns (N, C, S_y, S_x) float32: the vertical then horizontal
  // weighted sums, clamped to [0, 1], rounded to 8 bits, normalised with mean / std.
  m.def(
      "resample_crops(Tensor image, Tensor y_index, Tensor y_weight, Tensor x_index, Tensor x_weight, "
      "float[] mean, float[] std) -> Tensor");
  // resample_crops written into `out` (N, C, S_y, S_x) float32 contiguous (CPU only), e.g. a slice of a
  // reused batch buffer: no allocation, no page faults, no copy into the encoder's batch.
  m.def(
      "resample_crops_out(Tensor image, Tensor y_index, Tensor y_weight, Tensor x_index, Tensor x_weight, "
      "float[] mean, float[] std, Tensor(a!) out) -> ()");
  // PIL bicubic taps of N crops along one axis (CPU only; distill.teacher.crops._taps is the definition):
  // start, length, resized, offset: (N,) float64. Returns index (N, size, K) int64 in [0, limit) and
  // weight (N, size, K) float32.
  m.def(
      "crop_taps(Tensor start, Tensor length, Tensor resized, Tensor offset, int size, int limit) "
      "-> (Tensor, Tensor)");
  // Greedy NMS (CPU only), torchvision.ops.nms's contract: boxes (N, 4) XYXY and scores (N,) of one
  // dtype, float32 or float64. Returns the kept indices (int64), by decreasing score.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
}

// Importing distill._C runs the static registrations above; the module itself is empty apart from
// WITH_CUDA, which says whether the CUDA kernels were compiled in.
static struct PyModuleDef distill_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&distill_module);
  if (module == nullptr) {
    return nullptr;
  }
#ifdef WITH_CUDA
  PyModule_AddIntConstant(module, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUDA", 0);
#endif
  return module;
}
