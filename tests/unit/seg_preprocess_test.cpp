// kiln::seg preprocessing (transpose, crop, normalisation) and resampling against references written by
// python/make_seg_preprocess_refs.py (skimage 0.19 / scipy 1.10 / numpy 1.24, files tests/data/seg/pre_*).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "io/npy.h"
#include "pipeline/seg/preprocess.h"
#include "pipeline/seg/resample.h"

using namespace kiln;
using namespace kiln::seg;

namespace {

const std::string kData = std::string(KILN_SOURCE_DIR) + "/tests/data/seg/";

nlohmann::json cases() {
  std::ifstream f(kData + "pre_cases.json");
  EXPECT_TRUE(f.good()) << "missing " << kData << "pre_cases.json (run python/make_seg_preprocess_refs.py)";
  return nlohmann::json::parse(f);
}

Tensor load(const std::string& name) { return npy::load(kData + name + ".npy"); }

double value(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::Float32: return t.data<float>()[i];
    case DType::Float64: return t.data<double>()[i];
    case DType::Float16: return half_to_float(t.data<uint16_t>()[i]);
    default: ADD_FAILURE() << "unexpected dtype " << dtype_name(t.dtype()); return 0;
  }
}

struct Diff {
  double max_abs = 0, range = 0;
};
// max |a - b| and the value range of b.
Diff compare(const Tensor& a, const Tensor& b) {
  Diff d;
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return d;
  double mn = INFINITY, mx = -INFINITY;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = value(a, i), y = value(b, i);
    d.max_abs = std::max(d.max_abs, std::fabs(x - y));
    mn = std::min(mn, y), mx = std::max(mx, y);
  }
  d.range = mx - mn;
  return d;
}

Spacing sp(const nlohmann::json& j) { return {j[0].get<double>(), j[1].get<double>(), j[2].get<double>()}; }
Shape3 sh(const nlohmann::json& j) { return {j[0].get<int64_t>(), j[1].get<int64_t>(), j[2].get<int64_t>()}; }
Shape3 sh(const Shape& s) { return {s[s.size() - 3], s[s.size() - 2], s[s.size() - 1]}; }

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Resampling. Tolerance 1e-6 x (value range of the reference): both sides compute in double (kiln separably, scipy
// with a joint 3D evaluation; the spec measured 1e-13 between the two formulations); the only real difference is
// kiln's final rounding to float32 (relative 6e-8 of the value, i.e. well under 1e-6 of the range here).

TEST(SegResample, MatchesSkimageResize) {
  auto j = cases();
  for (auto& c : j["resize"]) {
    const std::string name = c["name"];
    Tensor in = load("pre_resize_" + name + "_in"), ref = load("pre_resize_" + name + "_out");
    ResampleOptions opt;
    opt.order = c["order"];
    Tensor out = resample_to_shape(in, sh(ref.shape()), {1, 1, 1}, {1, 1, 1}, opt);
    ASSERT_EQ(out.dtype(), DType::Float32);
    Diff d = compare(out, ref);
    EXPECT_LE(d.max_abs, 1e-6 * d.range) << name << " max abs " << d.max_abs << " range " << d.range;
    if (opt.order == 0) {
      EXPECT_EQ(d.max_abs, 0.0) << name << ": nearest neighbour must pick the same voxels";
    }
    // Sharper: the float32 output should be the rounding of skimage's double result, except where the ~1e-13
    // difference between the formulations straddles a float32 rounding midpoint (then 1 ulp).
    int64_t not_rounded = 0;
    for (int64_t i = 0; i < out.numel(); ++i) {
      const float r32 = static_cast<float>(ref.data<double>()[i]);
      if (out.data<float>()[i] != r32) {
        ++not_rounded;
        EXPECT_LE(std::fabs(out.data<float>()[i] - r32), std::fabs(std::nextafter(r32, INFINITY) - r32) * 1.01)
            << name << " at " << i;
      }
    }
    EXPECT_LE(not_rounded, out.numel() / 100) << name;
    std::printf("[ error  ] resize %-14s max abs %.3g (range %.3g), %lld of %lld not float32(ref)\n", name.c_str(),
                d.max_abs, d.range, (long long)not_rounded, (long long)out.numel());
  }
}

TEST(SegResample, SeparateZAndRulesMatchNnunet) {
  auto j = cases();
  for (auto& c : j["sepz"]) {
    const std::string name = c["name"];
    Tensor in = load("pre_sepz_" + name + "_in"), ref = load("pre_sepz_" + name + "_out");
    const Spacing cur = sp(c["current"]), nw = sp(c["new"]);
    SeparateZ dz = decide_separate_z(cur, nw, std::nullopt);
    EXPECT_EQ(dz.enabled, c["separate_z"].get<bool>()) << name;
    EXPECT_EQ(dz.axis, c["axis"].get<int>()) << name;
    const Shape3 ns = compute_new_shape(spatial_shape(in), cur, nw);
    EXPECT_EQ(ns, sh(c["new_shape"])) << name;
    ResampleOptions opt;
    opt.order = c["order"];
    opt.order_z = c["order_z"];
    Tensor out = resample_to_shape(in, ns, cur, nw, opt);
    ASSERT_EQ(out.dtype(), in.dtype()) << name;
    ASSERT_EQ(out.shape(), ref.shape()) << name;
    if (in.dtype() == DType::Float16) {
      // Both round a double to half; the doubles could differ by ~1e-15 relative, so a value could only land on
      // the other side of a rounding midpoint by accident: never by more than one half ulp.
      int64_t same = 0;
      for (int64_t i = 0; i < out.numel(); ++i) {
        const uint16_t a = out.data<uint16_t>()[i], b = ref.data<uint16_t>()[i];
        same += a == b;
        const double ulp = std::ldexp(1.0, std::max(-24, (int)std::floor(std::log2(std::fabs(value(ref, i)) + 1e-30)) - 10));
        EXPECT_LE(std::fabs(value(out, i) - value(ref, i)), ulp) << name << " at " << i;
      }
      // With FMA contraction disabled in resample.cpp (see there) all of these are identical; keep that exact.
      EXPECT_EQ(same, out.numel()) << name;
      std::printf("[ error  ] nnunet %-14s fp16: %lld of %lld bit-identical\n", name.c_str(), (long long)same,
                  (long long)out.numel());
    } else {
      Diff d = compare(out, ref);
      EXPECT_LE(d.max_abs, 1e-6 * d.range) << name << " max abs " << d.max_abs << " range " << d.range;
      std::printf("[ error  ] nnunet %-14s max abs %.3g (range %.3g)\n", name.c_str(), d.max_abs, d.range);
    }
  }
}

TEST(SegResample, DecideSeparateZEdgeCases) {
  // ratio exactly 3.0 is not anisotropic ('> 3' is strict), on both sides
  EXPECT_FALSE(decide_separate_z({3.0, 1.0, 1.0}, {1, 1, 1}, std::nullopt).enabled);
  EXPECT_FALSE(decide_separate_z({2.0, 0.8999999761581421, 0.8999999761581421}, {3.0, 1.0, 1.0}, std::nullopt).enabled);
  SeparateZ a = decide_separate_z({3.0000001, 1.0, 1.0}, {1, 1, 1}, std::nullopt);
  EXPECT_TRUE(a.enabled);
  EXPECT_EQ(a.axis, 0);
  // source decides first; the target is consulted only if the source is not anisotropic
  SeparateZ b = decide_separate_z({1.0, 1.0, 1.0}, {1.0, 3.5, 1.0}, std::nullopt);
  EXPECT_TRUE(b.enabled);
  EXPECT_EQ(b.axis, 1);
  SeparateZ b2 = decide_separate_z({1.0, 1.0, 4.0}, {5.0, 1.0, 1.0}, std::nullopt);
  EXPECT_EQ(b2.axis, 2);
  // two tied low-resolution axes switch it off
  EXPECT_FALSE(decide_separate_z({3.5, 3.5, 1.0}, {1, 1, 1}, std::nullopt).enabled);
  EXPECT_EQ(decide_separate_z({3.5, 3.5, 1.0}, {1, 1, 1}, std::nullopt).axis, -1);
  // forcing
  EXPECT_FALSE(decide_separate_z({5.0, 1.0, 1.0}, {1, 1, 1}, false).enabled);
  SeparateZ f = decide_separate_z({1.0, 2.0, 1.0}, {1, 1, 1}, true);
  EXPECT_TRUE(f.enabled);
  EXPECT_EQ(f.axis, 1);
  EXPECT_FALSE(decide_separate_z({1.0, 1.0, 1.0}, {1, 1, 1}, true).enabled);  // three tied axes
  EXPECT_THROW(decide_separate_z({0.0, 1.0, 1.0}, {1, 1, 1}, std::nullopt), Error);
}

TEST(SegResample, ComputeNewShape) {
  auto j = cases();
  for (auto& c : j["new_shape"])
    EXPECT_EQ(compute_new_shape(sh(c["shape"]), sp(c["old"]), sp(c["new"])), sh(c["expected"])) << c.dump();
  EXPECT_EQ(compute_new_shape({58, 105, 107}, {2.0, 0.8999999761581421, 0.8999999761581421}, {3.0, 1.0, 1.0}),
            (Shape3{39, 94, 96}));
  EXPECT_EQ(compute_new_shape({5, 7, 9}, {1, 1, 1}, {2, 2, 2}), (Shape3{2, 4, 4}));  // 2.5 -> 2, 3.5 -> 4, 4.5 -> 4
  EXPECT_THROW(compute_new_shape({5, 7, 9}, {1, 0, 1}, {2, 2, 2}), Error);
}

TEST(SegResample, UnchangedShapeReturnsInputAndErrors) {
  Tensor in(DType::Float32, {1, 3, 4, 5});
  Tensor out = resample_to_shape(in, {3, 4, 5}, {1, 1, 1}, {2, 2, 2}, {});
  EXPECT_EQ(out.raw(), in.raw());
  ResampleOptions bad;
  bad.order = 2;
  EXPECT_THROW(resample_to_shape(in, {6, 4, 5}, {1, 1, 1}, {1, 1, 1}, bad), Error);
  bad.order = 3, bad.order_z = 3;
  EXPECT_THROW(resample_to_shape(in, {6, 4, 5}, {1, 1, 1}, {1, 1, 1}, bad), Error);
  EXPECT_THROW(resample_to_shape(Tensor(DType::Int32, {1, 3, 4, 5}), {6, 4, 5}, {1, 1, 1}, {1, 1, 1}, {}), Error);
  EXPECT_THROW(resample_to_shape(Tensor(DType::Float32, {3, 4, 5}), {6, 4, 5}, {1, 1, 1}, {1, 1, 1}, {}), Error);
  EXPECT_THROW(resample_to_shape(in, {0, 4, 5}, {1, 1, 1}, {1, 1, 1}, {}), Error);
}

TEST(SegResample, Float16RoundsToNearestEven) {
  // order 1 along one axis 2 -> 3 samples: (o+0.5)*2/3-0.5 = -1/6, 0.5, 7/6 -> clamped 0, midpoint, 1
  Tensor in(DType::Float16, {1, 2, 1, 1});
  in.data<uint16_t>()[0] = float_to_half(1.0f);
  in.data<uint16_t>()[1] = float_to_half(1.0f + 2 * 0.0009765625f);  // 1 + 2 ulp
  ResampleOptions o;
  o.order = 1;
  Tensor out = resample_to_shape(in, {3, 1, 1}, {1, 1, 1}, {1, 1, 1}, o);
  ASSERT_EQ(out.dtype(), DType::Float16);
  EXPECT_EQ(half_to_float(out.data<uint16_t>()[0]), 1.0f);
  EXPECT_EQ(half_to_float(out.data<uint16_t>()[1]), 1.0f + 0.0009765625f);  // exact 1 + 1 ulp
  in.data<uint16_t>()[1] = float_to_half(1.0f + 0.0009765625f);            // midpoint 1 + ulp/2 ties to even (1.0)
  out = resample_to_shape(in, {3, 1, 1}, {1, 1, 1}, {1, 1, 1}, o);
  EXPECT_EQ(half_to_float(out.data<uint16_t>()[1]), 1.0f);
}

TEST(SegResample, TimingCaseBShape) {
  // Speed check on the reference case's shapes: (2, 58, 105, 107) -> (39, 94, 96), cubic, no separate z.
  Tensor in(DType::Float32, {2, 58, 105, 107});
  std::mt19937 g(1);
  std::normal_distribution<float> nd;
  for (int64_t i = 0; i < in.numel(); ++i) in.data<float>()[i] = nd(g);
  const Spacing cur{2.0, 0.8999999761581421, 0.8999999761581421}, nw{3.0, 1.0, 1.0};
  double best = 1e9;
  for (int r = 0; r < 3; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    Tensor out = resample_to_shape(in, compute_new_shape(spatial_shape(in), cur, nw), cur, nw, {});
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    ASSERT_EQ(out.shape(), (Shape{2, 39, 94, 96}));
  }
  std::printf("[ timing ] resample (2,58,105,107)->(39,94,96) order 3: %.1f ms\n", best * 1e3);
  EXPECT_LT(best, 2.0);  // generous: the pipeline budget is ~10% of a >10 s prediction
}

// ---------------------------------------------------------------------------------------------------------------
// Crop

TEST(SegCrop, MatchesBinaryFillHolesAndBbox) {
  auto j = cases();
  for (auto& c : j["crop"]) {
    const std::string name = c["name"];
    Tensor in = load("pre_crop_" + name + "_in"), filled = load("pre_crop_" + name + "_filled");
    CropResult r = crop_to_nonzero(in);
    for (int d = 0; d < 3; ++d) {
      EXPECT_EQ(r.bbox.lo[d], c["bbox"][d][0].get<int64_t>()) << name << " axis " << d;
      EXPECT_EQ(r.bbox.hi[d], c["bbox"][d][1].get<int64_t>()) << name << " axis " << d;
    }
    const Shape3 s = r.bbox.size();
    ASSERT_EQ(r.mask.shape(), (Shape{s[0], s[1], s[2]}));
    ASSERT_EQ(r.data.shape(), (Shape{in.dim(0), s[0], s[1], s[2]}));
    const int64_t Y = in.dim(2), Z = in.dim(3), vol = in.dim(1) * Y * Z;
    int64_t holes = 0, mism = 0;
    for (int64_t i = 0; i < s[0]; ++i)
      for (int64_t jj = 0; jj < s[1]; ++jj)
        for (int64_t k = 0; k < s[2]; ++k) {
          const int64_t src = ((i + r.bbox.lo[0]) * Y + jj + r.bbox.lo[1]) * Z + k + r.bbox.lo[2];
          const int64_t dst = (i * s[1] + jj) * s[2] + k;
          mism += r.mask.data<uint8_t>()[dst] != filled.data<uint8_t>()[src];
          bool nz = false;
          for (int64_t ch = 0; ch < in.dim(0); ++ch) {
            nz |= in.data<float>()[ch * vol + src] != 0.0f;
            ASSERT_EQ(r.data.data<float>()[ch * s[0] * s[1] * s[2] + dst], in.data<float>()[ch * vol + src]);
          }
          holes += (!nz && filled.data<uint8_t>()[src]);
        }
    EXPECT_EQ(mism, 0) << name;
    EXPECT_GT(holes, 0) << name << ": the reference should contain filled holes";
    int64_t total_filled = 0;  // nothing of the filled mask lies outside the bbox
    for (int64_t i = 0; i < filled.numel(); ++i) total_filled += filled.data<uint8_t>()[i];
    int64_t inside = 0;
    for (int64_t i = 0; i < r.mask.numel(); ++i) inside += r.mask.data<uint8_t>()[i];
    EXPECT_EQ(inside, total_filled) << name;
  }
}

TEST(SegCrop, HandMadeHoleAndEmptyImage) {
  // 5x5x5 cube shell in a 7x7x7 image: the centre 3x3x3 is a hole (filled); a 1-voxel tunnel to the border
  // along z makes a second cavity not a hole.
  Tensor in(DType::Float32, {1, 7, 7, 7});
  float* x = in.data<float>();
  auto at = [&](int i, int j, int k) -> float& { return x[(i * 7 + j) * 7 + k]; };
  for (int i = 1; i < 6; ++i)
    for (int j = 1; j < 6; ++j)
      for (int k = 1; k < 6; ++k)
        if (i == 1 || i == 5 || j == 1 || j == 5 || k == 1 || k == 5) at(i, j, k) = 1.0f;
  CropResult r = crop_to_nonzero(in);
  EXPECT_EQ(r.bbox.lo, (Shape3{1, 1, 1}));
  EXPECT_EQ(r.bbox.hi, (Shape3{6, 6, 6}));
  for (int64_t i = 0; i < r.mask.numel(); ++i) EXPECT_EQ(r.mask.data<uint8_t>()[i], 1) << i;
  at(3, 3, 5) = 0.0f;  // open the cavity towards +z: the inside is now connected to the background
  r = crop_to_nonzero(in);
  EXPECT_EQ(r.mask.data<uint8_t>()[(2 * 5 + 2) * 5 + 2], 0);  // centre (3,3,3) is background
  EXPECT_EQ(r.mask.data<uint8_t>()[(2 * 5 + 2) * 5 + 4], 0);  // the opening itself
  EXPECT_EQ(r.mask.data<uint8_t>()[0], 1);

  Tensor empty(DType::Float32, {2, 4, 5, 6});
  r = crop_to_nonzero(empty);
  EXPECT_EQ(r.bbox.lo, (Shape3{0, 0, 0}));
  EXPECT_EQ(r.bbox.hi, (Shape3{4, 5, 6}));
  EXPECT_EQ(r.data.shape(), (Shape{2, 4, 5, 6}));
  for (int64_t i = 0; i < r.mask.numel(); ++i) EXPECT_EQ(r.mask.data<uint8_t>()[i], 0);
  EXPECT_THROW(crop_to_nonzero(Tensor(DType::Float32, {4, 5, 6})), Error);
}

TEST(SegCrop, LargeVolumeWithoutHoles) {
  // 160^3 with a big hollow ball: the flood fill must stay iterative (no recursion depth problems).
  const int64_t n = 160;
  Tensor in(DType::Float32, {1, n, n, n});
  float* x = in.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < n; ++k) {
        const double r2 = (i - 80.0) * (i - 80.0) + (j - 80.0) * (j - 80.0) + (k - 80.0) * (k - 80.0);
        if (r2 >= 60.0 * 60.0 && r2 < 70.0 * 70.0) x[(i * n + j) * n + k] = 1.0f;
      }
  CropResult r = crop_to_nonzero(in);
  EXPECT_EQ(r.bbox.lo, (Shape3{11, 11, 11}));
  EXPECT_EQ(r.bbox.hi, (Shape3{150, 150, 150}));
  const Shape3 s = r.bbox.size();
  EXPECT_EQ(r.mask.data<uint8_t>()[((80 - 11) * s[1] + 80 - 11) * s[2] + 80 - 11], 1);  // centre filled
  EXPECT_EQ(r.mask.data<uint8_t>()[0], 0);                                               // corner outside
}

// ---------------------------------------------------------------------------------------------------------------
// Normalisation: bit-identical to numpy (float32 arithmetic, numpy's chunked pairwise sums for mean/std).

TEST(SegNormalize, MatchesNumpyBitForBit) {
  auto j = cases();
  auto& nj = j["norm"];
  IntensityProperties p;
  p.mean = nj["props"]["mean"], p.std = nj["props"]["std"];
  p.percentile_00_5 = nj["props"]["percentile_00_5"], p.percentile_99_5 = nj["props"]["percentile_99_5"];
  const Tensor in = load("pre_norm_in"), mask = load("pre_norm_mask");
  ASSERT_EQ(mask.dtype(), DType::UInt8);
  struct Case {
    const char* scheme;
    bool use_mask;
    const char* ref;
  } cs[] = {{"CTNormalization", false, "pre_norm_ct_out"},
            {"CTNormalization", true, "pre_norm_ct_out"},  // CT never uses the mask
            {"ZScoreNormalization", false, "pre_norm_zscore_out"},
            {"ZScoreNormalization", true, "pre_norm_zscore_masked_out"},
            {"RescaleTo01Normalization", false, "pre_norm_rescale01_out"},
            {"NoNormalization", false, "pre_norm_in"}};
  for (auto& c : cs) {
    Tensor x = in.clone();
    normalize_channel(x.data<float>(), x.numel(), c.scheme, c.use_mask, mask.data<uint8_t>(), p);
    Tensor ref = load(c.ref);
    ASSERT_EQ(ref.numel(), x.numel());
    int64_t diff = 0;
    double max_abs = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      diff += std::memcmp(&x.data<float>()[i], &ref.data<float>()[i], 4) != 0;
      max_abs = std::max(max_abs, (double)std::fabs(x.data<float>()[i] - ref.data<float>()[i]));
    }
    EXPECT_EQ(diff, 0) << c.scheme << " mask " << c.use_mask << ": " << diff << " values differ, max abs " << max_abs;
  }
}

TEST(SegNormalize, RGBAndErrors) {
  std::vector<float> v{0.0f, 127.5f, 255.0f};
  normalize_channel(v.data(), 3, "RGBTo01Normalization", false, nullptr, {});
  EXPECT_EQ(v[0], 0.0f);
  EXPECT_EQ(v[1], 127.5f / 255.0f);
  EXPECT_EQ(v[2], 1.0f);
  std::vector<float> bad{-1.0f, 3.0f};
  EXPECT_THROW(normalize_channel(bad.data(), 2, "RGBTo01Normalization", false, nullptr, {}), Error);
  try {
    normalize_channel(bad.data(), 2, "FancyNormalization", false, nullptr, {});
    FAIL() << "unknown scheme accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unsupported);
    EXPECT_NE(std::string(e.what()).find("FancyNormalization"), std::string::npos) << e.what();
  }
  EXPECT_THROW(normalize_channel(bad.data(), 2, "ZScoreNormalization", true, nullptr, {}), Error);
  // constant channel: std 0 -> divided by 1e-8 after subtracting the mean (all zeros)
  std::vector<float> cst(1000, 5.0f);
  normalize_channel(cst.data(), 1000, "ZScoreNormalization", false, nullptr, {});
  for (float f : cst) EXPECT_EQ(f, 0.0f);
}

// ---------------------------------------------------------------------------------------------------------------
// Transpose

TEST(SegTranspose, PermutesAxesAndSpacing) {
  Tensor in(DType::Float32, {2, 2, 3, 4});
  for (int64_t i = 0; i < in.numel(); ++i) in.data<float>()[i] = (float)i;
  const std::array<int, 3> perm{2, 0, 1};
  Tensor out = transpose_volume(in, perm);
  ASSERT_EQ(out.shape(), (Shape{2, 4, 2, 3}));
  for (int c = 0; c < 2; ++c)
    for (int a = 0; a < 4; ++a)
      for (int b = 0; b < 2; ++b)
        for (int d = 0; d < 3; ++d)  // out[c, a, b, d] = in[c, b, d, a]
          EXPECT_EQ(out.data<float>()[((c * 4 + a) * 2 + b) * 3 + d], in.data<float>()[((c * 2 + b) * 3 + d) * 4 + a]);
  // transpose_backward undoes it
  const std::array<int, 3> back{1, 2, 0};
  Tensor rt = transpose_volume(out, back);
  ASSERT_EQ(rt.shape(), in.shape());
  EXPECT_EQ(std::memcmp(rt.raw(), in.raw(), in.nbytes()), 0);
  EXPECT_EQ(transpose_spacing({1.0, 2.0, 3.0}, perm), (Spacing{3.0, 1.0, 2.0}));
  EXPECT_EQ(transpose_spacing(transpose_spacing({1.0, 2.0, 3.0}, perm), back), (Spacing{1.0, 2.0, 3.0}));
  Tensor h(DType::Float16, {1, 2, 1, 3});
  EXPECT_EQ(transpose_volume(h, perm).shape(), (Shape{1, 3, 2, 1}));
  EXPECT_THROW(transpose_volume(in, {0, 0, 1}), Error);
  EXPECT_THROW(transpose_volume(Tensor(DType::Float32, {2, 3}), perm), Error);
}
