// Export of logits (kiln::seg::export_prediction, segmentation-pipeline.md 12-14): argmax / softmax / regions,
// un-cropping, transposing back; end to end against nnU-Net's saved segmentation and probabilities of nnunet-case0.
// Links against resample.h and nifti.h (other stages of the pipeline).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/npy.h"
#include "pipeline/seg/export.h"
#include "pipeline/seg/nifti.h"
#include "pipeline/seg/predictor.h"

using namespace kiln;
using namespace kiln::seg;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kData = std::string(KILN_SOURCE_DIR) + "/tests/data/seg/";
const std::string kCase = std::string(KILN_SHARED_DIR) + "/nnunet-case0/";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

ModelConfig softmax_config(int K) {
  ModelConfig cfg;
  cfg.spacing = {1.0, 1.0, 1.0};
  for (int k = 0; k < K; ++k) cfg.label_values.push_back(k);
  cfg.resample_probabilities.order = 1;
  cfg.resample_probabilities.order_z = 0;
  return cfg;
}

Tensor random_fp16(Shape s, uint32_t seed, float scale) {
  Tensor t(DType::Float16, s);
  uint32_t x = seed;
  for (int64_t i = 0; i < t.numel(); ++i) {
    x = x * 1664525u + 1013904223u;
    float v = ((float)(x >> 8) / (float)(1 << 24) - 0.5f) * 2 * scale;
    // a coarse grid creates exact ties between channels
    t.data<uint16_t>()[i] = float_to_half(std::round(v));
  }
  return t;
}

// geometry with an unchanged shape (no resampling): crop box inside `before`
CaseGeometry geometry(Shape3 before, BBox box) {
  CaseGeometry g;
  g.shape_before_cropping = before;
  g.bbox = box;
  g.shape_after_cropping = box.size();
  g.original_spacing = {1.0, 1.0, 1.0};
  return g;
}

}  // namespace

// Softmax mode with a transpose: argmax of the fp16 logits (first maximum wins), background outside the box,
// probabilities (float32 softmax) with channel 0 = 1 outside, all in reader order.
TEST(SegExport, SoftmaxArgmaxUncropTranspose) {
  const int K = 3;
  ModelConfig cfg = softmax_config(K);
  cfg.transpose_forward = {2, 0, 1};
  cfg.transpose_backward = {1, 2, 0};
  CaseGeometry g = geometry({6, 7, 8}, BBox{{1, 2, 0}, {5, 7, 6}});
  const Shape3 cs = g.shape_after_cropping;
  Tensor logits = random_fp16({K, cs[0], cs[1], cs[2]}, 7, 3.0f);
  ExportResult plain = export_prediction(logits, cfg, g, false);
  ExportResult withp = export_prediction(logits, cfg, g, true);
  ASSERT_EQ(plain.segmentation.dtype(), DType::UInt8);
  EXPECT_TRUE(plain.probabilities.empty());
  // reader order = network order transposed by transpose_backward: shape (7, 8, 6)
  ASSERT_EQ(plain.segmentation.shape(), (Shape{7, 8, 6}));
  ASSERT_EQ(withp.probabilities.shape(), (Shape{K, 7, 8, 6}));
  const int64_t n = cs[0] * cs[1] * cs[2];
  int ties = 0;
  for (int64_t a = 0; a < 6; ++a)
    for (int64_t b = 0; b < 7; ++b)
      for (int64_t c = 0; c < 8; ++c) {
        // network-order voxel (a, b, c) sits at reader index (b, c, a)
        const int64_t r = (b * 8 + c) * 6 + a;
        const bool inside = a >= 1 && a < 5 && b >= 2 && b < 7 && c < 6;
        int want = 0;
        float probs[K] = {1.0f, 0.0f, 0.0f};
        if (inside) {
          const int64_t v = ((a - 1) * cs[1] + (b - 2)) * cs[2] + c;
          float x[K], m = -1e30f, s = 0;
          for (int k = 0; k < K; ++k) x[k] = half_to_float(logits.data<uint16_t>()[k * n + v]);
          for (int k = 0; k < K; ++k)
            if (x[k] > x[want]) want = k;
          for (int k = 0; k < K; ++k) m = std::max(m, x[k]);
          for (int k = 0; k < K; ++k) s += std::exp(x[k] - m);
          for (int k = 0; k < K; ++k) probs[k] = std::exp(x[k] - m) / s;
          for (int k = 0; k < want; ++k) ties += x[k] == x[want];
          ties += (x[0] == x[1]) || (x[1] == x[2]) || (x[0] == x[2]);
        }
        EXPECT_EQ(plain.segmentation.data<uint8_t>()[r], want) << a << "," << b << "," << c;
        EXPECT_EQ(withp.segmentation.data<uint8_t>()[r], want) << a << "," << b << "," << c;
        for (int k = 0; k < K; ++k)
          EXPECT_NEAR(withp.probabilities.data<float>()[k * 7 * 8 * 6 + r], probs[k], 1e-6f);
      }
  EXPECT_GT(ties, 0) << "the test data should contain tied logits";
}

TEST(SegExport, RegionsSigmoidInClassOrder) {
  ModelConfig cfg;
  cfg.spacing = {1.0, 1.0, 1.0};
  cfg.has_regions = true;
  cfg.regions = {{1, 2, 3}, {2, 3}, {3}};
  cfg.regions_class_order = {1, 2, 3};
  CaseGeometry g = geometry({3, 4, 5}, BBox{{0, 1, 1}, {3, 4, 4}});
  const Shape3 cs = g.shape_after_cropping;
  Tensor logits = random_fp16({3, cs[0], cs[1], cs[2]}, 11, 2.0f);
  ExportResult r = export_prediction(logits, cfg, g, true);
  ASSERT_EQ(r.segmentation.shape(), (Shape{3, 4, 5}));
  ASSERT_EQ(r.probabilities.shape(), (Shape{3, 3, 4, 5}));
  const int64_t n = cs[0] * cs[1] * cs[2];
  int zeros = 0;
  for (int64_t a = 0; a < 3; ++a)
    for (int64_t b = 0; b < 4; ++b)
      for (int64_t c = 0; c < 5; ++c) {
        const int64_t idx = (a * 4 + b) * 5 + c;
        const bool inside = b >= 1 && c >= 1 && c < 4;
        int want = 0;
        for (int k = 0; k < 3; ++k) {
          float p = 0;
          if (inside) {
            float x = half_to_float(logits.data<uint16_t>()[k * n + (a * cs[1] + b - 1) * cs[2] + c - 1]);
            zeros += x == 0.0f;
            p = 1.0f / (1.0f + std::exp(-x));
            if (p > 0.5f) want = cfg.regions_class_order[k];
          }
          EXPECT_NEAR(r.probabilities.data<float>()[k * 60 + idx], p, 1e-6f);  // outside: 0 for every region
        }
        EXPECT_EQ(r.segmentation.data<uint8_t>()[idx], want);
      }
  EXPECT_GT(zeros, 0) << "logit 0 (probability exactly 0.5, not > 0.5) should occur";
}

TEST(SegExport, Uint16ForLargeLabelsAndErrors) {
  ModelConfig cfg = softmax_config(2);
  cfg.label_values = {0, 300};
  CaseGeometry g = geometry({2, 2, 2}, BBox{{0, 0, 0}, {2, 2, 2}});
  Tensor logits(DType::Float16, {2, 2, 2, 2});
  for (int i = 0; i < 8; ++i) logits.data<uint16_t>()[8 + i] = float_to_half(i % 2 ? 1.0f : -1.0f);
  ExportResult r = export_prediction(logits, cfg, g, false);
  ASSERT_EQ(r.segmentation.dtype(), DType::UInt16);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(r.segmentation.data<uint16_t>()[i], i % 2 ? 300 : 0);

  cfg = softmax_config(2);
  EXPECT_THROW(export_prediction(Tensor(DType::Float32, {2, 2, 2, 2}), cfg, g, false), Error);
  EXPECT_THROW(export_prediction(Tensor(DType::Float16, {3, 2, 2, 2}), cfg, g, false), Error);
  CaseGeometry bad = g;
  bad.bbox.hi = {3, 2, 2};
  bad.shape_after_cropping = {3, 2, 2};
  EXPECT_THROW(export_prediction(logits, cfg, bad, false), Error);
  bad = g;
  bad.shape_after_cropping = {1, 2, 2};
  EXPECT_THROW(export_prediction(logits, cfg, bad, false), Error);
  cfg.transpose_backward = {0, 0, 1};
  EXPECT_THROW(export_prediction(logits, cfg, g, false), Error);
}

// End to end: nnU-Net's fp16 logits + the case properties -> the segmentation nnU-Net wrote (voxel for voxel) and
// the probabilities it saved (within 2e-3, the project's target; bit-exactness is not expected because softmax's
// exp differs from PyTorch's vectorised one by an ulp and the resampling runs in a different summation order).
namespace {

void export_case(const std::string& id) {
  json props = json::parse(read_file(kCase + "expected/intermediate/" + id + "_properties.json"));
  ModelConfig cfg = softmax_config(3);  // plans.json of the reference model: spacing (3, 1, 1), identity transposes
  cfg.spacing = {3.0, 1.0, 1.0};
  CaseGeometry g;
  for (int d = 0; d < 3; ++d) {
    g.shape_before_cropping[d] = props["shape_before_cropping"][d];
    g.bbox.lo[d] = props["bbox_used_for_cropping"][d][0];
    g.bbox.hi[d] = props["bbox_used_for_cropping"][d][1];
    g.shape_after_cropping[d] = props["shape_after_cropping_and_before_resampling"][d];
    g.original_spacing[d] = props["spacing"][d];
  }
  Tensor logits = npy::load(kCase + "expected/intermediate/" + id + "_logits_fp16.npy");
  ExportResult withp = export_prediction(logits, cfg, g, true);
  ExportResult plain = export_prediction(logits, cfg, g, false);
  NiftiImage want = read_nifti(kCase + "expected/" + id + ".nii.gz");
  ASSERT_EQ(withp.segmentation.shape(), want.data.shape());
  ASSERT_EQ(withp.segmentation.dtype(), DType::UInt8);
  int64_t diff = 0, diff_plain = 0;
  for (int64_t i = 0; i < want.data.numel(); ++i) {
    diff += withp.segmentation.data<uint8_t>()[i] != want.data.data<float>()[i];
    diff_plain += plain.segmentation.data<uint8_t>()[i] != want.data.data<float>()[i];
  }
  Tensor wp = read_npz_member(kCase + "expected/" + id + ".npz", "probabilities");
  ASSERT_EQ(withp.probabilities.shape(), wp.shape());
  double max_abs = 0;
  for (int64_t i = 0; i < wp.numel(); ++i)
    max_abs = std::max(max_abs, (double)std::fabs(withp.probabilities.data<float>()[i] - wp.data<float>()[i]));
  // statistics dumped by python/make_seg_infer_refs.py (a second, independent check of the npz reader)
  json stats = json::parse(read_file(kData + "inf_probs_stats.json"))[id];
  for (int c = 0; c < 3; ++c) {
    double s = 0;
    const float* p = withp.probabilities.data<float>() + c * (wp.numel() / 3);
    for (int64_t i = 0; i < wp.numel() / 3; ++i) s += p[i];
    EXPECT_NEAR(s, stats["sum"][c].get<double>(), 2e-3 * 50) << id << " channel " << c;
  }
  std::printf("[ e2e ] %s export: %lld / %lld segmentation voxels differ (%lld without probabilities), "
              "max |prob diff| %.3g\n", id.c_str(), (long long)diff, (long long)want.data.numel(),
              (long long)diff_plain, max_abs);
  EXPECT_EQ(diff, 0) << id;
  EXPECT_EQ(diff_plain, 0) << id;
  EXPECT_LE(max_abs, 2e-3) << id;
}

}  // namespace

TEST(SegExportE2E, CaseBMatchesNnUNet) {
  if (!fs::exists(kCase + "README.md")) GTEST_SKIP() << kCase << " not present";
  export_case("case_B");
}

TEST(SegExportE2E, CaseCMatchesNnUNet) {
  if (!fs::exists(kCase + "README.md")) GTEST_SKIP() << kCase << " not present";
  export_case("case_C");
}
