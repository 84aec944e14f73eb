// Logits -> segmentation / probabilities on the original grid (segmentation-pipeline.md 12-14, 18).
//  * fp16 logits resampled to shape_after_cropping with the probabilities resampling options
//    (current = plans spacing, new = original spacing), stored fp16 (resample_to_shape keeps the dtype);
//  * softmax mode: without probabilities argmax over the fp16 logits (first maximum wins); with probabilities
//    softmax in float32 over the channels (max, exp(x - max), sum in channel order, divide) and argmax of those;
//  * region mode: sigmoid in float32, seg = regions_class_order[i] where prob[i] > 0.5, later regions overwrite;
//  * un-crop into shape_before_cropping (background 0; probabilities: channel 0 = 1 outside in softmax mode);
//  * transpose back with transpose_backward (numpy .transpose semantics).
#include "pipeline/seg/export.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace kiln::seg {

namespace {

[[noreturn]] void bad(const std::string& msg) { seg_fail(ErrorCode::InvalidArgument, "export_prediction: " + msg); }

std::string shape3_str(const Shape3& s) {
  return "(" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + ")";
}

// numpy a.transpose(perm) of a (n, s0, s1, s2) array of T along the spatial axes (the leading axis kept).
template <class T>
Tensor transpose_back(const Tensor& in, DType dt, int64_t n, const Shape3& s, const std::array<int, 3>& perm,
                      bool leading) {
  Shape3 os{s[perm[0]], s[perm[1]], s[perm[2]]};
  Shape shape = leading ? Shape{n, os[0], os[1], os[2]} : Shape{os[0], os[1], os[2]};
  bool identity = perm[0] == 0 && perm[1] == 1 && perm[2] == 2;
  if (identity) return in.reshaped(shape);
  Tensor out(dt, shape);
  const T* src = in.data<T>();
  T* dst = out.data<T>();
  // input strides, permuted to the output's axes
  const int64_t in_stride[3] = {s[1] * s[2], s[2], 1};
  const int64_t st0 = in_stride[perm[0]], st1 = in_stride[perm[1]], st2 = in_stride[perm[2]];
  const int64_t vol = s[0] * s[1] * s[2];
  const int64_t rows = n * os[0] * os[1];
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / (os[0] * os[1]);
    const int64_t i = (r / os[1]) % os[0];
    const int64_t j = r % os[1];
    const T* sp = src + c * vol + i * st0 + j * st1;
    T* dp = dst + r * os[2];
    for (int64_t k = 0; k < os[2]; ++k) dp[k] = sp[k * st2];
  }
  return out;
}

}  // namespace

ExportResult export_prediction(const Tensor& logits_fp16, const ModelConfig& cfg, const CaseGeometry& geom,
                               bool want_probabilities) {
  if (logits_fp16.dtype() != DType::Float16 || logits_fp16.rank() != 4)
    bad("logits must be float16 (K, X, Y, Z), got " + std::string(dtype_name(logits_fp16.dtype())) + " " +
        shape_str(logits_fp16.shape()));
  const int64_t K = logits_fp16.dim(0);
  if (K != cfg.num_outputs())
    bad("logits have " + std::to_string(K) + " channels, the model has " + std::to_string(cfg.num_outputs()) +
        " outputs (" + (cfg.has_regions ? "regions" : "labels") + ")");
  if (K < 1) bad("logits have no channels");
  if (cfg.has_regions && cfg.regions_class_order.size() != (size_t)K)
    bad("regions_class_order has " + std::to_string(cfg.regions_class_order.size()) + " entries, expected " +
        std::to_string(K) + " (one per region)");
  for (int d = 0; d < 3; ++d) {
    if (geom.bbox.lo[d] < 0 || geom.bbox.hi[d] > geom.shape_before_cropping[d] || geom.bbox.lo[d] >= geom.bbox.hi[d])
      bad("crop box axis " + std::to_string(d) + " [" + std::to_string(geom.bbox.lo[d]) + ", " +
          std::to_string(geom.bbox.hi[d]) + ") does not fit shape_before_cropping " +
          shape3_str(geom.shape_before_cropping));
    if (geom.shape_after_cropping[d] != geom.bbox.hi[d] - geom.bbox.lo[d])
      bad("shape_after_cropping " + shape3_str(geom.shape_after_cropping) + " is not the crop box size " +
          shape3_str(geom.bbox.size()));
  }
  {
    std::array<int, 3> seen{0, 0, 0};
    for (int d = 0; d < 3; ++d) {
      int a = cfg.transpose_backward[d];
      if (a < 0 || a > 2 || seen[a]++) bad("transpose_backward is not a permutation of (0, 1, 2)");
    }
  }

  // 12. resample back to the cropped original grid (fp16 in, fp16 out).
  Spacing current{};
  if (cfg.is_2d) {
    if (cfg.spacing.size() != 2) bad("2d configuration needs 2 spacing values, got " + std::to_string(cfg.spacing.size()));
    current = {geom.original_spacing[0], cfg.spacing[0], cfg.spacing[1]};
  } else {
    if (cfg.spacing.size() != 3) bad("3d configuration needs 3 spacing values, got " + std::to_string(cfg.spacing.size()));
    current = {cfg.spacing[0], cfg.spacing[1], cfg.spacing[2]};
  }
  Tensor logits =
      resample_to_shape(logits_fp16, geom.shape_after_cropping, current, geom.original_spacing, cfg.resample_probabilities);
  if (logits.dtype() != DType::Float16 || logits.rank() != 4 || logits.dim(0) != K ||
      spatial_shape(logits) != geom.shape_after_cropping)
    bad("resampling returned " + std::string(dtype_name(logits.dtype())) + " " + shape_str(logits.shape()) +
        ", expected float16 with spatial shape " + shape3_str(geom.shape_after_cropping));

  const Shape3 cs = geom.shape_after_cropping;
  const int64_t n = cs[0] * cs[1] * cs[2];
  const uint16_t* lg = logits.data<uint16_t>();

  // label value per output channel / region; output dtype
  int max_label = 0;
  if (cfg.has_regions) {
    for (int c : cfg.regions_class_order) max_label = std::max(max_label, c);
  } else {
    if (cfg.label_values.size() != (size_t)K)
      bad("label_values has " + std::to_string(cfg.label_values.size()) + " entries, expected " + std::to_string(K));
    for (int v : cfg.label_values) max_label = std::max(max_label, v);
  }
  if (max_label > 65535) bad("label value " + std::to_string(max_label) + " does not fit uint16");
  const bool u8 = max_label < 255;
  std::vector<uint16_t> seg((size_t)n, 0);
  Tensor probs;  // (K, cropped) float32
  const bool need_probs = want_probabilities || cfg.has_regions;
  if (need_probs) probs = Tensor(DType::Float32, {K, cs[0], cs[1], cs[2]});
  float* pr = need_probs ? probs.data<float>() : nullptr;

  // 13. logits -> segmentation.
  if (cfg.has_regions) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      uint16_t s = 0;
      for (int64_t c = 0; c < K; ++c) {
        const float x = half_to_float(lg[c * n + i]);
        const float p = 1.0f / (1.0f + std::exp(-x));
        pr[c * n + i] = p;
        if (p > 0.5f) s = (uint16_t)cfg.regions_class_order[(size_t)c];
      }
      seg[(size_t)i] = s;
    }
  } else if (!want_probabilities) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      int64_t best = 0;
      float bv = half_to_float(lg[i]);
      for (int64_t c = 1; c < K; ++c) {
        const float v = half_to_float(lg[c * n + i]);
        if (v > bv) { bv = v; best = c; }
      }
      seg[(size_t)i] = (uint16_t)cfg.label_values[(size_t)best];
    }
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      float m = half_to_float(lg[i]);
      for (int64_t c = 1; c < K; ++c) m = std::max(m, half_to_float(lg[c * n + i]));
      float sum = 0.0f;
      for (int64_t c = 0; c < K; ++c) {
        const float e = std::exp(half_to_float(lg[c * n + i]) - m);
        pr[c * n + i] = e;
        sum += e;
      }
      int64_t best = 0;
      for (int64_t c = 0; c < K; ++c) {
        const float p = pr[c * n + i] / sum;
        pr[c * n + i] = p;
        if (p > pr[best * n + i]) best = c;
      }
      seg[(size_t)i] = (uint16_t)cfg.label_values[(size_t)best];
    }
  }

  // 14. un-crop, then transpose back.
  const Shape3 fs = geom.shape_before_cropping;
  const int64_t fvol = fs[0] * fs[1] * fs[2];
  const DType seg_dt = u8 ? DType::UInt8 : DType::UInt16;
  Tensor full_seg(seg_dt, {fs[0], fs[1], fs[2]});  // zero-initialised = background
  const int64_t rows = cs[0] * cs[1];
  const Shape3 lo = geom.bbox.lo;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r / cs[1], j = r % cs[1];
    const int64_t off = ((i + lo[0]) * fs[1] + j + lo[1]) * fs[2] + lo[2];
    const uint16_t* s = seg.data() + r * cs[2];
    if (u8) {
      uint8_t* d = full_seg.data<uint8_t>() + off;
      for (int64_t k = 0; k < cs[2]; ++k) d[k] = (uint8_t)s[k];
    } else {
      uint16_t* d = full_seg.data<uint16_t>() + off;
      std::memcpy(d, s, sizeof(uint16_t) * (size_t)cs[2]);
    }
  }
  ExportResult res;
  res.segmentation = u8 ? transpose_back<uint8_t>(full_seg, seg_dt, 1, fs, cfg.transpose_backward, false)
                        : transpose_back<uint16_t>(full_seg, seg_dt, 1, fs, cfg.transpose_backward, false);

  if (want_probabilities) {
    Tensor full_p(DType::Float32, {K, fs[0], fs[1], fs[2]});
    float* fp = full_p.data<float>();
    if (!cfg.has_regions) std::fill(fp, fp + fvol, 1.0f);  // background channel outside the crop
    const int64_t prow = K * rows;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < prow; ++r) {
      const int64_t c = r / rows, rr = r % rows;
      const int64_t i = rr / cs[1], j = rr % cs[1];
      std::memcpy(fp + c * fvol + ((i + lo[0]) * fs[1] + j + lo[1]) * fs[2] + lo[2], pr + r * cs[2],
                  sizeof(float) * (size_t)cs[2]);
    }
    res.probabilities = transpose_back<float>(full_p, DType::Float32, K, fs, cfg.transpose_backward, true);
  }
  return res;
}

}  // namespace kiln::seg
