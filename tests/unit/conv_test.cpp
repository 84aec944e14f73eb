// Conv / ConvTranspose: oneDNN float32 path vs the reference kernel over a matrix of configurations, the weight
// cache, shape inference (incl. symbolic dims), the fallback dtypes and the error messages.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>

#include "backends/cpu/conv_dnnl.h"
#include "backends/cpu/conv_ref.h"
#include "backends/cpu/data_util.h"
#include "ops/conv_common.h"

using namespace kiln;

namespace {

Attribute ints(std::vector<int64_t> v) { Attribute a; a.kind = Attribute::Ints; a.ints = std::move(v); return a; }
Attribute int1(int64_t v) { Attribute a; a.kind = Attribute::Int; a.i = v; return a; }
Attribute str(std::string v) { Attribute a; a.kind = Attribute::String; a.s = std::move(v); return a; }

Node make_node(const std::string& op, std::map<std::string, Attribute> attrs, bool bias = false, const std::string& name = "c") {
  Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = {"X", "W"};
  if (bias) n.inputs.push_back("B");
  n.outputs = {"Y"};
  n.attrs = std::move(attrs);
  return n;
}

Tensor random_tensor(const Shape& s, std::mt19937& rng) {
  Tensor t(DType::Float32, s);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

Tensor abs_of(const Tensor& t) {
  Tensor r = t.clone();
  for (int64_t i = 0; i < r.numel(); ++i) r.data<float>()[i] = std::fabs(r.data<float>()[i]);
  return r;
}

struct Case {
  std::string name;
  bool transpose;
  Shape x, w;
  std::map<std::string, Attribute> attrs;
  bool bias;
};

std::vector<Case> cases() {
  return {
      {"conv1d_stride_asym_pads", false, {2, 4, 17}, {6, 4, 3}, {{"strides", ints({2})}, {"pads", ints({1, 2})}}, true},
      {"conv1d_dilation_same_upper", false, {1, 5, 20}, {3, 5, 4}, {{"dilations", ints({2})}, {"auto_pad", str("SAME_UPPER")}}, false},
      {"conv2d_basic", false, {1, 3, 10, 12}, {8, 3, 3, 3}, {{"pads", ints({1, 1, 1, 1})}}, true},
      {"conv2d_group2_asym", false, {2, 8, 9, 9}, {6, 4, 3, 3},
       {{"group", int1(2)}, {"strides", ints({2, 1})}, {"dilations", ints({1, 2})}, {"pads", ints({0, 1, 2, 0})}}, true},
      {"conv2d_depthwise", false, {1, 16, 14, 14}, {16, 1, 3, 3}, {{"group", int1(16)}, {"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}}, true},
      {"conv2d_depthwise_mult2_same_lower", false, {1, 16, 13, 11}, {32, 1, 5, 5},
       {{"group", int1(16)}, {"strides", ints({2, 2})}, {"auto_pad", str("SAME_LOWER")}}, false},
      {"conv2d_valid_stride3", false, {1, 4, 17, 9}, {5, 4, 4, 2}, {{"strides", ints({3, 3})}, {"auto_pad", str("VALID")}}, true},
      {"conv2d_1x1", false, {1, 32, 7, 7}, {24, 32, 1, 1}, {}, false},
      {"conv2d_32ch", false, {1, 32, 12, 12}, {32, 32, 3, 3}, {{"pads", ints({1, 1, 1, 1})}, {"kernel_shape", ints({3, 3})}}, true},
      {"conv2d_group4_wide", false, {1, 64, 10, 10}, {64, 16, 3, 3}, {{"group", int1(4)}, {"pads", ints({1, 0, 1, 2})}}, true},
      {"conv3d_asym", false, {1, 4, 6, 7, 8}, {5, 4, 3, 3, 3}, {{"strides", ints({1, 2, 1})}, {"pads", ints({1, 0, 1, 0, 1, 2})}}, true},
      {"conv3d_group2_dil_same_upper", false, {2, 6, 7, 6, 5}, {4, 3, 2, 3, 2},
       {{"group", int1(2)}, {"dilations", ints({2, 1, 2})}, {"strides", ints({2, 2, 1})}, {"auto_pad", str("SAME_UPPER")}}, false},
      {"conv3d_16ch", false, {1, 16, 8, 8, 8}, {16, 16, 3, 3, 3}, {{"pads", ints({1, 1, 1, 1, 1, 1})}}, true},
      {"convT1d_stride", true, {1, 3, 7}, {3, 4, 3}, {{"strides", ints({2})}}, true},
      {"convT2d_outpad_asym", true, {2, 4, 5, 6}, {4, 3, 3, 3},
       {{"strides", ints({2, 3})}, {"output_padding", ints({1, 2})}, {"pads", ints({1, 0, 0, 1})}}, true},
      {"convT2d_group2_dil", true, {1, 6, 5, 5}, {6, 2, 3, 3}, {{"group", int1(2)}, {"dilations", ints({2, 2})}}, false},
      {"convT2d_depthwise", true, {1, 8, 6, 6}, {8, 1, 4, 4}, {{"group", int1(8)}, {"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}}, true},
      {"convT2d_same_upper", true, {1, 3, 5, 4}, {3, 2, 3, 3}, {{"strides", ints({2, 2})}, {"auto_pad", str("SAME_UPPER")}}, true},
      {"convT2d_same_lower", true, {1, 3, 5, 4}, {3, 2, 4, 4}, {{"strides", ints({3, 2})}, {"auto_pad", str("SAME_LOWER")}}, false},
      {"convT2d_output_shape", true, {1, 2, 5, 6}, {2, 3, 3, 3}, {{"strides", ints({2, 2})}, {"output_shape", ints({11, 13})}}, true},
      {"convT2d_valid", true, {1, 2, 4, 4}, {2, 3, 2, 3}, {{"strides", ints({2, 1})}, {"auto_pad", str("VALID")}}, true},
      {"convT2d_32ch", true, {1, 32, 8, 8}, {32, 32, 2, 2}, {{"strides", ints({2, 2})}}, true},
      {"convT3d_outpad", true, {1, 4, 3, 4, 5}, {4, 2, 3, 3, 3}, {{"strides", ints({2, 2, 2})}, {"output_padding", ints({1, 0, 1})}}, true},
      {"convT3d_group2_16ch", true, {1, 16, 4, 4, 4}, {16, 8, 2, 2, 2}, {{"group", int1(2)}, {"strides", ints({2, 2, 2})}}, false},
  };
}

// Compares y (oneDNN, float32) with the reference, element by element.
// The reference accumulates in double, so it is exact to ~1e-16 relative; the error is oneDNN's float32 summation
// of K = (C/G)*prod(k) products (+ bias). Probabilistic rounding analysis (Higham & Mary 2019) bounds it by
// lambda * sqrt(K+1) * u * S with S = sum of |terms| for that output and u = 2^-24, failing with probability
// <= 2*exp(-lambda^2/2) per element; lambda = 6 gives ~3e-8 per element. S is computed exactly by running the
// reference on |x|, |w|, |b|. A wrong tap, pad or channel mapping produces errors of the size of single terms
// (~0.1-1 here), far above this bound (see NegativeControl).
double check_close(const cpu::ConvParams& p, const Tensor& y, const Tensor& ref, const Tensor& absref, const std::string& what) {
  const double u = std::ldexp(1.0, -24), lambda = 6.0;
  const double K = (double)p.reduction() + 1;
  double worst_ratio = 0;
  int64_t bad = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    const double err = std::fabs((double)y.data<float>()[i] - (double)ref.data<float>()[i]);
    const double tol = lambda * std::sqrt(K) * u * (double)absref.data<float>()[i] + 1e-30;
    worst_ratio = std::max(worst_ratio, err / tol);
    if (!(err <= tol) && bad++ < 3)
      ADD_FAILURE() << what << ": element " << i << " got " << y.data<float>()[i] << " want " << ref.data<float>()[i]
                    << " (err " << err << ", tol " << tol << ")";
  }
  EXPECT_EQ(bad, 0) << what;
  return worst_ratio;
}

// Y's shape for p: [N, M, out...] over the problem's own spatial axes.
Shape out_shape(const cpu::ConvParams& p) {
  Shape ys{p.N, p.M};
  for (int i = 3 - p.nsp; i < 3; ++i) ys.push_back(p.out[i]);
  return ys;
}

// The reference result, and the same computed on |x|, |w|, |b| (the scale check_close bounds the error by).
struct Reference {
  Tensor ref, absref;
};
Reference reference(const cpu::ConvParams& p, const Tensor& x, const Tensor& w, const Tensor* b) {
  Reference r{Tensor(DType::Float32, out_shape(p)), Tensor(DType::Float32, out_shape(p))};
  cpu::conv_reference(p, x, w, b, r.ref);
  Tensor ax = abs_of(x), aw = abs_of(w), ab = b ? abs_of(*b) : Tensor();
  cpu::conv_reference(p, ax, aw, b ? &ab : nullptr, r.absref);
  return r;
}

}  // namespace

TEST(Conv, OneDnnMatchesReferenceOnConfigurationMatrix) {
  std::mt19937 rng(1234);
  for (const Case& c : cases()) {
    Node n = make_node(c.transpose ? "ConvTranspose" : "Conv", c.attrs, c.bias, c.name);
    ConvAttrs a(n, c.transpose);
    cpu::ConvParams p = conv_params(n, a, c.x, c.w);
    Tensor x = random_tensor(c.x, rng), w = random_tensor(c.w, rng), b = random_tensor({p.M}, rng);
    const Shape ys = out_shape(p);
    // Shape inference gives the same output shape as the geometry the kernels use.
    TensorType yt = conv_infer(n, a, TensorType::of(DType::Float32, c.x), TensorType::of(DType::Float32, c.w), nullptr);
    ASSERT_TRUE(yt.fully_known()) << c.name;
    ASSERT_EQ(yt.concrete(), ys) << c.name;

    const auto [ref, absref] = reference(p, x, w, c.bias ? &b : nullptr);
    for (auto layout : {cpu::ConvLayout::Plain, cpu::ConvLayout::Blocked}) {
      const char* lname = layout == cpu::ConvLayout::Plain ? "plain" : "blocked";
      cpu::DnnlConv dc(layout);
      Tensor y(DType::Float32, ys);
      bool ran = dc.run(p, x.data<float>(), w.data<float>(), c.bias ? b.data<float>() : nullptr, y.data<float>(), true);
      ASSERT_TRUE(ran) << c.name << " (" << lname << "): oneDNN declined " << p.str();
      double r = check_close(p, y, ref, absref, c.name + " " + lname + " " + p.str());
      EXPECT_LT(r, 1.0);
    }
  }
}

// The comparison must be able to fail: a result computed with shifted padding is rejected.
TEST(Conv, NegativeControl) {
  std::mt19937 rng(7);
  Node n = make_node("Conv", {{"pads", ints({1, 1, 1, 1})}});
  ConvAttrs a(n, false);
  cpu::ConvParams p = conv_params(n, a, {1, 8, 9, 9}, {8, 8, 3, 3});
  Tensor x = random_tensor({1, 8, 9, 9}, rng), w = random_tensor({8, 8, 3, 3}, rng);
  Tensor ref(DType::Float32, {1, 8, 9, 9}), absref(DType::Float32, {1, 8, 9, 9}), y(DType::Float32, {1, 8, 9, 9});
  cpu::conv_reference(p, x, w, nullptr, ref);
  cpu::conv_reference(p, abs_of(x), abs_of(w), nullptr, absref);
  cpu::ConvParams shifted = p;
  shifted.pad_l[2] = 0;
  shifted.pad_r[2] = 2;
  cpu::DnnlConv dc;
  ASSERT_TRUE(dc.run(shifted, x.data<float>(), w.data<float>(), nullptr, y.data<float>(), true));
  const double u = std::ldexp(1.0, -24);
  int64_t bad = 0;
  for (int64_t i = 0; i < y.numel(); ++i)
    if (std::fabs(y.data<float>()[i] - ref.data<float>()[i]) > 6 * std::sqrt(73.0) * u * absref.data<float>()[i]) ++bad;
  EXPECT_GT(bad, y.numel() / 2);
}

TEST(Conv, WeightCacheReusesPrimitiveAndNoticesNewWeights) {
  std::mt19937 rng(99);
  Node n = make_node("Conv", {{"pads", ints({1, 1, 1, 1})}}, true);
  ConvAttrs a(n, false);
  cpu::ConvParams p = conv_params(n, a, {1, 16, 8, 8}, {16, 16, 3, 3});
  Tensor x = random_tensor({1, 16, 8, 8}, rng), w = random_tensor({16, 16, 3, 3}, rng), b = random_tensor({16}, rng);
  Tensor y1(DType::Float32, {1, 16, 8, 8}), y2(DType::Float32, {1, 16, 8, 8}), ref(DType::Float32, {1, 16, 8, 8});
  cpu::DnnlConv dc;
  ASSERT_TRUE(dc.run(p, x.data<float>(), w.data<float>(), b.data<float>(), y1.data<float>(), true));
  ASSERT_TRUE(dc.run(p, x.data<float>(), w.data<float>(), b.data<float>(), y2.data<float>(), true));
  EXPECT_EQ(dc.cached_entries(), 1u);
  EXPECT_EQ(std::memcmp(y1.raw(), y2.raw(), y1.nbytes()), 0) << "same inputs, same thread count: identical results";
  // Non-constant weights rewritten in place: the next run must use the new values.
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = -w.data<float>()[i];
  ASSERT_TRUE(dc.run(p, x.data<float>(), w.data<float>(), b.data<float>(), y2.data<float>(), false));
  cpu::conv_reference(p, x, w, &b, ref);
  Tensor absref(DType::Float32, {1, 16, 8, 8});
  Tensor ab = abs_of(b);
  cpu::conv_reference(p, abs_of(x), abs_of(w), &ab, absref);
  check_close(p, y2, ref, absref, "after weight change");
  EXPECT_EQ(dc.cached_entries(), 1u);
  // A second input shape adds an entry.
  cpu::ConvParams p2 = conv_params(n, a, {2, 16, 5, 7}, {16, 16, 3, 3});
  Tensor x2 = random_tensor({2, 16, 5, 7}, rng), y3(DType::Float32, {2, 16, 5, 7});
  ASSERT_TRUE(dc.run(p2, x2.data<float>(), w.data<float>(), b.data<float>(), y3.data<float>(), true));
  EXPECT_EQ(dc.cached_entries(), 2u);
}

// Runs a node end to end through the registered kernel (infer + run) for a given dtype.
namespace {
Tensor run_node(const Node& n, const std::vector<const Tensor*>& ins) {
  const OpEntry* e = registry().find("", n.op_type, 22);
  EXPECT_NE(e, nullptr);
  auto k = e->make(n, 22);
  std::vector<TensorType> types;
  for (auto* t : ins) types.push_back(TensorType::of(t->dtype(), t->shape()));
  std::vector<const TensorType*> tp;
  std::vector<const Tensor*> vals;
  for (size_t i = 0; i < ins.size(); ++i) { tp.push_back(&types[i]); vals.push_back(i == 0 ? nullptr : ins[i]); }
  InferContext ic(n, tp, vals);
  k->infer(ic);
  Tensor y(ic.outputs()[0].dtype, ic.outputs()[0].concrete());
  RunContext rc(n, ins, {&y});
  k->run(rc);
  return y;
}
}  // namespace

TEST(Conv, Float64AndFloat16UseTheReference) {
  std::mt19937 rng(5);
  Node n = make_node("Conv", {{"strides", ints({2, 1})}, {"pads", ints({1, 0, 0, 1})}}, true);
  Tensor x = random_tensor({1, 3, 6, 5}, rng), w = random_tensor({4, 3, 3, 2}, rng), b = random_tensor({4}, rng);
  Tensor y32 = run_node(n, {&x, &w, &b});
  auto convert = [](const Tensor& t, DType d) {
    Tensor r(d, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) {
      float v = t.data<float>()[i];
      if (d == DType::Float64) r.data<double>()[i] = v;
      else r.data<uint16_t>()[i] = float_to_half(v);
    }
    return r;
  };
  Tensor x64 = convert(x, DType::Float64), w64 = convert(w, DType::Float64), b64 = convert(b, DType::Float64);
  Tensor y64 = run_node(n, {&x64, &w64, &b64});
  ASSERT_EQ(y64.dtype(), DType::Float64);
  ASSERT_EQ(y64.shape(), y32.shape());
  // K = 3*3*2 = 18 terms of |.| <= 1: float32 error <= 6*sqrt(19)*2^-24*19 ~ 3e-5.
  for (int64_t i = 0; i < y32.numel(); ++i) EXPECT_NEAR(y64.data<double>()[i], y32.data<float>()[i], 3e-5);
  Tensor x16 = convert(x, DType::Float16), w16 = convert(w, DType::Float16), b16 = convert(b, DType::Float16);
  Tensor y16 = run_node(n, {&x16, &w16, &b16});
  ASSERT_EQ(y16.dtype(), DType::Float16);
  // Inputs rounded to half (rel 2^-11 each) over <= 19 terms of |.| <= 1, plus the output rounding: < 0.03.
  for (int64_t i = 0; i < y32.numel(); ++i) EXPECT_NEAR(half_to_float(y16.data<uint16_t>()[i]), y32.data<float>()[i], 0.03);
}

// W fed at run time (not known while planning): rewriting it in place between runs must change the result,
// i.e. the kernel does not reuse weights reordered for the old contents.
// 3x3 stride-1 layers with enough channels and pixels switch to Winograd convolution on their second call (the
// first call runs direct convolution, whose weights are ready sooner). Every result is held to check_close's bound
// for direct summation. Winograd's transforms (F(2,3) / F(4,3)) add and rescale partial sums, which can amplify
// rounding, but here its worst error is 0.01-0.02 of that bound (direct convolution's: 0.03), so the same bound
// applies with a wide margin; a wrong tap or pad exceeds it by orders of magnitude (NegativeControl).
// Which 3x3 problems switch to Winograd: wide layers (more than 2^17 input x output channels, whose transformed
// weights are 4x their size) only from 4096 output positions on (fcn_resnet50's 2048->512 head at batch 8, not 1).
TEST(Conv, WinogradCandidates) {
  Node n = make_node("Conv", {{"pads", ints({1, 1, 1, 1})}});
  ConvAttrs a(n, false);
  auto wino = [&](const Shape& x, const Shape& w) { return cpu::DnnlConv::winograd_candidate(conv_params(n, a, x, w)); };
  EXPECT_TRUE(wino({1, 256, 28, 28}, {256, 256, 3, 3}));
  EXPECT_FALSE(wino({1, 2048, 28, 28}, {512, 2048, 3, 3}));   // 784 positions
  EXPECT_TRUE(wino({8, 2048, 28, 28}, {512, 2048, 3, 3}));    // 6272
  EXPECT_FALSE(wino({5, 2048, 28, 28}, {512, 2048, 3, 3}));   // 3920
  EXPECT_TRUE(wino({1, 512, 64, 64}, {512, 512, 3, 3}));      // 4096
  EXPECT_FALSE(wino({8, 16, 56, 56}, {64, 16, 3, 3}));        // too few input channels
  EXPECT_FALSE(wino({1, 128, 7, 7}, {128, 128, 3, 3}));       // too few positions
  Node dil = make_node("Conv", {{"pads", ints({2, 2, 2, 2})}, {"dilations", ints({2, 2})}});
  EXPECT_FALSE(cpu::DnnlConv::winograd_candidate(conv_params(dil, ConvAttrs(dil, false), {8, 256, 28, 28}, {256, 256, 3, 3})));
}

TEST(Conv, WinogradFromTheSecondCall) {
  std::mt19937 rng(31);
  Node n = make_node("Conv", {{"pads", ints({1, 1, 1, 1})}}, true);
  ConvAttrs a(n, false);
  const Shape ws{64, 32, 3, 3};
  Tensor w = random_tensor(ws, rng), b = random_tensor({64}, rng);
  cpu::DnnlConv dc;
  auto check = [&](const Tensor& x, bool weights_given, bool want_winograd, const std::string& what) {
    cpu::ConvParams p = conv_params(n, a, x.shape(), ws);
    const auto [ref, absref] = reference(p, x, w, &b);
    Tensor y(DType::Float32, out_shape(p));
    EXPECT_TRUE(dc.run(p, x.data<float>(), weights_given ? w.data<float>() : nullptr, b.data<float>(), y.data<float>(), true))
        << what;
    EXPECT_EQ(dc.last_winograd(), want_winograd) << what;
    std::printf("%s: worst error / bound = %.3f\n", what.c_str(), check_close(p, y, ref, absref, what));
    return y;
  };
  Tensor x = random_tensor({1, 32, 16, 16}, rng);
  Tensor direct = check(x, true, false, "first call (direct)");
  Tensor wino = check(x, true, true, "second call (Winograd)");
  EXPECT_NE(std::memcmp(direct.raw(), wino.raw(), direct.nbytes()), 0) << "the two calls should take different kernels";
  check(x, true, true, "third call (Winograd)");
  // Another batch size after the original weights are gone (a freed initializer): its own direct, then Winograd,
  // primitive, both made from the kept copy.
  Tensor x2 = random_tensor({2, 32, 16, 16}, rng);
  check(x2, false, false, "batch 2, first call");
  check(x2, false, true, "batch 2, second call");
  // Too few output pixels (7x7 at batch 1), where Winograd loses: direct stays.
  Tensor x3 = random_tensor({1, 32, 7, 7}, rng);
  check(x3, false, false, "7x7, first call");
  check(x3, false, false, "7x7, second call");
}

// prepare() makes the entry and keeps the weights without computing (the plan calls it before a shape's first run,
// spread over threads); it is not a call: the first run after it is still the direct one, Winograd comes second.
TEST(Conv, PrepareReadiesTheFirstRunWithoutCountingAsOne) {
  std::mt19937 rng(32);
  Node n = make_node("Conv", {{"pads", ints({1, 1, 1, 1})}}, true);
  ConvAttrs a(n, false);
  const Shape xs{1, 32, 16, 16}, ws{64, 32, 3, 3}, ys{1, 64, 16, 16};
  cpu::ConvParams p = conv_params(n, a, xs, ws);
  Tensor x = random_tensor(xs, rng), w = random_tensor(ws, rng), b = random_tensor({64}, rng);
  cpu::DnnlConv prepared, plain;
  ASSERT_TRUE(prepared.prepare(p, w.data<float>(), true, true, false, false, {}, false));
  EXPECT_EQ(prepared.cached_entries(), 1u);
  EXPECT_TRUE(prepared.holds_weights());
  Tensor y1(DType::Float32, ys), y2(DType::Float32, ys);
  // The original weights are gone (a released initializer): the prepared copy serves.
  ASSERT_TRUE(prepared.run(p, x.data<float>(), nullptr, b.data<float>(), y1.data<float>(), true));
  EXPECT_FALSE(prepared.last_winograd());
  ASSERT_TRUE(plain.run(p, x.data<float>(), w.data<float>(), b.data<float>(), y2.data<float>(), true));
  EXPECT_EQ(std::memcmp(y1.raw(), y2.raw(), y1.nbytes()), 0) << "prepared and unprepared first runs differ";
  EXPECT_EQ(prepared.cached_entries(), 1u);
  ASSERT_TRUE(prepared.run(p, x.data<float>(), nullptr, b.data<float>(), y1.data<float>(), true));
  EXPECT_TRUE(prepared.last_winograd());
}

TEST(Conv, RuntimeWeightsAreNotCachedByPointer) {
  std::mt19937 rng(11);
  Node n = make_node("Conv", {{"pads", ints({1, 1, 1, 1})}});
  Tensor x = random_tensor({1, 16, 6, 6}, rng), w = random_tensor({16, 16, 3, 3}, rng);
  auto k = registry().find("", "Conv", 22)->make(n, 22);
  TensorType xt = TensorType::of(DType::Float32, x.shape()), wt = TensorType::of(DType::Float32, w.shape());
  InferContext ic(n, {&xt, &wt}, {nullptr, nullptr});
  k->infer(ic);
  Tensor y1(DType::Float32, {1, 16, 6, 6}), y2(DType::Float32, {1, 16, 6, 6});
  RunContext r1(n, {&x, &w}, {&y1});
  k->run(r1);
  // Change a single weight that the fingerprint samples do not cover (index 1 of 2304; samples step by 36).
  w.data<float>()[1] += 1.0f;
  RunContext r2(n, {&x, &w}, {&y2});
  k->run(r2);
  Tensor ref(DType::Float32, {1, 16, 6, 6});
  cpu::ConvParams p = conv_params(n, ConvAttrs(n, false), x.shape(), w.shape());
  cpu::conv_reference(p, x, w, nullptr, ref);
  double worst = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) worst = std::max(worst, (double)std::fabs(y2.data<float>()[i] - ref.data<float>()[i]));
  // 144 terms of |.| <= 2: float32 error far below 1e-3, while stale weights would be off by up to |x| ~ 1.
  EXPECT_LT(worst, 1e-3);
  EXPECT_NE(std::memcmp(y1.raw(), y2.raw(), y1.nbytes()), 0);
}

TEST(Conv, ConvTransposeKnownValues) {
  // 1x1x2 input, kernel [1, 2, 3], stride 2, output_padding 1: y = [1, 2, 3+2*1, 4, 6, 0] + bias 0.5
  Node n = make_node("ConvTranspose", {{"strides", ints({2})}, {"output_padding", ints({1})}}, true);
  Tensor x(DType::Float32, {1, 1, 2}), w(DType::Float32, {1, 1, 3}), b(DType::Float32, {1});
  x.data<float>()[0] = 1; x.data<float>()[1] = 2;
  w.data<float>()[0] = 1; w.data<float>()[1] = 2; w.data<float>()[2] = 3;
  b.data<float>()[0] = 0.5f;
  Tensor y = run_node(n, {&x, &w, &b});
  ASSERT_EQ(y.shape(), (Shape{1, 1, 6}));
  const float want[] = {1.5f, 2.5f, 5.5f, 4.5f, 6.5f, 0.5f};
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(y.data<float>()[i], want[i]) << i;
}

TEST(Conv, ShapeInferenceKeepsSymbolicBatch) {
  Node n = make_node("Conv", {{"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}});
  ConvAttrs a(n, false);
  TensorType x;
  x.dtype = DType::Float32;
  x.has_shape = true;
  x.dims = {Dim::sym("batch"), Dim::of(3), Dim::of(32), Dim()};
  TensorType y = conv_infer(n, a, x, TensorType::of(DType::Float32, {8, 3, 3, 3}), nullptr);
  ASSERT_EQ(y.rank(), 4);
  EXPECT_EQ(y.dims[0].symbol, "batch");
  EXPECT_FALSE(y.dims[0].known());
  EXPECT_EQ(y.dims[1].value, 8);
  EXPECT_EQ(y.dims[2].value, 16);
  EXPECT_FALSE(y.dims[3].known());
  // W's shape unknown but kernel_shape given: spatial dims still computed; output channels unknown.
  TensorType wunk;
  wunk.dtype = DType::Float32;
  Node nk = make_node("Conv", {{"kernel_shape", ints({3, 3})}, {"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}});
  x.dims = {Dim::sym("batch"), Dim::of(3), Dim::of(32), Dim::of(17)};
  TensorType yk = conv_infer(nk, ConvAttrs(nk, false), x, wunk, nullptr);
  ASSERT_EQ(yk.rank(), 4);
  EXPECT_FALSE(yk.dims[1].known());
  EXPECT_EQ(yk.dims[2].value, 16);
  EXPECT_EQ(yk.dims[3].value, 9);
  // Unknown rank in: unknown out.
  TensorType unk;
  unk.dtype = DType::Float32;
  TensorType u = conv_infer(n, a, unk, unk, nullptr);
  EXPECT_FALSE(u.has_shape);
  // ConvTranspose with output_shape: spatial dims known even when the input's are not.
  Node nt = make_node("ConvTranspose", {{"strides", ints({2, 2})}, {"output_shape", ints({20, 30})}});
  ConvAttrs at(nt, true);
  x.dims = {Dim::sym("N"), Dim::of(3), Dim(), Dim()};
  TensorType yt = conv_infer(nt, at, x, TensorType::of(DType::Float32, {3, 2, 3, 3}), nullptr);
  EXPECT_EQ(yt.dims[0].symbol, "N");
  EXPECT_EQ(yt.dims[1].value, 2);
  EXPECT_EQ(yt.dims[2].value, 20);
  EXPECT_EQ(yt.dims[3].value, 30);
}

namespace {
// Expects creating + inferring the node to throw kiln::Error whose message names the node and contains `what`.
void expect_error(const Node& n, const Shape& xs, const Shape& ws, const std::string& what, DType dt = DType::Float32,
                  const Shape* bs = nullptr) {
  try {
    const OpEntry* e = registry().find("", n.op_type, 22);
    ASSERT_NE(e, nullptr);
    auto k = e->make(n, 22);
    TensorType xt = TensorType::of(dt, xs), wt = TensorType::of(dt, ws), bt;
    if (bs) bt = TensorType::of(dt, *bs);
    std::vector<const TensorType*> tp{&xt, &wt};
    if (bs) tp.push_back(&bt);
    InferContext ic(n, tp, std::vector<const Tensor*>(tp.size(), nullptr));
    k->infer(ic);
    ADD_FAILURE() << "no error for " << n.describe() << " (expected '" << what << "')";
  } catch (const Error& err) {
    std::string m = err.what();
    EXPECT_NE(m.find(n.describe()), std::string::npos) << m;
    EXPECT_NE(m.find(what), std::string::npos) << "message: " << m << "\nexpected to contain: " << what;
  }
}
}  // namespace

TEST(Conv, ErrorsNameTheNode) {
  expect_error(make_node("Conv", {}, false, "chan"), {1, 3, 8, 8}, {4, 2, 3, 3}, "X has 3 channels but W");
  expect_error(make_node("Conv", {{"group", int1(2)}}, false, "grp"), {1, 4, 8, 8}, {3, 2, 3, 3}, "not divisible by group=2");
  expect_error(make_node("Conv", {{"group", int1(0)}}, false, "grp0"), {1, 4, 8, 8}, {4, 4, 3, 3}, "group must be >= 1");
  expect_error(make_node("Conv", {{"kernel_shape", ints({5, 5})}}, false, "ks"), {1, 3, 8, 8}, {4, 3, 3, 3},
               "kernel_shape attribute does not match W");
  expect_error(make_node("Conv", {{"kernel_shape", ints({3})}}, false, "ks1"), {1, 3, 8, 8}, {4, 3, 3, 3},
               "kernel_shape has 1 entries, expected 2");
  expect_error(make_node("Conv", {{"pads", ints({1, 1, 1})}}, false, "podd"), {1, 3, 8, 8}, {4, 3, 3, 3}, "pads must have 2 entries");
  expect_error(make_node("Conv", {{"pads", ints({1, 1})}}, false, "plen"), {1, 3, 8, 8}, {4, 3, 3, 3}, "pads has 2 entries, expected 4");
  expect_error(make_node("Conv", {{"pads", ints({1, -1, 1, 1})}}, false, "pneg"), {1, 3, 8, 8}, {4, 3, 3, 3}, "pads must be >= 0");
  expect_error(make_node("Conv", {{"strides", ints({1, 1, 1})}}, false, "slen"), {1, 3, 8, 8}, {4, 3, 3, 3}, "strides has 3 entries");
  expect_error(make_node("Conv", {{"strides", ints({0, 1})}}, false, "s0"), {1, 3, 8, 8}, {4, 3, 3, 3}, "strides must be >= 1");
  expect_error(make_node("Conv", {{"dilations", ints({1, 0})}}, false, "d0"), {1, 3, 8, 8}, {4, 3, 3, 3}, "dilations must be >= 1");
  expect_error(make_node("Conv", {{"auto_pad", str("SAME")}}, false, "ap"), {1, 3, 8, 8}, {4, 3, 3, 3}, "auto_pad must be");
  expect_error(make_node("Conv", {}, false, "rank"), {1, 3, 8, 8}, {4, 3, 3}, "must have the same rank");
  expect_error(make_node("Conv", {}, false, "rank6"), {1, 3, 4, 4, 4, 4}, {4, 3, 1, 1, 1, 1}, "only 1D, 2D and 3D");
  expect_error(make_node("Conv", {}, false, "small"), {1, 1, 2, 2}, {1, 1, 3, 3}, "too small for a kernel");
  expect_error(make_node("Conv", {}, false, "int"), {1, 1, 4, 4}, {1, 1, 3, 3}, "not supported", DType::Int32);
  Shape bad_b{5};
  expect_error(make_node("Conv", {}, true, "bias"), {1, 3, 8, 8}, {4, 3, 3, 3}, "B float32[5] must have 4 entries",
               DType::Float32, &bad_b);
  expect_error(make_node("Conv", {{"output_padding", ints({1, 1})}}, false, "opad"), {1, 3, 8, 8}, {4, 3, 3, 3},
               "ConvTranspose attributes");
  expect_error(make_node("ConvTranspose", {}, false, "tchan"), {1, 3, 8, 8}, {4, 2, 3, 3}, "X has 3 channels but W");
  expect_error(make_node("ConvTranspose", {{"group", int1(2)}}, false, "tgrp"), {1, 3, 8, 8}, {3, 2, 3, 3}, "not divisible by group=2");
  expect_error(make_node("ConvTranspose", {{"output_shape", ints({4, 4, 4})}}, false, "tos"), {1, 3, 8, 8}, {3, 2, 3, 3},
               "output_shape has 3 entries");
  expect_error(make_node("ConvTranspose", {{"output_padding", ints({1})}}, false, "top"), {1, 3, 8, 8}, {3, 2, 3, 3},
               "output_padding has 1 entries");
}

// Timing of the oneDNN paths (plain vs blocked activations) and the reference on the problems named in the design
// notes. Not a correctness test: run with --gtest_also_run_disabled_tests --gtest_filter=ConvBench.*
namespace {
// Minimum and median of `reps` timed calls after one warm-up. The minimum is the figure to compare: on a shared,
// oversubscribed machine OpenMP barriers often wait for a descheduled thread, which inflates means by whole
// scheduler slices.
std::pair<double, double> time_ms(const std::function<void()>& f, int reps) {
  f();  // warm-up (primitive creation, weight reorder)
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}
struct BenchResult { double plain, blocked, autos; };
BenchResult bench(const std::string& name, bool transpose, const Shape& xs, const Shape& ws, std::map<std::string, Attribute> attrs,
                  int reps, bool with_ref) {
  std::mt19937 rng(3);
  Node n = make_node(transpose ? "ConvTranspose" : "Conv", std::move(attrs), true);
  ConvAttrs a(n, transpose);
  cpu::ConvParams p = conv_params(n, a, xs, ws);
  Tensor x = random_tensor(xs, rng), w = random_tensor(ws, rng), b = random_tensor({p.M}, rng);
  Tensor y(DType::Float32, out_shape(p));
  cpu::DnnlConv plain(cpu::ConvLayout::Plain), blocked(cpu::ConvLayout::Blocked);
  auto tp = time_ms([&] { plain.run(p, x.data<float>(), w.data<float>(), b.data<float>(), y.data<float>(), true); }, reps);
  auto tb = time_ms([&] { blocked.run(p, x.data<float>(), w.data<float>(), b.data<float>(), y.data<float>(), true); }, reps);
  std::string ref = "(skipped)";
  if (with_ref) ref = std::to_string(time_ms([&] { cpu::conv_reference(p, x, w, &b, y); }, 1).first) + " ms";
  std::printf("%-36s min/median ms: plain %8.2f /%8.2f  blocked(+reorders) %8.2f /%8.2f  reference %s  auto picks %s\n",
              name.c_str(), tp.first, tp.second, tb.first, tb.second, ref.c_str(),
              cpu::DnnlConv::choose_layout(p) == cpu::ConvLayout::Blocked ? "blocked" : "plain");
  return {tp.first, tb.first, cpu::DnnlConv::choose_layout(p) == cpu::ConvLayout::Blocked ? tb.first : tp.first};
}
}  // namespace

TEST(ConvBench, DISABLED_PlainVsBlocked) {
  bench("resnet 3x3 1x64x56x56->64", false, {1, 64, 56, 56}, {64, 64, 3, 3}, {{"pads", ints({1, 1, 1, 1})}}, 20, true);
  bench("3D 1x32x64x128x128->32 3x3x3", false, {1, 32, 64, 128, 128}, {32, 32, 3, 3, 3}, {{"pads", ints({1, 1, 1, 1, 1, 1})}}, 3, false);
  bench("stem 7x7/2 1x3x224x224->64", false, {1, 3, 224, 224}, {64, 3, 7, 7}, {{"strides", ints({2, 2})}, {"pads", ints({3, 3, 3, 3})}}, 10, false);
  bench("depthwise 3x3 1x128x56x56", false, {1, 128, 56, 56}, {128, 1, 3, 3}, {{"group", int1(128)}, {"pads", ints({1, 1, 1, 1})}}, 20, false);
  bench("1x1 1x256x28x28->64", false, {1, 256, 28, 28}, {64, 256, 1, 1}, {}, 20, false);
  bench("3D 1x4x64x64x64->16 (first layer)", false, {1, 4, 64, 64, 64}, {16, 4, 3, 3, 3}, {{"pads", ints({1, 1, 1, 1, 1, 1})}}, 5, false);
  bench("convT 2x2/2 1x64x28x28->32", true, {1, 64, 28, 28}, {64, 32, 2, 2}, {{"strides", ints({2, 2})}}, 20, false);
  bench("1x1/2 1x256x56x56->128", false, {1, 256, 56, 56}, {128, 256, 1, 1}, {{"strides", ints({2, 2})}}, 20, false);
  bench("3x3 1x256x14x14->256", false, {1, 256, 14, 14}, {256, 256, 3, 3}, {{"pads", ints({1, 1, 1, 1})}}, 20, false);
  bench("1D k3 1x64x4000->64", false, {1, 64, 4000}, {64, 64, 3}, {{"pads", ints({1, 1})}}, 20, false);
  bench("3D 1x1x1 1x32x32x64x64->16", false, {1, 32, 32, 64, 64}, {16, 32, 1, 1, 1}, {}, 5, false);
  bench("convT 3x3/1 1x64x56x56->64", true, {1, 64, 56, 56}, {64, 64, 3, 3}, {{"pads", ints({1, 1, 1, 1})}}, 20, false);
  bench("convT 3x3/2 1x64x28x28->32 op1", true, {1, 64, 28, 28}, {64, 32, 3, 3},
        {{"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}, {"output_padding", ints({1, 1})}}, 20, false);
  bench("convT3d 2x2x2/2 1x64x16x32x32->32", true, {1, 64, 16, 32, 32}, {64, 32, 2, 2, 2}, {{"strides", ints({2, 2, 2})}}, 5, false);
}

// The 18 Conv/ConvTranspose layers of the nnU-Net 3d_fullres model in /work/shared/nnunet-case0 on one
// (1, 2, 32, 64, 64) tile (shapes from onnx shape inference), summed: plain-only vs blocked-only vs the auto choice.
TEST(ConvBench, DISABLED_NnunetTile) {
  struct L { bool t; Shape x, w; std::vector<int64_t> s, pads; };
  const std::vector<int64_t> p011{0, 1, 1, 0, 1, 1}, p111{1, 1, 1, 1, 1, 1}, p0{0, 0, 0, 0, 0, 0};
  const std::vector<L> layers = {
      {false, {1, 2, 32, 64, 64}, {16, 2, 1, 3, 3}, {1, 1, 1}, p011}, {false, {1, 16, 32, 64, 64}, {16, 16, 1, 3, 3}, {1, 1, 1}, p011},
      {false, {1, 16, 32, 64, 64}, {32, 16, 3, 3, 3}, {1, 2, 2}, p111}, {false, {1, 32, 32, 32, 32}, {32, 32, 3, 3, 3}, {1, 1, 1}, p111},
      {false, {1, 32, 32, 32, 32}, {64, 32, 3, 3, 3}, {2, 2, 2}, p111}, {false, {1, 64, 16, 16, 16}, {64, 64, 3, 3, 3}, {1, 1, 1}, p111},
      {false, {1, 64, 16, 16, 16}, {128, 64, 3, 3, 3}, {2, 2, 2}, p111}, {false, {1, 128, 8, 8, 8}, {128, 128, 3, 3, 3}, {1, 1, 1}, p111},
      {true, {1, 128, 8, 8, 8}, {128, 64, 2, 2, 2}, {2, 2, 2}, p0}, {false, {1, 128, 16, 16, 16}, {64, 128, 3, 3, 3}, {1, 1, 1}, p111},
      {false, {1, 64, 16, 16, 16}, {64, 64, 3, 3, 3}, {1, 1, 1}, p111}, {true, {1, 64, 16, 16, 16}, {64, 32, 2, 2, 2}, {2, 2, 2}, p0},
      {false, {1, 64, 32, 32, 32}, {32, 64, 3, 3, 3}, {1, 1, 1}, p111}, {false, {1, 32, 32, 32, 32}, {32, 32, 3, 3, 3}, {1, 1, 1}, p111},
      {true, {1, 32, 32, 32, 32}, {32, 16, 1, 2, 2}, {1, 2, 2}, p0}, {false, {1, 32, 32, 64, 64}, {16, 32, 1, 3, 3}, {1, 1, 1}, p011},
      {false, {1, 16, 32, 64, 64}, {16, 16, 1, 3, 3}, {1, 1, 1}, p011}, {false, {1, 16, 32, 64, 64}, {3, 16, 1, 1, 1}, {1, 1, 1}, p0},
  };
  double tp = 0, tb = 0, ta = 0;
  int i = 0;
  for (const L& l : layers) {
    BenchResult r = bench("nnunet layer " + std::to_string(i++), l.t, l.x, l.w, {{"strides", ints(l.s)}, {"pads", ints(l.pads)}}, 10, false);
    tp += r.plain; tb += r.blocked; ta += r.autos;
  }
  std::printf("nnU-Net tile, sum of per-layer minima: plain %.2f ms, blocked %.2f ms, auto %.2f ms\n", tp, tb, ta);
}

// ---- channels-last activations and fused post-ops ---------------------------------------------------------------

namespace {
// Plain [N, C, S...] <-> channels-last copies (the logical shape stays the same).
Tensor to_layout(const Tensor& t, bool to_cl) {
  Tensor r(t.dtype(), t.shape());
  data::layout_copy(t.raw(), r.raw(), t.dim(0), t.dim(1), t.numel() / (t.dim(0) * t.dim(1)), 4, to_cl);
  return r;
}

// Runs a Conv/ConvTranspose node through the registered kernel with explicit layouts; inputs are given in the
// layouts named (X at 0, the summand at 3), the result comes back in y_layout.
Tensor run_layouts(const Node& n, const std::vector<const Tensor*>& ins, std::vector<Layout> in_layouts, Layout y_layout) {
  auto k = registry().find("", n.op_type, 17)->make(n, 17);
  std::vector<TensorType> types;
  for (auto* t : ins) types.push_back(t ? TensorType::of(t->dtype(), t->shape()) : TensorType{});
  std::vector<const TensorType*> tp;
  std::vector<const Tensor*> vals;
  for (size_t i = 0; i < ins.size(); ++i) {
    tp.push_back(ins[i] ? &types[i] : nullptr);
    vals.push_back(i == 1 || i == 2 ? ins[i] : nullptr);
  }
  InferContext ic(n, tp, vals);
  k->infer(ic);
  EXPECT_EQ(k->layout_rule(tp, in_layouts), LayoutRule::ChannelsLast) << n.describe();
  Tensor y(ic.outputs()[0].dtype, ic.outputs()[0].concrete());
  RunContext rc(n, ins, {&y}, in_layouts, {y_layout});
  k->run(rc);
  return y;
}
}  // namespace

// X and Y in every combination of plain / channels-last give the reference result (transposed as the layout says),
// for 2D and 3D convolutions and transposed convolutions, pointwise and spatial kernels.
TEST(Conv, ChannelsLastInputsAndOutputs) {
  std::mt19937 rng(21);
  const std::vector<Case> cl_cases = {
      {"conv2d_3x3", false, {2, 8, 9, 10}, {16, 8, 3, 3}, {{"pads", ints({1, 1, 1, 1})}}, true},
      {"conv2d_1x1", false, {1, 32, 7, 7}, {24, 32, 1, 1}, {}, false},
      {"conv2d_depthwise", false, {1, 16, 14, 14}, {16, 1, 3, 3}, {{"group", int1(16)}, {"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}}, true},
      {"conv3d", false, {1, 4, 6, 7, 8}, {5, 4, 3, 3, 3}, {{"strides", ints({1, 2, 1})}, {"pads", ints({1, 0, 1, 0, 1, 2})}}, true},
      {"conv3d_1x1x1", false, {1, 16, 4, 5, 6}, {3, 16, 1, 1, 1}, {}, true},
      {"convT2d", true, {1, 8, 5, 6}, {8, 4, 2, 2}, {{"strides", ints({2, 2})}}, true},
      {"convT3d", true, {1, 16, 4, 4, 4}, {16, 8, 2, 2, 2}, {{"strides", ints({2, 2, 2})}}, false},
  };
  for (const Case& c : cl_cases) {
    Node n = make_node(c.transpose ? "ConvTranspose" : "Conv", c.attrs, c.bias, c.name);
    ConvAttrs a(n, c.transpose);
    cpu::ConvParams p = conv_params(n, a, c.x, c.w);
    Tensor x = random_tensor(c.x, rng), w = random_tensor(c.w, rng), b = random_tensor({p.M}, rng);
    const auto [ref, absref] = reference(p, x, w, c.bias ? &b : nullptr);
    Tensor x_cl = to_layout(x, true);
    for (int xi = 0; xi < 2; ++xi)
      for (int yi = 0; yi < 2; ++yi) {
        std::vector<const Tensor*> ins{xi ? &x_cl : &x, &w};
        if (c.bias) ins.push_back(&b);
        Tensor y = run_layouts(n, ins, {xi ? Layout::ChannelsLast : Layout::Plain}, yi ? Layout::ChannelsLast : Layout::Plain);
        Tensor y_plain = yi ? to_layout(y, false) : y;
        check_close(p, y_plain, ref, absref, c.name + (xi ? " x:cl" : " x:plain") + (yi ? " y:cl" : " y:plain"));
        if (yi) {
          // The layouts matter: the channels-last result read as plain is different (guards against a no-op path).
          int64_t differ = 0;
          for (int64_t i = 0; i < y.numel(); ++i) differ += y.data<float>()[i] != y_plain.data<float>()[i];
          EXPECT_GT(differ, 0) << c.name;
        }
      }
  }
}

// Transposed convolutions with kernel == stride (U-Net upsampling) as one matrix product (cpu::GemmDeconv, which
// the kernel takes for outputs of >= 4M elements): every layout combination, bias and a fused activation, a batch of
// 2, and results split over several row blocks with a tail (8 -> 64 channels at 2x2x2: 512 product columns, 256
// rows per block, 990 cells per image). The registered kernel (oneDNN at these sizes) is held to the same bound.
TEST(Conv, KernelEqualsStrideTransposeIsOneProduct) {
  std::mt19937 rng(23);
  const std::vector<Case> gemm_cases = {
      {"convT3d_2x2x2_tail", true, {2, 8, 9, 10, 11}, {8, 64, 2, 2, 2}, {{"strides", ints({2, 2, 2})}}, true},
      {"convT2d_2x3", true, {1, 5, 7, 6}, {5, 3, 2, 3}, {{"strides", ints({2, 3})}}, true},
      {"convT3d_1x2x2", true, {1, 16, 3, 5, 4}, {16, 8, 1, 2, 2}, {{"strides", ints({1, 2, 2})}}, false},
  };
  for (bool leaky : {false, true})
    for (const Case& c : gemm_cases) {
      Node n = make_node("ConvTranspose", c.attrs, c.bias, c.name);
      if (leaky) cpu::set_post_ops(n, {{cpu::PostKind::LeakyRelu, 0.1f, 0}});
      ConvAttrs a(n, true);
      cpu::ConvParams p = conv_params(n, a, c.x, c.w);
      ASSERT_TRUE(cpu::GemmDeconv::applies(p)) << c.name;
      Tensor x = random_tensor(c.x, rng), w = random_tensor(c.w, rng), b = random_tensor({p.M}, rng);
      const Shape ys = out_shape(p);
      auto [ref, absref] = reference(p, x, w, c.bias ? &b : nullptr);
      if (leaky)  // the slope scales negative results and their error alike: the bound on |result| still holds
        for (int64_t i = 0; i < ref.numel(); ++i) ref.data<float>()[i] = ref.data<float>()[i] >= 0 ? ref.data<float>()[i] : 0.1f * ref.data<float>()[i];
      Tensor x_cl = to_layout(x, true);
      cpu::GemmDeconv gd;
      gd.pack(p, w.data<float>());
      for (int xi = 0; xi < 2; ++xi)
        for (int yi = 0; yi < 2; ++yi) {
          const std::string what = c.name + (leaky ? " leaky" : "") + (xi ? " x:cl" : " x:plain") + (yi ? " y:cl" : " y:plain");
          Tensor y(DType::Float32, ys);
          gd.run(p, (xi ? x_cl : x).data<float>(), c.bias ? b.data<float>() : nullptr, y.data<float>(), xi, yi,
                 cpu::post_ops_of(n));
          check_close(p, yi ? to_layout(y, false) : y, ref, absref, what + " (GemmDeconv)");
          std::vector<const Tensor*> ins{xi ? &x_cl : &x, &w};
          if (c.bias) ins.push_back(&b);
          Tensor yk = run_layouts(n, ins, {xi ? Layout::ChannelsLast : Layout::Plain}, yi ? Layout::ChannelsLast : Layout::Plain);
          check_close(p, yi ? to_layout(yk, false) : yk, ref, absref, what + " (kernel)");
        }
    }
  // Not one product: padding, output padding, groups, a kernel larger than the stride, dilation.
  auto applies = [](std::map<std::string, Attribute> attrs, const Shape& xs, const Shape& ws) {
    Node n = make_node("ConvTranspose", std::move(attrs));
    return cpu::GemmDeconv::applies(conv_params(n, ConvAttrs(n, true), xs, ws));
  };
  EXPECT_TRUE(applies({{"strides", ints({2, 2})}}, {1, 4, 5, 5}, {4, 2, 2, 2}));
  EXPECT_FALSE(applies({{"strides", ints({2, 2})}, {"pads", ints({1, 0, 1, 0})}}, {1, 4, 5, 5}, {4, 2, 2, 2}));
  EXPECT_FALSE(applies({{"strides", ints({2, 2})}, {"output_padding", ints({1, 0})}}, {1, 4, 5, 5}, {4, 2, 2, 2}));
  EXPECT_FALSE(applies({{"strides", ints({2, 2})}, {"group", int1(2)}}, {1, 4, 5, 5}, {4, 2, 2, 2}));
  EXPECT_FALSE(applies({{"strides", ints({2, 2})}}, {1, 4, 5, 5}, {4, 2, 3, 3}));
  EXPECT_FALSE(applies({{"strides", ints({2, 2})}, {"dilations", ints({2, 2})}}, {1, 4, 5, 5}, {4, 2, 2, 2}));
}

// Fused post-ops: conv + bias, then sum (the summand given plain or channels-last, independently of Y) and relu,
// against the reference conv followed by the same steps in double.
TEST(Conv, FusedSumAndActivationInEveryLayout) {
  std::mt19937 rng(22);
  for (bool three_d : {false, true}) {
    Shape xs = three_d ? Shape{1, 8, 5, 6, 7} : Shape{2, 8, 9, 10};
    Shape ws = three_d ? Shape{8, 8, 3, 3, 3} : Shape{8, 8, 3, 3};
    std::vector<int64_t> pads(2 * (xs.size() - 2), 1);
    Node n = make_node("Conv", {{"pads", ints(pads)}}, true, three_d ? "c3" : "c2");
    n.inputs.push_back("S");
    cpu::set_post_ops(n, {{cpu::PostKind::Sum, 0, 0}, {cpu::PostKind::LeakyRelu, 0.1f, 0}});
    ConvAttrs a(n, false);
    cpu::ConvParams p = conv_params(n, a, xs, ws);
    Tensor x = random_tensor(xs, rng), w = random_tensor(ws, rng), b = random_tensor({p.M}, rng);
    Shape ys = xs;
    ys[1] = p.M;
    Tensor s = random_tensor(ys, rng);
    auto [ref, absref] = reference(p, x, w, &b);
    for (int64_t i = 0; i < ref.numel(); ++i) {
      double v = (double)ref.data<float>()[i] + s.data<float>()[i];
      ref.data<float>()[i] = (float)(v >= 0 ? v : 0.1 * v);
      absref.data<float>()[i] += std::fabs(s.data<float>()[i]) + 1e-6f;  // the sum adds one more rounding
    }
    Tensor x_cl = to_layout(x, true), s_cl = to_layout(s, true);
    for (int xi = 0; xi < 2; ++xi)
      for (int si = 0; si < 2; ++si)
        for (int yi = 0; yi < 2; ++yi) {
          Tensor y = run_layouts(n, {xi ? &x_cl : &x, &w, &b, si ? &s_cl : &s},
                                 {xi ? Layout::ChannelsLast : Layout::Plain, Layout::Plain, Layout::Plain,
                                  si ? Layout::ChannelsLast : Layout::Plain},
                                 yi ? Layout::ChannelsLast : Layout::Plain);
          check_close(p, yi ? to_layout(y, false) : y, ref, absref,
                      std::string(three_d ? "3d" : "2d") + " x" + std::to_string(xi) + " s" + std::to_string(si) + " y" + std::to_string(yi));
        }
  }
}

TEST(Conv, LayoutRuleIsPlainOnlyOffTheOneDnnPath) {
  Node n = make_node("Conv", {}, false);
  auto k = registry().find("", "Conv", 17)->make(n, 17);
  TensorType x64 = TensorType::of(DType::Float64, {1, 3, 8, 8}), w64 = TensorType::of(DType::Float64, {4, 3, 3, 3});
  TensorType x1d = TensorType::of(DType::Float32, {1, 3, 8}), w1d = TensorType::of(DType::Float32, {4, 3, 3});
  EXPECT_EQ(k->layout_rule({&x64, &w64}, {Layout::Plain, Layout::Plain}), LayoutRule::PlainOnly);
  EXPECT_EQ(k->layout_rule({&x1d, &w1d}, {Layout::Plain, Layout::Plain}), LayoutRule::PlainOnly);
}

TEST(Conv, SumPostOpNeedsItsInput) {
  Node n = make_node("Conv", {}, false);
  cpu::set_post_ops(n, {{cpu::PostKind::Sum, 0, 0}});
  try {
    registry().find("", "Conv", 17)->make(n, 17);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("node 'c'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("input 3"), std::string::npos) << e.what();
  }
}

namespace {
// Minimum times of one conv with X/Y plain vs channels-last (oneDNN auto strategy in both cases).
std::pair<double, double> bench_cl(const std::string& name, bool transpose, const Shape& xs, const Shape& ws,
                                   std::map<std::string, Attribute> attrs, int reps) {
  std::mt19937 rng(3);
  Node n = make_node(transpose ? "ConvTranspose" : "Conv", std::move(attrs), true);
  ConvAttrs a(n, transpose);
  cpu::ConvParams p = conv_params(n, a, xs, ws);
  Tensor x = random_tensor(xs, rng), w = random_tensor(ws, rng), b = random_tensor({p.M}, rng);
  Tensor y(DType::Float32, out_shape(p));
  cpu::DnnlConv plain, cl;
  auto tp = time_ms([&] { plain.run(p, x.data<float>(), w.data<float>(), b.data<float>(), y.data<float>(), true); }, reps);
  auto tc = time_ms([&] { cl.run(p, x.data<float>(), w.data<float>(), b.data<float>(), y.data<float>(), true, true, true); }, reps);
  std::printf("%-40s min/median ms: plain in/out %8.2f /%8.2f   channels-last in/out %8.2f /%8.2f\n", name.c_str(), tp.first,
              tp.second, tc.first, tc.second);
  return {tp.first, tc.first};
}
}  // namespace

TEST(ConvBench, DISABLED_PlainVsChannelsLast) {
  double tp = 0, tc = 0;
  auto add = [&](std::pair<double, double> r) { tp += r.first; tc += r.second; };
  add(bench_cl("resnet stem 7x7/2 1x3x224x224->64", false, {1, 3, 224, 224}, {64, 3, 7, 7}, {{"strides", ints({2, 2})}, {"pads", ints({3, 3, 3, 3})}}, 10));
  add(bench_cl("resnet 1x1 1x64x56x56->64", false, {1, 64, 56, 56}, {64, 64, 1, 1}, {}, 20));
  add(bench_cl("resnet 3x3 1x64x56x56->64", false, {1, 64, 56, 56}, {64, 64, 3, 3}, {{"pads", ints({1, 1, 1, 1})}}, 20));
  add(bench_cl("resnet 1x1 1x64x56x56->256", false, {1, 64, 56, 56}, {256, 64, 1, 1}, {}, 20));
  add(bench_cl("resnet 1x1 1x256x56x56->128", false, {1, 256, 56, 56}, {128, 256, 1, 1}, {}, 20));
  add(bench_cl("resnet 3x3/2 1x128x56x56->128", false, {1, 128, 56, 56}, {128, 128, 3, 3}, {{"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}}, 20));
  add(bench_cl("resnet 3x3 1x256x14x14->256", false, {1, 256, 14, 14}, {256, 256, 3, 3}, {{"pads", ints({1, 1, 1, 1})}}, 20));
  add(bench_cl("resnet 1x1 1x1024x14x14->256", false, {1, 1024, 14, 14}, {256, 1024, 1, 1}, {}, 20));
  add(bench_cl("resnet 3x3 1x512x7x7->512", false, {1, 512, 7, 7}, {512, 512, 3, 3}, {{"pads", ints({1, 1, 1, 1})}}, 20));
  add(bench_cl("mobilenet dw 3x3 1x144x56x56", false, {1, 144, 56, 56}, {144, 1, 3, 3}, {{"group", int1(144)}, {"pads", ints({1, 1, 1, 1})}}, 20));
  std::printf("resnet-like set, sum of minima: plain %.2f ms, channels-last %.2f ms\n", tp, tc);
  struct L { bool t; Shape x, w; std::vector<int64_t> s, pads; };
  const std::vector<int64_t> p011{0, 1, 1, 0, 1, 1}, p111{1, 1, 1, 1, 1, 1}, p0{0, 0, 0, 0, 0, 0};
  const std::vector<L> layers = {
      {false, {1, 2, 32, 64, 64}, {16, 2, 1, 3, 3}, {1, 1, 1}, p011}, {false, {1, 16, 32, 64, 64}, {16, 16, 1, 3, 3}, {1, 1, 1}, p011},
      {false, {1, 16, 32, 64, 64}, {32, 16, 3, 3, 3}, {1, 2, 2}, p111}, {false, {1, 32, 32, 32, 32}, {32, 32, 3, 3, 3}, {1, 1, 1}, p111},
      {false, {1, 32, 32, 32, 32}, {64, 32, 3, 3, 3}, {2, 2, 2}, p111}, {false, {1, 64, 16, 16, 16}, {64, 64, 3, 3, 3}, {1, 1, 1}, p111},
      {false, {1, 64, 16, 16, 16}, {128, 64, 3, 3, 3}, {2, 2, 2}, p111}, {false, {1, 128, 8, 8, 8}, {128, 128, 3, 3, 3}, {1, 1, 1}, p111},
      {true, {1, 128, 8, 8, 8}, {128, 64, 2, 2, 2}, {2, 2, 2}, p0}, {false, {1, 128, 16, 16, 16}, {64, 128, 3, 3, 3}, {1, 1, 1}, p111},
      {false, {1, 64, 16, 16, 16}, {64, 64, 3, 3, 3}, {1, 1, 1}, p111}, {true, {1, 64, 16, 16, 16}, {64, 32, 2, 2, 2}, {2, 2, 2}, p0},
      {false, {1, 64, 32, 32, 32}, {32, 64, 3, 3, 3}, {1, 1, 1}, p111}, {false, {1, 32, 32, 32, 32}, {32, 32, 3, 3, 3}, {1, 1, 1}, p111},
      {true, {1, 32, 32, 32, 32}, {32, 16, 1, 2, 2}, {1, 2, 2}, p0}, {false, {1, 32, 32, 64, 64}, {16, 32, 1, 3, 3}, {1, 1, 1}, p011},
      {false, {1, 16, 32, 64, 64}, {16, 16, 1, 3, 3}, {1, 1, 1}, p011}, {false, {1, 16, 32, 64, 64}, {3, 16, 1, 1, 1}, {1, 1, 1}, p0},
  };
  tp = tc = 0;
  int i = 0;
  for (const L& l : layers)
    add(bench_cl("nnunet layer " + std::to_string(i++) + (l.t ? " (convT)" : ""), l.t, l.x, l.w, {{"strides", ints(l.s)}, {"pads", ints(l.pads)}}, 5));
  std::printf("nnU-Net tile 1x2x32x64x64, sum of minima: plain %.2f ms, channels-last %.2f ms\n", tp, tc);
}
