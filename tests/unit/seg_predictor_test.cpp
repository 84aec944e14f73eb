// kiln::seg::Predictor (pipeline/seg/predictor.h): every stage against nnU-Net's intermediates and outputs of
// ${KILN_SHARED_DIR}/nnunet-case0 (the network runs once per case), written files (atomic, affine, npz),
// input checks (NaN, spacings, memory estimate), an all-zero volume, Dice, the PNG preview.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/npy.h"
#include "pipeline/seg/nifti.h"
#include "pipeline/seg/predictor.h"
#include "pipeline/seg/preview.h"
#include "test_util.h"

using namespace kiln;
using namespace kiln::seg;
namespace fs = std::filesystem;
using json = nlohmann::json;

using namespace kiln::testing_util;

namespace {

const std::string kCase = std::string(KILN_SHARED_DIR) + "/nnunet-case0/";
const std::string kModel = kCase + "model/Dataset901_SynthEllipsoids/nnUNetTrainer__nnUNetPlans__3d_fullres";

bool have_case() { return fs::exists(kCase + "expected/intermediate/case_B_preprocessed.npy"); }


// Label values of a NIfTI read back (float32) vs a uint8 map: number of differing voxels.
int64_t count_diff(const Tensor& seg_u8, const Tensor& ref_f32) {
  EXPECT_EQ(seg_u8.shape(), ref_f32.shape());
  if (seg_u8.shape() != ref_f32.shape()) return -1;
  int64_t d = 0;
  for (int64_t i = 0; i < ref_f32.numel(); ++i) d += (float)seg_u8.data<uint8_t>()[i] != ref_f32.data<float>()[i];
  return d;
}

Predictor& reference_predictor() {
  static Predictor p = [] {
    PredictorOptions o;
    o.save_probabilities = true;
    o.postprocess = true;
    return Predictor::load(kModel, o);
  }();
  return p;
}

void run_reference_case(const std::string& id, int64_t expect_tiles) {
  Predictor& p = reference_predictor();
  ASSERT_EQ(p.num_folds(), 2);
  std::vector<CaseFiles> cases = find_cases(kCase + "input/" + id + "_0000.nii.gz", ".nii.gz", 2);
  ASSERT_EQ(cases.size(), 1u);
  const CaseFiles& files = cases[0];
  EXPECT_NO_THROW(p.check_memory(files));

  // read
  CaseImage img = read_case(files);
  NiftiImage ch0 = read_nifti(files.channels[0]);
  ASSERT_EQ(img.data.dim(0), 2);
  EXPECT_EQ(img.affine, ch0.affine);
  const NiftiGeometry peek = peek_nifti_geometry(files.channels[0]);
  for (int d = 0; d < 3; ++d) {
    EXPECT_EQ(peek.shape[d], ch0.data.dim(d)) << id;
    EXPECT_EQ(peek.spacing[d], ch0.spacing[d]) << id;
  }

  // preprocess: tensor within 1e-5 (the spec's separable spline vs nnU-Net's joint one, float32 rounding),
  // geometry exactly as nnU-Net's properties.
  PreprocessedCase pre = p.preprocess(img);
  Tensor want_pre = npy::load(kCase + "expected/intermediate/" + id + "_preprocessed.npy");
  ASSERT_EQ(pre.data.shape(), want_pre.shape()) << id;
  double max_pre = 0;
  for (int64_t i = 0; i < want_pre.numel(); ++i)
    max_pre = std::max(max_pre, (double)std::fabs(pre.data.data<float>()[i] - want_pre.data<float>()[i]));
  EXPECT_LE(max_pre, 1e-5) << id;
  const json props = read_json(kCase + "expected/intermediate/" + id + "_properties.json");
  for (int d = 0; d < 3; ++d) {
    EXPECT_EQ(pre.geometry.shape_before_cropping[d], props["shape_before_cropping"][d].get<int64_t>());
    EXPECT_EQ(pre.geometry.bbox.lo[d], props["bbox_used_for_cropping"][d][0].get<int64_t>());
    EXPECT_EQ(pre.geometry.bbox.hi[d], props["bbox_used_for_cropping"][d][1].get<int64_t>());
    EXPECT_EQ(pre.geometry.shape_after_cropping[d], props["shape_after_cropping_and_before_resampling"][d].get<int64_t>());
    EXPECT_EQ(pre.geometry.original_spacing[d], props["spacing"][d].get<double>());
  }

  // network (once): 2 folds x tiles x 8 views; logits within fp16 resolution at |logit| ~ 20 (2^-6 = 0.0156).
  int64_t evals = 0, tiles = 0;
  Tensor logits = p.predict_logits(pre.data, &evals, &tiles);
  EXPECT_EQ(tiles, expect_tiles) << id;
  EXPECT_EQ(evals, 2 * expect_tiles * 8) << id;
  Tensor want_logits = npy::load(kCase + "expected/intermediate/" + id + "_logits_fp16.npy");
  ASSERT_EQ(logits.shape(), want_logits.shape());
  double max_logit = 0;
  int64_t logit_diff = 0;
  for (int64_t i = 0; i < want_logits.numel(); ++i) {
    const uint16_t a = logits.data<uint16_t>()[i], b = want_logits.data<uint16_t>()[i];
    logit_diff += a != b;
    max_logit = std::max(max_logit, (double)std::fabs(half_to_float(a) - half_to_float(b)));
  }
  EXPECT_LE(max_logit, 1e-2) << id;

  // export: segmentation identical, probabilities within 2e-3 (the project's target; softmax/resampling
  // summation order differs from PyTorch's by ulps).
  ExportResult ex = p.export_case(logits, pre.geometry);
  NiftiImage want_seg = read_nifti(kCase + "expected/" + id + ".nii.gz");
  EXPECT_EQ(count_diff(ex.segmentation, want_seg.data), 0) << id;
  Tensor want_prob = read_npz_member(kCase + "expected/" + id + ".npz", "probabilities");
  ASSERT_EQ(ex.probabilities.shape(), want_prob.shape());
  double max_prob = 0;
  for (int64_t i = 0; i < want_prob.numel(); ++i)
    max_prob = std::max(max_prob, (double)std::fabs(ex.probabilities.data<float>()[i] - want_prob.data<float>()[i]));
  EXPECT_LE(max_prob, 2e-3) << id;

  // postprocess: identical to nnUNetv2_apply_postprocessing's output
  Tensor pp = ex.segmentation.clone();
  p.postprocess(pp);
  NiftiImage want_pp = read_nifti(kCase + "expected/postprocessed/" + id + ".nii.gz");
  EXPECT_EQ(count_diff(pp, want_pp.data), 0) << id;

  // write: <case>.nii.gz with the input's affine, <case>.npz readable back bit for bit, no temp files left
  TempDir out;
  CaseResult r;
  r.id = id;
  r.segmentation = pp;
  r.probabilities = ex.probabilities;
  r.affine = img.affine;
  p.write_case(r, out.path.string());
  NiftiImage back = read_nifti((out.path / (id + ".nii.gz")).string());
  EXPECT_EQ(count_diff(pp, back.data), 0);
  EXPECT_EQ(back.affine, ch0.affine) << id << ": output affine must equal the input's";
  EXPECT_EQ(back.stored_datatype, 2) << "uint8 (NIFTI_TYPE_UINT8)";
  Tensor prob_back = read_npz_member((out.path / (id + ".npz")).string(), "probabilities");
  ASSERT_EQ(prob_back.shape(), ex.probabilities.shape());
  EXPECT_EQ(std::memcmp(prob_back.raw(), ex.probabilities.raw(), ex.probabilities.nbytes()), 0);
  int written = 0;
  for (auto& e : fs::directory_iterator(out.path)) {
    ++written;
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  }
  EXPECT_EQ(written, 2);
  std::printf("[ e2e ] %s: preprocessed max |diff| %.3g; %lld tiles/fold, %lld evaluations; %lld of %lld fp16 logits "
              "differ (max %.3g); segmentation identical; max |prob diff| %.3g\n",
              id.c_str(), max_pre, (long long)tiles, (long long)evals, (long long)logit_diff,
              (long long)want_logits.numel(), max_logit, max_prob);
}

// A two-channel case of constant volumes (k, j, i) = shape, written as NIfTI files into `dir`.
CaseFiles write_case_files(const fs::path& dir, const std::string& id, const Shape3& shape, const Spacing& sp,
                           float value0, float value1) {
  std::array<double, 16> aff{};
  aff[0] = sp[2], aff[5] = sp[1], aff[10] = sp[0], aff[15] = 1;
  CaseFiles cf;
  cf.id = id;
  for (int c = 0; c < 2; ++c) {
    Tensor t(DType::Float32, {shape[0], shape[1], shape[2]});
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = c == 0 ? value0 : value1;
    const std::string p = (dir / (id + (c == 0 ? "_0000.nii.gz" : "_0001.nii.gz"))).string();
    write_nifti_float(p, t, aff);
    cf.channels.push_back(p);
  }
  return cf;
}

}  // namespace

TEST(SegPredictorE2E, CaseBMatchesNnUNet) {
  if (!have_case()) GTEST_SKIP() << kCase << " not present";
  run_reference_case("case_B", 8);
}

TEST(SegPredictorE2E, CaseCMatchesNnUNet) {
  if (!have_case()) GTEST_SKIP() << kCase << " not present";
  run_reference_case("case_C", 4);
}

// nnU-Net does not crop an all-zero image (the bbox is the whole image); the pipeline must run through it:
// CT normalisation maps 0 to a constant, masked ZScore leaves the (empty-mask) channel at 0.
TEST(SegPredictor, AllZeroVolumeRuns) {
  if (!have_case()) GTEST_SKIP() << kCase << " not present";
  TempDir tmp;
  CaseFiles cf = write_case_files(tmp.path, "zero", {12, 50, 70}, {3.0, 1.0, 1.0}, 0.f, 0.f);
  PredictorOptions o;
  o.folds = {0};
  o.mirroring = false;
  o.save_probabilities = true;
  Predictor p = Predictor::load(kModel, o);
  CaseImage img = read_case(cf);
  PreprocessedCase pre = p.preprocess(img);
  EXPECT_EQ(pre.geometry.bbox.lo, (Shape3{0, 0, 0}));
  EXPECT_EQ(pre.geometry.bbox.hi, (Shape3{12, 50, 70}));
  for (int64_t i = 0; i < pre.data.numel(); ++i) ASSERT_TRUE(std::isfinite(pre.data.data<float>()[i])) << i;
  CaseResult r = p.predict_case(cf);
  EXPECT_EQ(r.segmentation.shape(), (Shape{12, 50, 70}));
  EXPECT_EQ(r.network_evaluations, 2);  // 1 fold, tiles 1 x 1 x 2 (70 > 64), no mirroring
  ASSERT_EQ(r.probabilities.shape(), (Shape{3, 12, 50, 70}));
  const int64_t vol = 12 * 50 * 70;
  for (int64_t i = 0; i < vol; ++i) {
    double s = 0;
    for (int c = 0; c < 3; ++c) {
      const float v = r.probabilities.data<float>()[c * vol + i];
      ASSERT_TRUE(std::isfinite(v));
      s += v;
    }
    ASSERT_NEAR(s, 1.0, 1e-5) << i;
  }
}

TEST(SegPredictor, BadInputIsRefusedWithClearMessages) {
  if (!have_case()) GTEST_SKIP() << kCase << " not present";
  TempDir tmp;
  PredictorOptions o;
  o.folds = {0};
  Predictor p = Predictor::load(kModel, o);

  // NaN / Inf voxels: the file and the count are named
  {
    CaseFiles cf = write_case_files(tmp.path, "nan", {4, 5, 6}, {3, 1, 1}, 1.f, 2.f);
    NiftiImage im = read_nifti(cf.channels[1]);
    im.data.data<float>()[3] = std::nanf("");
    im.data.data<float>()[7] = std::nanf("");
    im.data.data<float>()[9] = INFINITY;
    write_nifti_float(cf.channels[1], im.data, im.affine);
    try {
      read_case(cf);
      FAIL() << "NaN accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(cf.channels[1]), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("3 non-finite"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("2 NaN, 1 Inf"), std::string::npos) << e.what();
    }
  }
  // different spacings (beyond numpy.allclose) name both files; within rtol 1e-5 they are accepted
  {
    CaseFiles a = write_case_files(tmp.path, "sp", {4, 5, 6}, {3, 1, 1}, 1.f, 2.f);
    CaseFiles b = write_case_files(tmp.path, "sp2", {4, 5, 6}, {3, 1.01, 1}, 1.f, 2.f);
    CaseFiles c = write_case_files(tmp.path, "sp3", {4, 5, 6}, {3, 1.000001, 1}, 1.f, 2.f);
    CaseFiles mixed{"sp", {a.channels[0], b.channels[1]}};
    for (int k = 0; k < 2; ++k) {
      try {
        if (k == 0) read_case(mixed); else p.check_memory(mixed);
        FAIL() << "different spacings accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("different spacings"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(a.channels[0]), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(b.channels[1]), std::string::npos) << e.what();
      }
    }
    CaseFiles close{"sp", {a.channels[0], c.channels[1]}};
    EXPECT_NO_THROW(read_case(close));
  }
  // missing channel file
  {
    CaseFiles cf{"gone", {(tmp.path / "gone_0000.nii.gz").string(), (tmp.path / "gone_0001.nii.gz").string()}};
    try {
      p.check_memory(cf);
      FAIL() << "missing file accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("gone_0000.nii.gz"), std::string::npos) << e.what();
    }
  }
}

// The pre-flight estimate: plausible for case_B (between the bare data and 2 GiB), refused with the estimate in the
// message when it exceeds the limit, and nothing written.
TEST(SegPredictor, MemoryEstimateRefusesBeforeStarting) {
  if (!have_case()) GTEST_SKIP() << kCase << " not present";
  PredictorOptions o;
  o.folds = {0};
  o.memory_limit_bytes = 8u << 20;  // 8 MiB: case_B's two channels alone take 8.1 MiB as float32
  Predictor p = Predictor::load(kModel, o);
  const NiftiGeometry g = peek_nifti_geometry(kCase + "input/case_B_0000.nii.gz");
  const uint64_t est = estimate_peak_bytes(p.config(), 2, g.shape, g.spacing, true);
  const uint64_t raw = 2ull * 4 * g.shape[0] * g.shape[1] * g.shape[2];
  EXPECT_GT(est, raw);
  EXPECT_LT(est, 2ull << 30);
  EXPECT_GT(available_memory_bytes(), 0u);
  TempDir tmp;
  const fs::path out = tmp.path / "out";
  try {
    p.predict_to_files(kCase + "input/case_B_0000.nii.gz", out.string());
    FAIL() << "case_B accepted under an 8 MiB limit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("estimated peak"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("case_B"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out)) << "nothing may be written when the estimate refuses";
}

TEST(SegPredictor, NpzRoundTrip) {
  TempDir tmp;
  Tensor a(DType::Float32, {3, 4, 5, 6});
  for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = (float)i * 0.25f - 7.f;
  Tensor b(DType::UInt8, {7});
  for (int64_t i = 0; i < 7; ++i) b.data<uint8_t>()[i] = (uint8_t)(i * 30);
  const std::string path = (tmp.path / "x.npz").string();
  write_npz(path, {{"probabilities", a}, {"v", b}});
  std::ifstream f(path, std::ios::binary);
  char sig[4];
  f.read(sig, 4);
  EXPECT_EQ(std::string(sig, 4), std::string("PK\x03\x04", 4));
  Tensor a2 = read_npz_member(path, "probabilities"), b2 = read_npz_member(path, "v");
  ASSERT_EQ(a2.shape(), a.shape());
  ASSERT_EQ(b2.shape(), b.shape());
  EXPECT_EQ(std::memcmp(a2.raw(), a.raw(), a.nbytes()), 0);
  EXPECT_EQ(std::memcmp(b2.raw(), b.raw(), b.nbytes()), 0);
  EXPECT_THROW(read_npz_member(path, "nope"), Error);
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()), 1) << "temp file left";
}

TEST(SegPredictor, DicePerLabel) {
  Tensor a(DType::UInt8, {1, 2, 5}), b(DType::Float32, {1, 2, 5});
  const uint8_t av[10] = {0, 1, 1, 1, 2, 2, 0, 0, 0, 0};
  const float bv[10] = {0, 1, 1, 0, 2, 0, 0, 3, 0, 0};
  for (int i = 0; i < 10; ++i) a.data<uint8_t>()[i] = av[i], b.data<float>()[i] = bv[i];
  auto d = dice_per_label(a, b);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_DOUBLE_EQ(d[0].second, 2.0 * 2 / (3 + 2));  // label 1
  EXPECT_DOUBLE_EQ(d[1].second, 2.0 * 1 / (2 + 1));  // label 2
  EXPECT_DOUBLE_EQ(d[2].second, 0.0);                // label 3: only in the ground truth
  EXPECT_THROW(dice_per_label(a, Tensor(DType::UInt8, {2, 5})), Error);
}

TEST(SegPredictor, PreviewPanelsAndColours) {
  // (k, j, i) = (4, 6, 8), isotropic spacing: panels 8x6 (axial), 8x4, 6x4 in voxels, scaled so the longest
  // extent (8 mm) is 384 px -> 48 px per voxel.
  Tensor img(DType::Float32, {4, 6, 8});
  for (int64_t i = 0; i < img.numel(); ++i) img.data<float>()[i] = (float)(i % 8);
  Tensor lab(DType::UInt8, {4, 6, 8});
  lab.data<uint8_t>()[(2 * 6 + 3) * 8 + 0] = 1;  // k = 2 (middle), j = 3 (middle), i = 0
  RgbImage r = render_preview(img, lab, {1, 1, 1});
  EXPECT_EQ(r.width, 8 * 48 + 4 + 8 * 48 + 4 + 6 * 48);
  EXPECT_EQ(r.height, 6 * 48);
  // axial panel pixel of voxel (j=3, i=0) is tinted with label 1's colour; (j=3, i=1) is grey
  const uint8_t* px = r.rgb.data() + (3 * 48 * r.width + 0) * 3;
  EXPECT_FALSE(px[0] == px[1] && px[1] == px[2]);
  const uint8_t* grey = r.rgb.data() + (3 * 48 * r.width + 48) * 3;
  EXPECT_TRUE(grey[0] == grey[1] && grey[1] == grey[2]);
  TempDir tmp;
  const std::string png = (tmp.path / "p.png").string();
  write_preview_png(png, img, lab, {1, 1, 1});
  std::ifstream f(png, std::ios::binary);
  char sig[8];
  f.read(sig, 8);
  EXPECT_EQ(std::string(sig, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_THROW(render_preview(img, Tensor(DType::UInt8, {4, 6, 7}), {1, 1, 1}), Error);
}
