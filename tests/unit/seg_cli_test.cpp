// `kiln segment` as a user sees it: the built binary run as a subprocess on bad input (each a clear message,
// a non-zero exit below 128, no output file left behind) and once successfully on nnunet-case0's case_C with
// --preview, --save-probabilities and --dice.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "pipeline/seg/nifti.h"
#include "pipeline/seg/predictor.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::seg;

namespace {

const std::string kBinary = KILN_BINARY_DIR "/kiln";
const std::string kCase = std::string(KILN_SHARED_DIR) + "/nnunet-case0/";
const std::string kModel = kCase + "model/Dataset901_SynthEllipsoids/nnUNetTrainer__nnUNetPlans__3d_fullres";

struct Result {
  int code = -1;
  bool signaled = false;
  std::string out;
};

std::string quote(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

Result run(const std::vector<std::string>& args) {
  std::string cmd = quote(kBinary) + " segment";
  for (auto& a : args) cmd += " " + quote(a);
  cmd += " 2>&1 </dev/null";
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.signaled = WIFSIGNALED(status);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class SegCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kCase + "README.md")) GTEST_SKIP() << kCase << " not present";
    ASSERT_TRUE(fs::exists(kBinary)) << kBinary << " is missing: build the kiln_cli target first";
    tmp_ = fs::temp_directory_path() / ("kiln_seg_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_ / "in");
    out_ = tmp_ / "out";
  }
  void TearDown() override {
    std::error_code ec;
    if (!tmp_.empty()) fs::remove_all(tmp_, ec);
  }

  // A failing run: exit code 1 or 2 (no signal), every `needles` in the message, and no file under out_.
  void expect_refused(const std::vector<std::string>& args, const std::vector<std::string>& needles) {
    Result r = run(args);
    EXPECT_FALSE(r.signaled) << r.out;
    EXPECT_TRUE(r.code == 1 || r.code == 2) << "exit " << r.code << "\n" << r.out;
    EXPECT_NE(r.out.find("kiln segment: error:"), std::string::npos) << r.out;
    for (const auto& n : needles) EXPECT_NE(r.out.find(n), std::string::npos) << "missing '" << n << "' in:\n" << r.out;
    if (fs::exists(out_)) {
      for (auto& e : fs::recursive_directory_iterator(out_)) ADD_FAILURE() << "left behind: " << e.path();
    }
  }

  // Copies case_C's channels into in/ (optionally only some of them).
  void copy_case_c(bool ch0 = true, bool ch1 = true) {
    if (ch0) fs::copy_file(kCase + "input/case_C_0000.nii.gz", tmp_ / "in" / "case_C_0000.nii.gz");
    if (ch1) fs::copy_file(kCase + "input/case_C_0001.nii.gz", tmp_ / "in" / "case_C_0001.nii.gz");
  }

  std::vector<std::string> base() { return {"-m", kModel, "-i", (tmp_ / "in").string(), "-o", out_.string()}; }

  fs::path tmp_, out_;
};

void write_volume(const fs::path& p, const Shape3& shape, float v, float bad_value = 0, int64_t n_bad = 0) {
  Tensor t(DType::Float32, {shape[0], shape[1], shape[2]});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = v;
  for (int64_t i = 0; i < n_bad; ++i) t.data<float>()[i * 3] = bad_value;
  const std::array<double, 16> aff{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 3, 0, 0, 0, 0, 1};  // spacing (k, j, i) = (3, 1, 1)
  write_nifti_float(p.string(), t, aff);
}

}  // namespace

TEST_F(SegCli, MissingChannelFile) {
  copy_case_c(true, false);
  expect_refused(base(), {"case_C", "missing channel file", "case_C_0001.nii.gz"});
}

TEST_F(SegCli, ChannelsWithDifferentShapes) {
  write_volume(tmp_ / "in" / "x_0000.nii.gz", {8, 20, 24}, 1.f);
  write_volume(tmp_ / "in" / "x_0001.nii.gz", {8, 20, 25}, 1.f);
  expect_refused(base(), {"different shapes", "x_0000.nii.gz", "x_0001.nii.gz", "(8, 20, 24)", "(8, 20, 25)"});
}

TEST_F(SegCli, NaNVoxels) {
  write_volume(tmp_ / "in" / "n_0000.nii.gz", {8, 20, 24}, 1.f);
  write_volume(tmp_ / "in" / "n_0001.nii.gz", {8, 20, 24}, 1.f, std::nanf(""), 5);
  expect_refused(base(), {"n_0001.nii.gz", "5 non-finite", "5 NaN"});
}

TEST_F(SegCli, ModelFolderWithoutOnnx) {
  copy_case_c();
  const fs::path m = tmp_ / "model";
  fs::create_directories(m / "fold_0");
  for (const char* f : {"plans.json", "dataset.json"}) fs::copy_file(fs::path(kModel) / f, m / f);
  fs::copy_file(fs::path(kModel) / "fold_0" / "checkpoint_final.pth", m / "fold_0" / "checkpoint_final.pth");
  std::vector<std::string> a = base();
  a[1] = m.string();
  expect_refused(a, {"fold 0", "model.onnx"});
}

TEST_F(SegCli, FoldThatDoesNotExist) {
  copy_case_c();
  std::vector<std::string> a = base();
  a.insert(a.end(), {"-f", "0", "7"});
  expect_refused(a, {"fold 7", "not found"});
}

TEST_F(SegCli, VolumeTooLargeForTheMemoryLimit) {
  copy_case_c();
  std::vector<std::string> a = base();
  a.insert(a.end(), {"--memory-limit", "1"});
  expect_refused(a, {"case_C", "estimated peak", "1.0 MiB"});
}

TEST_F(SegCli, PostprocessWithoutPostprocessingFile) {
  copy_case_c();
  const fs::path m = tmp_ / "model";
  fs::create_directories(m / "fold_0");
  for (const char* f : {"plans.json", "dataset.json"}) fs::copy_file(fs::path(kModel) / f, m / f);
  for (const char* f : {"checkpoint_final.pth", "model.onnx"})
    fs::copy_file(fs::path(kModel) / "fold_0" / f, m / "fold_0" / f);
  std::vector<std::string> a = base();
  a[1] = m.string();
  a.push_back("--postprocess");
  expect_refused(a, {"postprocessing", "crossval_results"});
}

// The full pipeline through the binary: output identical to nnU-Net's, probabilities within 2e-3, the input's
// affine, a PNG preview, Dice printed, a summary with the stages, no progress bar when stderr is not a terminal.
TEST_F(SegCli, CaseCWithPreview) {
  copy_case_c();
  const fs::path png = tmp_ / "preview.png";
  std::vector<std::string> a = base();
  a.insert(a.end(), {"--preview", png.string(), "--save-probabilities", "--dice", kCase + "ground_truth"});
  Result r = run(a);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* s : {"read", "preprocess", "network", "export", "write", "total", "64 (4 tiles x 8 views x 2 folds)",
                        "peak RSS", "dice case_C: label 1"})
    EXPECT_NE(r.out.find(s), std::string::npos) << "missing '" << s << "' in:\n" << r.out;
  EXPECT_EQ(r.out.find("tiles \r"), std::string::npos) << "progress bar printed to a pipe";
  EXPECT_EQ(r.out.find('\r'), std::string::npos) << "progress bar printed to a pipe:\n" << r.out;

  std::ifstream f(png, std::ios::binary);
  ASSERT_TRUE(f.good()) << png;
  char sig[8] = {};
  f.read(sig, 8);
  EXPECT_EQ(std::string(sig, 8), std::string("\x89PNG\r\n\x1a\n", 8));

  NiftiImage seg = read_nifti((out_ / "case_C.nii.gz").string());
  NiftiImage want = read_nifti(kCase + "expected/case_C.nii.gz");
  NiftiImage in = read_nifti(kCase + "input/case_C_0000.nii.gz");
  ASSERT_EQ(seg.data.shape(), want.data.shape());
  int64_t diff = 0;
  for (int64_t i = 0; i < want.data.numel(); ++i) diff += seg.data.data<float>()[i] != want.data.data<float>()[i];
  EXPECT_EQ(diff, 0);
  EXPECT_EQ(seg.affine, in.affine);
  Tensor p = read_npz_member((out_ / "case_C.npz").string(), "probabilities");
  Tensor wp = read_npz_member(kCase + "expected/case_C.npz", "probabilities");
  ASSERT_EQ(p.shape(), wp.shape());
  double max_abs = 0;
  for (int64_t i = 0; i < wp.numel(); ++i)
    max_abs = std::max(max_abs, (double)std::fabs(p.data<float>()[i] - wp.data<float>()[i]));
  EXPECT_LE(max_abs, 2e-3);
  int files = 0;
  for (auto& e : fs::directory_iterator(out_)) ++files, (void)e;
  EXPECT_EQ(files, 2) << "case_C.nii.gz and case_C.npz only";
}

// The README's main job: the committed one-channel demo model (trained by python/train_seg_demo.py) on its
// held-out case. That model's own PyTorch sliding window scores Dice 0.998 / 0.991 on this case; a pipeline
// fault (axis order, resampling, normalisation, mirroring) drops it far below the 0.97 asked for here.
TEST(SegCliDemo, ReadmeMainJobOneChannelModel) {
  const fs::path repo = KILN_SOURCE_DIR;
  const fs::path out = fs::temp_directory_path() / ("kiln_seg_demo_" + std::to_string(::getpid()));
  fs::remove_all(out);
  Result r = run({"-m", (repo / "examples/seg/Dataset999_DemoEllipsoids/nnUNetTrainer__nnUNetPlans__3d_fullres").string(),
                  "-i", (repo / "examples/seg/case").string(), "-o", out.string(), "--dice",
                  (repo / "examples/seg/ground_truth").string(), "--preview", (out / "preview.png").string()});
  ASSERT_EQ(r.code, 0) << r.out;
  const auto at = r.out.find("dice demo_001:");
  ASSERT_NE(at, std::string::npos) << r.out;
  std::istringstream line(r.out.substr(at + 14));
  std::string word;
  int label = 0;
  double dice = 0;
  int seen = 0;
  while (seen < 2 && line >> word >> label >> dice) {
    EXPECT_EQ(word, "label");
    EXPECT_GE(dice, 0.97) << "label " << label << "\n" << r.out;
    ++seen;
  }
  EXPECT_EQ(seen, 2) << r.out;
  NiftiImage seg = read_nifti((out / "demo_001.nii.gz").string());
  NiftiImage in = read_nifti((repo / "examples/seg/case/demo_001_0000.nii.gz").string());
  EXPECT_EQ(seg.data.shape(), in.data.shape());
  EXPECT_EQ(seg.affine, in.affine);
  EXPECT_TRUE(fs::exists(out / "preview.png"));
  fs::remove_all(out);
}
