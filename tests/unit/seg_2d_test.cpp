// nnU-Net 2d configurations (segmentation-pipeline.md 1.2, 2.1, 6, 8, 10.1, 12): the per-slice tile layout, the
// mirroring axis mapping, the 2D sliding window against the 3D one run slice by slice, and the Predictor end to end
// on a small 2d model folder against python/make_seg_2d_refs.py's emulation of nnU-Net (tests/data/seg/2d/).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "kiln/session.h"
#include "kiln_proto/onnx.pb.h"
#include "onnx_build.h"
#include "pipeline/seg/nifti.h"
#include "pipeline/seg/predictor.h"
#include "pipeline/seg/sliding_window.h"
#include "test_util.h"

using namespace kiln;
using namespace kiln::seg;
namespace fs = std::filesystem;
using json = nlohmann::json;

using namespace kiln::testing_util;

namespace {

const std::string kDir = std::string(KILN_SOURCE_DIR) + "/tests/data/seg/2d/";
const std::string kModel = kDir + "model";

json cases_json() { return read_json(kDir + "cases.json", " (run python/make_seg_2d_refs.py)"); }

// ---- a flip-sensitive fake network y = x * w + pos: 2D (N, C, p0, p1) or 3D (N, C, 1, p0, p1) flavour
using testing_onnx::add_float_init;
using testing_onnx::set_float_type;
std::unique_ptr<Session> fake_net(int64_t C, const std::vector<float>& w, const Tensor& pos2d, bool as_3d) {
  const int64_t K = (int64_t)w.size();
  const std::string p0 = std::to_string(pos2d.dim(2)), p1 = std::to_string(pos2d.dim(3));
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("fake");
  std::vector<std::string> in{"batch", std::to_string(C)}, out{"batch", std::to_string(K)};
  if (as_3d) in.push_back("1"), out.push_back("1");
  in.push_back(p0), in.push_back(p1), out.push_back(p0), out.push_back(p1);
  set_float_type(g->add_input(), "image", in);
  set_float_type(g->add_output(), "logits", out);
  Tensor wt(DType::Float32, as_3d ? Shape{1, K, 1, 1, 1} : Shape{1, K, 1, 1});
  for (int64_t k = 0; k < K; ++k) wt.data<float>()[k] = w[(size_t)k];
  add_float_init(g, "w", wt);
  add_float_init(g, "pos", as_3d ? pos2d.reshaped({1, K, 1, pos2d.dim(2), pos2d.dim(3)}) : pos2d);
  auto* n1 = g->add_node();
  n1->set_op_type("Mul");
  n1->add_input("image");
  n1->add_input("w");
  n1->add_output("xw");
  auto* n2 = g->add_node();
  n2->set_op_type("Add");
  n2->add_input("xw");
  n2->add_input("pos");
  n2->add_output("logits");
  std::unique_ptr<Session> s;
  Status st = Session::load_from_bytes(m.SerializeAsString(), ".", SessionOptions{}, &s);
  EXPECT_TRUE(st.ok()) << st.message();
  return s;
}

Tensor random_tensor(Shape shape, uint32_t seed, float scale) {
  Tensor t(DType::Float32, shape);
  uint32_t x = seed;
  for (int64_t i = 0; i < t.numel(); ++i) {
    x = x * 1664525u + 1013904223u;
    t.data<float>()[i] = ((float)(x >> 8) / (float)(1u << 24) - 0.5f) * scale;
  }
  return t;
}

// fp16 resolution at |x|: the spacing of halves around x (2^-24 for subnormals).
double half_ulp(double x) {
  x = std::fabs(x);
  if (x < std::ldexp(1.0, -14)) return std::ldexp(1.0, -24);
  return std::ldexp(1.0, (int)std::floor(std::log2(x)) - 10);
}

}  // namespace

// ---------------------------------------------------------------- tile placement (section 8, 2d)
TEST(Seg2D, PlanTilesVisitsEverySliceOnceThenTheInPlaneGrid) {
  const TileLayout L = plan_tiles({3, 25, 29}, {16, 24}, 0.5);
  EXPECT_TRUE(L.per_slice);
  EXPECT_EQ(L.tile, (Shape3{1, 16, 24}));
  EXPECT_EQ(L.padded, (Shape3{3, 25, 29}));
  EXPECT_EQ(L.pad_lo, (Shape3{0, 0, 0}));
  // steps on the trailing axes only: 25/16 -> 0, 4, 9 (4.5 rounds half to even); 29/24 -> 0, 5
  std::vector<Shape3> want;
  for (int64_t s : {0, 1, 2})
    for (int64_t a : {0, 4, 9})
      for (int64_t b : {0, 5}) want.push_back({s, a, b});
  EXPECT_EQ(L.starts, want);
  // a 1-voxel tile through compute_steps would visit some slices twice: the 2d layout must not
  EXPECT_GT(compute_steps(3, 1, 0.5).size(), 3u);
  const TileLayout M = plan_tiles({11, 16, 24}, {16, 24}, 0.5);
  ASSERT_EQ(M.starts.size(), 11u);
  for (int64_t s = 0; s < 11; ++s) EXPECT_EQ(M.starts[(size_t)s], (Shape3{s, 0, 0}));
}

TEST(Seg2D, PlanTilesPadsOnlyTheTwoInPlaneAxes) {
  // 2 slices (fewer than either patch value) stay 2; 13 -> 16 (1 before, 2 after), 20 -> 24 (2 before, 2 after)
  const TileLayout L = plan_tiles({2, 13, 20}, {16, 24}, 0.5);
  EXPECT_EQ(L.padded, (Shape3{2, 16, 24}));
  EXPECT_EQ(L.pad_lo, (Shape3{0, 1, 2}));
  EXPECT_EQ(L.starts, (std::vector<Shape3>{{0, 0, 0}, {1, 0, 0}}));
  // 3d layouts are unchanged: every axis padded and stepped
  const TileLayout T = plan_tiles({2, 13, 20}, {4, 6, 8}, 0.5);
  EXPECT_FALSE(T.per_slice);
  EXPECT_EQ(T.padded, (Shape3{4, 13, 20}));
  EXPECT_EQ(T.pad_lo, (Shape3{1, 0, 0}));
  EXPECT_EQ(T.starts.size(), compute_steps(4, 4, 0.5).size() * compute_steps(13, 6, 0.5).size() *
                                 compute_steps(20, 8, 0.5).size());
  EXPECT_THROW(plan_tiles({2, 13, 20}, {16}, 0.5), Error);
  EXPECT_THROW(plan_tiles({2, 13, 20}, {0, 24}, 0.5), Error);
  EXPECT_THROW(plan_tiles({0, 13, 20}, {16, 24}, 0.5), Error);
}

// ---------------------------------------------------------------- mirroring axes (section 10.1, 2d)
TEST(Seg2D, MirrorAxesOfA2dPatchMapToTheInPlaneVolumeAxes) {
  EXPECT_EQ(volume_mirror_axes({0, 1}, 2), (std::vector<int>{1, 2}));
  EXPECT_EQ(volume_mirror_axes({1}, 2), (std::vector<int>{2}));
  EXPECT_EQ(volume_mirror_axes({1, 0}, 2), (std::vector<int>{2, 1}));
  EXPECT_EQ(volume_mirror_axes({}, 2), (std::vector<int>{}));
  EXPECT_EQ(volume_mirror_axes({0, 1, 2}, 3), (std::vector<int>{0, 1, 2}));
  EXPECT_THROW(volume_mirror_axes({2}, 2), Error);  // a 3d axis on a 2d patch
  EXPECT_THROW(volume_mirror_axes({0, 0}, 2), Error);
  EXPECT_THROW(volume_mirror_axes({-1}, 3), Error);
}

// The 2D sliding window equals the 3D one run on each slice with a (1, p0, p1) tile, a network that sees the same
// pixels, and the mirror axes shifted onto the in-plane axes (1, 2). A wrong axis mapping (e.g. flipping volume
// axes 0 and 1) changes the result because the fake network adds a position-dependent term.
TEST(Seg2D, SlidingWindow2dIsThe3dWindowOnEachSlice) {
  const int64_t C = 3, K = 3, Z = 3;  // x * w broadcasts channel-wise (C == K)
  const std::vector<float> w{0.5f, 2.0f, -1.0f};
  const Tensor pos = random_tensor({1, K, 6, 8}, 7, 12.0f);
  auto net2 = fake_net(C, w, pos, false);
  auto net3 = fake_net(C, w, pos, true);
  const Tensor data = random_tensor({C, Z, 9, 13}, 11, 8.0f);  // steps: 9 / 6 -> 0, 3; 13 / 8 -> 0, 2 (2.5), 5
  for (const std::vector<int>& mirror : {std::vector<int>{0, 1}, std::vector<int>{1}, std::vector<int>{}}) {
    for (int max_batch : {8, 3, 1}) {
      SlidingWindowOptions o2;
      o2.mirror_axes = mirror;
      o2.max_batch = max_batch;
      int calls = 0, last_total = 0;
      o2.progress = [&](int done, int total) {
        ++calls;
        last_total = total;
        EXPECT_EQ(done, calls);
      };
      Tensor got = predict_sliding_window_2d(*net2, data, {6, 8}, o2);
      ASSERT_EQ(got.shape(), (Shape{K, Z, 9, 13}));
      EXPECT_EQ(last_total, (int)(Z * 2 * 3));
      SlidingWindowOptions o3;
      o3.mirror_axes = volume_mirror_axes(mirror, 2);
      o3.max_batch = max_batch;
      const int64_t plane = 9 * 13;
      for (int64_t s = 0; s < Z; ++s) {
        Tensor slice(DType::Float32, {C, 1, 9, 13});
        for (int64_t c = 0; c < C; ++c)
          std::memcpy(slice.data<float>() + c * plane, data.data<float>() + (c * Z + s) * plane, sizeof(float) * plane);
        Tensor want = predict_sliding_window(*net3, slice, {1, 6, 8}, o3);
        int64_t differ = 0;
        for (int64_t k = 0; k < K; ++k)
          differ += std::memcmp(got.data<uint16_t>() + (k * Z + s) * plane, want.data<uint16_t>() + k * plane,
                                sizeof(uint16_t) * plane) != 0;
        EXPECT_EQ(differ, 0) << "slice " << s << " mirror size " << mirror.size() << " max_batch " << max_batch;
      }
      if (mirror.size() == 2 && max_batch == 8) {
        // the unshifted axes (volume axes 0 and 1) give another result: the mapping is observable
        SlidingWindowOptions wrong = o3;
        wrong.mirror_axes = {0, 1};
        Tensor slice0(DType::Float32, {C, 1, 9, 13});
        for (int64_t c = 0; c < C; ++c)
          std::memcpy(slice0.data<float>() + c * plane, data.data<float>() + c * Z * plane, sizeof(float) * plane);
        Tensor bad = predict_sliding_window(*net3, slice0, {1, 6, 8}, wrong);
        int64_t same = 0;
        for (int64_t k = 0; k < K; ++k)
          same += std::memcmp(got.data<uint16_t>() + k * Z * plane, bad.data<uint16_t>() + k * plane,
                              sizeof(uint16_t) * plane) == 0;
        EXPECT_EQ(same, 0);
      }
    }
  }
  // mirroring over a 3d axis, a 5-D network and a 3-D tensor are refused
  SlidingWindowOptions o;
  o.mirror_axes = {2};
  EXPECT_THROW(predict_sliding_window_2d(*net2, data, {6, 8}, o), Error);
  o.mirror_axes = {};
  EXPECT_THROW(predict_sliding_window_2d(*net3, data, {6, 8}, o), Error);
  EXPECT_THROW(predict_sliding_window_2d(*net2, Tensor(DType::Float32, {C, 9, 13}), {6, 8}, o), Error);
  EXPECT_THROW(predict_sliding_window_2d(*net2, data, {0, 8}, o), Error);
}

// ---------------------------------------------------------------- the Predictor on a 2d model folder
TEST(Seg2D, ModelFolderIs2d) {
  ModelConfig m = load_model_folder(kModel, {});
  EXPECT_TRUE(m.is_2d);
  EXPECT_EQ(m.configuration, "2d");
  EXPECT_EQ(m.patch_size, (std::vector<int64_t>{16, 24}));
  EXPECT_EQ(m.spacing, (std::vector<double>{1.0, 1.0}));
  EXPECT_EQ(m.mirror_axes, (std::vector<int>{0, 1}));
  EXPECT_EQ(m.folds, (std::vector<int>{0, 1}));
  EXPECT_EQ(m.image_reader_writer, "SimpleITKIO");
}

namespace {

struct CaseCheck {
  double max_pre = 0;
  int64_t logits = 0, logit_differ = 0, seg_differ = 0;
  double max_logit = 0, logit_tolerance = 0;
};

// One case through every stage against the emulation, then written and read back.
CaseCheck check_case(const std::string& id, bool mirroring) {
  CaseCheck r;
  const json info = cases_json()[id];
  PredictorOptions o;
  o.mirroring = mirroring;
  o.threads = 1;  // tiny tiles: threads only add fork/join overhead on a shared machine
  Predictor p = Predictor::load(kModel, o);
  EXPECT_EQ(p.num_folds(), 2);
  std::vector<CaseFiles> cases = find_cases(kDir + "cases/" + id + "_0000.nii.gz", ".nii.gz", 1);
  EXPECT_EQ(cases.size(), 1u);
  const CaseFiles& files = cases[0];
  EXPECT_NO_THROW(p.check_memory(files));

  CaseImage img = read_case(files, p.config().image_reader_writer);
  for (int d = 0; d < 3; ++d) EXPECT_EQ(img.spacing[d], info["spacing"][d].get<double>()) << id << " axis " << d;
  PreprocessedCase pre = p.preprocess(img);
  for (int d = 0; d < 3; ++d) {
    EXPECT_EQ(pre.geometry.bbox.lo[d], info["bbox"][d][0].get<int64_t>()) << id;
    EXPECT_EQ(pre.geometry.bbox.hi[d], info["bbox"][d][1].get<int64_t>()) << id;
    EXPECT_EQ(pre.geometry.shape_before_cropping[d], info["shape_before_cropping"][d].get<int64_t>()) << id;
    EXPECT_EQ(pre.geometry.shape_after_cropping[d], info["shape_after_cropping"][d].get<int64_t>()) << id;
  }
  Tensor want_pre = npy::load(kDir + id + "_preprocessed.npy");
  EXPECT_EQ(pre.data.shape(), want_pre.shape()) << id;
  if (pre.data.shape() != want_pre.shape()) return r;
  for (int64_t i = 0; i < want_pre.numel(); ++i)
    r.max_pre = std::max(r.max_pre, (double)std::fabs(pre.data.data<float>()[i] - want_pre.data<float>()[i]));

  int64_t evals = 0, tiles = 0;
  Tensor logits = p.predict_logits(pre.data, &evals, &tiles);
  EXPECT_EQ(tiles, info["tiles_per_fold"].get<int64_t>()) << id;
  EXPECT_EQ(evals, 2 * tiles * (mirroring ? 4 : 1)) << id;
  Tensor want_logits = npy::load(kDir + id + "_logits.npy");
  EXPECT_EQ(logits.shape(), want_logits.shape()) << id;
  if (logits.shape() != want_logits.shape()) return r;
  // Tolerance: 1 fp16 ulp at the largest |logit|. kiln's convolutions differ from PyTorch's by ~1e-6 relative,
  // which changes a logit only when some fp16 rounding of the accumulation (at the accumulators' magnitude,
  // up to the Gaussian peak 10 x |logit|, then divided by the weight sum) falls the other way.
  double largest = 0;
  for (int64_t i = 0; i < want_logits.numel(); ++i)
    largest = std::max(largest, (double)std::fabs(half_to_float(want_logits.data<uint16_t>()[i])));
  r.logits = want_logits.numel();
  r.logit_tolerance = half_ulp(largest);
  for (int64_t i = 0; i < want_logits.numel(); ++i) {
    const uint16_t a = logits.data<uint16_t>()[i], b = want_logits.data<uint16_t>()[i];
    if (a == b) continue;
    ++r.logit_differ;
    r.max_logit = std::max(r.max_logit, (double)std::fabs(half_to_float(a) - half_to_float(b)));
  }

  ExportResult ex = p.export_case(logits, pre.geometry);
  Tensor want_seg = npy::load(kDir + id + "_seg.npy");
  EXPECT_EQ(ex.segmentation.dtype(), DType::UInt8);
  EXPECT_EQ(ex.segmentation.shape(), want_seg.shape()) << id;
  if (ex.segmentation.shape() != want_seg.shape()) return r;
  for (int64_t i = 0; i < want_seg.numel(); ++i)
    r.seg_differ += ex.segmentation.data<uint8_t>()[i] != want_seg.data<uint8_t>()[i];
  std::vector<int64_t> counts(3, 0);
  for (int64_t i = 0; i < want_seg.numel(); ++i) ++counts[std::min<uint8_t>(want_seg.data<uint8_t>()[i], 2)];
  for (int l = 0; l < 3; ++l) EXPECT_EQ(counts[(size_t)l], info["label_counts"][l].get<int64_t>()) << id;

  // the whole case through predict_to_files: same segmentation, the input's affine (and 2-D-ness) kept
  TempDir out;
  std::vector<CaseResult> res = p.predict_to_files(files.channels[0], out.path.string());
  EXPECT_EQ(res.size(), 1u);
  const std::string written = (out.path / (id + ".nii.gz")).string();
  EXPECT_TRUE(fs::exists(written)) << written;
  if (!fs::exists(written)) return r;
  NiftiImage back = read_nifti(written, /*allow_2d=*/true);
  NiftiImage in = read_nifti(files.channels[0], /*allow_2d=*/true);
  EXPECT_EQ(back.affine, in.affine) << id;
  EXPECT_EQ(back.spatial_dims, in.spatial_dims) << id;
  EXPECT_EQ(back.data.shape(), want_seg.shape()) << id;
  if (back.data.shape() == want_seg.shape()) {
    int64_t d = 0;
    for (int64_t i = 0; i < want_seg.numel(); ++i) d += back.data.data<float>()[i] != (float)want_seg.data<uint8_t>()[i];
    EXPECT_EQ(d, 0) << id;
  }
  std::printf("[ 2d case %s ] preprocessed max |diff| %.3g; logits: %lld of %lld differ (max %.3g, tolerance %.3g); "
              "segmentation: %lld of %lld voxels differ\n",
              id.c_str(), r.max_pre, (long long)r.logit_differ, (long long)r.logits, r.max_logit, r.logit_tolerance,
              (long long)r.seg_differ, (long long)want_seg.numel());
  return r;
}

void expect_matches(const CaseCheck& r) {
  EXPECT_LE(r.max_pre, 1e-5);             // separable spline vs skimage's joint one, float32 rounding
  EXPECT_LE(r.max_logit, r.logit_tolerance);
  EXPECT_LE(r.logit_differ * 100, r.logits);  // ... and only rarely: < 1 % of the logits (fp16-exact emulation)
  EXPECT_EQ(r.seg_differ, 0);
}

}  // namespace

// 3D image, separate-z (3.0 vs 0.75 mm): in-plane cubic resampling per slice; cropped (a zero slice and border);
// 2 folds x 6 slices x 3 x 2 tiles x 4 mirrored views.
TEST(Seg2D, AnisotropicVolumeMatchesNnUNetEmulation) { expect_matches(check_case("aniso", true)); }

// 3D image without separate z (1.5 / 0.8 < 3): 3D cubic resampling with the slice axis unchanged; axis 1 is
// padded to the patch; mirroring disabled (nnU-Net --disable_tta).
TEST(Seg2D, NoMirroringMatchesNnUNetEmulation) { expect_matches(check_case("iso", false)); }

// A 2-D NIfTI (dim[0] = 2): SimpleITKIO's one slice with slice spacing 999 x 0.8; the output is 2-D as well.
TEST(Seg2D, TwoDimensionalImageFileMatchesNnUNetEmulation) { expect_matches(check_case("flat", true)); }

TEST(Seg2D, NibabelIORefusesTwoDimensionalFiles) {
  CaseFiles f{"flat", {kDir + "cases/flat_0000.nii.gz"}};
  try {
    read_case(f, "NibabelIO");
    ADD_FAILURE() << "a 2-D file was read with NibabelIO";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("flat_0000.nii.gz"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("2-D"), std::string::npos) << e.what();
  }
  CaseImage img = read_case(f, "SimpleITKIO");
  EXPECT_EQ(img.spatial_dims, 2);
  EXPECT_EQ(img.data.shape(), (Shape{1, 1, 20, 33}));
  const NiftiGeometry g = peek_nifti_geometry(f.channels[0]);
  EXPECT_EQ(g.spatial_dims, 2);
  EXPECT_EQ(g.shape, (Shape3{1, 20, 33}));
  for (int d = 0; d < 3; ++d) EXPECT_EQ(g.spacing[d], img.spacing[d]);
}

TEST(Seg2D, A3dNetworkInA2dFolderIsRefused) {
  const fs::path net3d = fs::path(KILN_SOURCE_DIR) /
                         "examples/seg/Dataset999_DemoEllipsoids/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/model.onnx";
  if (!fs::exists(net3d)) GTEST_SKIP() << net3d << " not present";
  TempDir t;
  fs::copy(kModel, t.path / "model", fs::copy_options::recursive);
  fs::copy_file(net3d, t.path / "model/fold_0/model.onnx", fs::copy_options::overwrite_existing);
  try {
    Predictor::load((t.path / "model").string(), PredictorOptions{});
    ADD_FAILURE() << "a 3D network was accepted for a 2d configuration";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidModel);
    EXPECT_NE(std::string(e.what()).find("x, y) (a 2D network"), std::string::npos) << e.what();
  }
}

TEST(Seg2D, CliSegmentsA2dModel) {
  const std::string bin = KILN_BINARY_DIR "/kiln";
  if (!fs::exists(bin)) GTEST_SKIP() << bin << " not built";
  TempDir t;
  const std::string cmd = "'" + bin + "' segment -m '" + kModel + "' -i '" + kDir + "cases/aniso_0000.nii.gz' -o '" +
                          (t.path / "out").string() + "' --threads 1 --preview '" + (t.path / "p.png").string() +
                          "' 2>&1 </dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("(2d)"), std::string::npos) << out;
  EXPECT_NE(out.find("patch (16, 24) per slice"), std::string::npos) << out;
  EXPECT_NE(out.find("288 (36 tiles x 4 views x 2 folds)"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(t.path / "out/aniso.nii.gz"));
  EXPECT_TRUE(fs::exists(t.path / "p.png"));
}
