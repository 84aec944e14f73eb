// Elementwise ops: vectorised float32 math vs double-precision std::, broadcast plans vs a plain
// N-d walk, fast binary paths vs reference, and node-level behaviour (errors, Cast corner cases).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "backends/cpu/ew_math.h"
#include "backends/cpu/ew_ops.h"
#include "ops/common.h"

using namespace kiln;
namespace ew = kiln::cpu::ew;

namespace {

// ---------- helpers ----------

// Error of `got` against the exact value `want`, in units of the float ulp at `want`
// (ulp taken as at least the smallest normal's ulp, so denormal results count absolute error).
double ulp_error(float got, double want) {
  if (std::isnan(want)) return std::isnan(got) ? 0 : 1e30;
  if (std::isinf(want)) return (double)got == want ? 0 : 1e30;
  float wf = (float)want;
  if (std::isinf(wf)) return std::isinf(got) && (got > 0) == (want > 0) ? 0 : 1e30;  // overflows in float
  int e;
  std::frexp(std::max(std::fabs(want), (double)std::numeric_limits<float>::min()), &e);
  double ulp = std::ldexp(1.0, e - 24);
  return std::fabs((double)got - want) / ulp;
}

// Inputs: every 61st float bit pattern with |x| <= lim (plus the specials), ~ 100k values.
std::vector<float> sweep(float lim) {
  std::vector<float> v;
  for (uint64_t b = 0; b < 0x100000000ull; b += 4099 * 61) {
    uint32_t u = (uint32_t)b;
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isfinite(f) && std::fabs(f) <= lim) v.push_back(f);
  }
  for (float s : {0.f, -0.f, 1e-45f, -1e-45f, 1e-38f, lim, -lim, 0.875f, -0.875f, 2.5f, -2.5f, 10.f, -10.f}) v.push_back(s);
  return v;
}

// Dense uniform sampling of [lo, hi].
std::vector<float> dense(float lo, float hi, int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = lo + (hi - lo) * (float)i / (float)(n - 1);
  return v;
}

template <class Fast, class Ref>
double max_ulp(Fast fast, Ref ref, const std::vector<float>& xs, float* worst_x = nullptr) {
  std::vector<float> y(xs.size());
  fast(xs.data(), y.data(), (int64_t)xs.size());
  double worst = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    double e = ulp_error(y[i], ref((double)xs[i]));
    if (e > worst) { worst = e; if (worst_x) *worst_x = xs[i]; }
  }
  return worst;
}

std::vector<float> concat(std::vector<float> a, const std::vector<float>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---------- vectorised math accuracy ----------
// Bounds: the fast kernels are compared with the exact (double) result. A correctly rounded float
// has error <= 0.5 ulp; glibc's float functions are within ~1 ulp. The bounds below are the
// measured maxima rounded up, i.e. "a few ulp", and fail on any real regression (a wrong
// coefficient or range reduction gives errors of thousands of ulp).

TEST(EwMath, ExpWithinUlps) {
  auto xs = concat(sweep(110.f), dense(-20.f, 20.f, 200001));
  float at = 0;
  double e = max_ulp(ew::exp_f32, [](double x) { return std::exp(x); }, xs, &at);
  EXPECT_LE(e, 2.0) << "at x=" << at;
  float y[4], x[4] = {std::numeric_limits<float>::quiet_NaN(), INFINITY, -INFINITY, 89.f};
  ew::exp_f32(x, y, 4);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], INFINITY);
  EXPECT_EQ(y[2], 0.f);
  EXPECT_EQ(y[3], INFINITY);
}

TEST(EwMath, TanhWithinUlps) {
  auto xs = concat(sweep(30.f), dense(-3.f, 3.f, 200001));
  float at = 0;
  double e = max_ulp(ew::tanh_f32, [](double x) { return std::tanh(x); }, xs, &at);
  EXPECT_LE(e, 4.0) << "at x=" << at;
  float y[3], x[3] = {std::numeric_limits<float>::quiet_NaN(), INFINITY, -INFINITY};
  ew::tanh_f32(x, y, 3);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 1.f);
  EXPECT_EQ(y[2], -1.f);
}

TEST(EwMath, SigmoidWithinUlps) {
  auto xs = concat(sweep(110.f), dense(-20.f, 20.f, 200001));
  float at = 0;
  double e = max_ulp(ew::sigmoid_f32, [](double x) { return 1.0 / (1.0 + std::exp(-x)); }, xs, &at);
  EXPECT_LE(e, 3.0) << "at x=" << at;
}

TEST(EwMath, ErfAndErfcWithinUlps) {
  auto xs = concat(sweep(12.f), dense(-5.f, 5.f, 200001));
  float at = 0;
  double e = max_ulp(ew::erf_f32, [](double x) { return std::erf(x); }, xs, &at);
  EXPECT_LE(e, 3.0) << "erf at x=" << at;
  // erfc: relative accuracy is kept for large arguments (results down to the denormal range).
  // Its error adds up exp(-x^2) (<= 2), the fitted R (<= 1), 1/x and two products (0.5 each).
  e = max_ulp(ew::erfc_f32, [](double x) { return std::erfc(x); }, xs, &at);
  EXPECT_LE(e, 5.0) << "erfc at x=" << at;
}

// GELU: for large |x| the result is x * (a tiny exp(...)), and the float rounding of the exp's
// argument t (2z for the tanh form, z^2 for the erf form) changes the result by |t| times the
// argument's relative error, in any float implementation (std:: based ones included). t is
// computed with a few float roundings (erf form: the 1/sqrt2 constant, x*c, and the square;
// tanh form: x*x*x, the fma, the constant and the product: <= 6), each <= 2^-24 relative, and a
// relative error e is at most e * 2^24 ulp. So the bound is a few ulp plus 4|t| (erf form) or
// 6|t| (tanh form) ulp; near 0 and for x > 0 the term vanishes and it is a few ulp.
TEST(EwMath, GeluWithinUlpsPlusArgumentConditioning) {
  auto xs = concat(sweep(14.f), dense(-8.f, 8.f, 200001));
  std::vector<float> y(xs.size());
  ew::gelu_tanh_f32(xs.data(), y.data(), (int64_t)xs.size());
  double worst = 0;
  float at = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    double x = xs[i], z = 0.79788456080286535588 * (x + 0.044715 * x * x * x);
    double e = ulp_error(y[i], ew::ref::gelu_tanh(x)) / (4.0 + 6.0 * std::fabs(2 * z));
    if (e > worst) { worst = e; at = xs[i]; }
  }
  EXPECT_LE(worst, 1.0) << "gelu tanh at x=" << at;
  ew::gelu_erf_f32(xs.data(), y.data(), (int64_t)xs.size());
  worst = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    double x = xs[i], z = x * 0.70710678118654752;
    double e = ulp_error(y[i], ew::ref::gelu_erf(x)) / (4.0 + 4.0 * z * z);
    if (e > worst) { worst = e; at = xs[i]; }
  }
  EXPECT_LE(worst, 1.0) << "gelu erf at x=" << at;
  // Where the conditioning term is small (|x| < 2), plain few-ulp accuracy.
  auto small = dense(-2.f, 2.f, 100001);
  float a2 = 0;
  EXPECT_LE(max_ulp(ew::gelu_tanh_f32, [](double x) { return ew::ref::gelu_tanh(x); }, small, &a2), 12.0) << a2;
  EXPECT_LE(max_ulp(ew::gelu_erf_f32, [](double x) { return ew::ref::gelu_erf(x); }, small, &a2), 8.0) << a2;
}

TEST(EwMath, HalfConversionsMatchCore) {
  // Every half / bfloat16 pattern to float; NaN stays NaN (payload may differ), others bit-exact.
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = (uint16_t)i;
  std::vector<float> f(65536);
  ew::f16_to_f32(all.data(), f.data(), 65536);
  for (int i = 0; i < 65536; ++i) {
    float want = half_to_float(all[i]);
    if (std::isnan(want)) ASSERT_TRUE(std::isnan(f[i])) << i;
    else ASSERT_EQ(f[i], want) << i;
  }
  ew::bf16_to_f32(all.data(), f.data(), 65536);
  for (int i = 0; i < 65536; ++i) {
    float want = bfloat16_to_float(all[i]);
    if (std::isnan(want)) ASSERT_TRUE(std::isnan(f[i])) << i;
    else ASSERT_EQ(f[i], want) << i;
  }
  // Float -> half/bfloat16 over a sweep of all magnitudes (incl. denormal halves, overflow, ties).
  std::vector<float> xs = sweep(INFINITY);
  for (float v : {65504.f, 65520.f, 65519.f, 1.0009765625f + 0.00048828125f, 5.96e-8f, 2.98e-8f, 1e-8f,
                  INFINITY, -INFINITY, std::numeric_limits<float>::quiet_NaN()}) { xs.push_back(v); xs.push_back(-v); }
  std::vector<uint16_t> h(xs.size()), b(xs.size());
  ew::f32_to_f16(xs.data(), h.data(), (int64_t)xs.size());
  ew::f32_to_bf16(xs.data(), b.data(), (int64_t)xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    if (std::isnan(xs[i])) {
      EXPECT_TRUE(std::isnan(half_to_float(h[i])));
      EXPECT_TRUE(std::isnan(bfloat16_to_float(b[i])));
      continue;
    }
    ASSERT_EQ(h[i], float_to_half(xs[i])) << xs[i];
    ASSERT_EQ(b[i], float_to_bfloat16(xs[i])) << xs[i];
  }
}

// ---------- broadcast plans ----------

TEST(EwBroadcast, PlanMatchesReferenceWalk) {
  std::mt19937 rng(7);
  for (int iter = 0; iter < 400; ++iter) {
    int rank = 1 + rng() % 5;
    Shape out(rank);
    for (auto& d : out) d = 1 + rng() % 4;
    std::vector<Shape> ins;
    int nin = 1 + rng() % 3;
    for (int j = 0; j < nin; ++j) {
      int r = rng() % (rank + 1);
      Shape s(out.end() - r, out.end());
      for (auto& d : s) if (rng() % 2) d = 1;
      ins.push_back(s);
    }
    ew::BroadcastPlan p = ew::make_broadcast_plan(out, ins);
    std::vector<std::vector<int64_t>> want;
    ew::reference_offsets(out, ins, &want);
    std::vector<std::vector<int64_t>> got(nin, std::vector<int64_t>(shape_numel(out), -1));
    ew::for_each_row(p, [&](int64_t o, const int64_t* off, int64_t n) {
      for (int64_t i = 0; i < n; ++i)
        for (int j = 0; j < nin; ++j) got[j][o + i] = off[j] + i * p.inner_stride[j];
    });
    for (int j = 0; j < nin; ++j) ASSERT_EQ(got[j], want[j]) << "out " << shape_str(out) << " in " << shape_str(ins[j]);
  }
}

TEST(EwBroadcast, CommonPatternsCollapse) {
  // [N,C,H,W] + [1,C,1,1]: rows N*C, inner H*W with the channel value broadcast along the row.
  auto p = ew::make_broadcast_plan({2, 3, 4, 5}, {{2, 3, 4, 5}, {1, 3, 1, 1}});
  EXPECT_EQ(p.rows, 6);
  EXPECT_EQ(p.inner, 20);
  EXPECT_EQ(p.inner_stride[1], 0);
  // Same shape: one contiguous run.
  p = ew::make_broadcast_plan({2, 3, 4}, {{2, 3, 4}, {2, 3, 4}});
  EXPECT_EQ(p.rows, 1);
  EXPECT_EQ(p.inner, 24);
  // Last-dim vector.
  p = ew::make_broadcast_plan({8, 16, 32}, {{8, 16, 32}, {32}});
  EXPECT_EQ(p.rows, 128);
  EXPECT_EQ(p.inner, 32);
  EXPECT_EQ(p.inner_stride[1], 1);
}

// Fast (row-collapsed, parallel) binary op against the reference walk on random data, for shapes
// large enough to take the parallel path.
TEST(EwBroadcast, FastBinaryMatchesReference) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<std::pair<Shape, Shape>> cases = {
      {{2, 64, 32, 32}, {1, 64, 1, 1}}, {{2, 64, 32, 32}, {2, 64, 32, 32}}, {{4, 128, 256}, {256}},
      {{4, 128, 256}, {}}, {{1}, {3, 70000}}, {{300, 1, 200}, {1, 150, 1}}, {{5, 7}, {7}},
      // Short rows, whole rows per thread, the offsets stepped across outer dims (channels-last SE scale: x * s).
      {{8, 56, 56, 24}, {8, 1, 1, 24}}, {{3, 5, 70, 33}, {3, 1, 70, 1}}, {{7, 1, 9, 11, 60}, {1, 13, 9, 1, 60}}};
  int saved = omp_get_max_threads();
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    for (auto& [as, bs] : cases) {
      Shape out = broadcast_shapes(Node{}, {as, bs});
      std::vector<float> a(shape_numel(as)), b(shape_numel(bs)), y1(shape_numel(out)), y2(shape_numel(out));
      for (auto& v : a) v = nd(rng);
      for (auto& v : b) v = nd(rng);
      auto op = [](float u, float v) { return u * v - u; };
      ew::binary_broadcast(a.data(), as, b.data(), bs, y1.data(), out, op);
      ew::binary_reference(a.data(), as, b.data(), bs, y2.data(), out, op);
      EXPECT_EQ(y1, y2) << shape_str(as) << " x " << shape_str(bs);
    }
  }
  omp_set_num_threads(saved);
}

// ---------- node-level ----------

Attribute int_attr(int64_t v) { Attribute a; a.kind = Attribute::Int; a.i = v; return a; }
Attribute float_attr(float v) { Attribute a; a.kind = Attribute::Float; a.f = v; return a; }
Attribute str_attr(const std::string& s) { Attribute a; a.kind = Attribute::String; a.s = s; return a; }

Node make_node(const std::string& op, int nin, std::map<std::string, Attribute> attrs = {}) {
  Node n;
  n.name = "n0";
  n.op_type = op;
  for (int i = 0; i < nin; ++i) n.inputs.push_back("i" + std::to_string(i));
  n.outputs = {"y"};
  n.attrs = std::move(attrs);
  return n;
}

std::unique_ptr<Kernel> make(const Node& n, int opset) {
  const OpEntry* e = registry().find("", n.op_type, opset);
  if (!e) throw Error(ErrorCode::Unsupported, "no " + n.op_type);
  return e->make(n, opset);
}

Tensor run_node(const Node& n, const std::vector<Tensor>& ins, int opset = 21) {
  auto k = make(n, opset);
  std::vector<TensorType> types;
  for (auto& t : ins) types.push_back(TensorType::of(t.dtype(), t.shape()));
  std::vector<const TensorType*> tp;
  std::vector<const Tensor*> vp;
  for (size_t i = 0; i < ins.size(); ++i) { tp.push_back(&types[i]); vp.push_back(nullptr); }
  InferContext ic(n, tp, vp);
  k->infer(ic);
  Tensor y(ic.output(0).dtype, ic.output(0).concrete());
  std::vector<const Tensor*> ip;
  for (auto& t : ins) ip.push_back(&t);
  RunContext rc(n, ip, {&y});
  k->run(rc);
  return y;
}

template <class T>
Tensor tensor(DType dt, Shape s, std::vector<T> v) {
  Tensor t(dt, s);
  EXPECT_EQ((size_t)t.numel(), v.size());
  std::memcpy(t.raw(), v.data(), v.size() * sizeof(T));
  return t;
}
template <class T>
std::vector<T> values(const Tensor& t) { return std::vector<T>(t.data<T>(), t.data<T>() + t.numel()); }

TEST(EwNode, IncompatibleShapesNameTheNode) {
  Node n = make_node("Add", 2);
  auto k = make(n, 14);
  TensorType a = TensorType::of(DType::Float32, {2, 3}), b = TensorType::of(DType::Float32, {4});
  InferContext ic(n, {&a, &b}, {nullptr, nullptr});
  try {
    k->infer(ic);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("n0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("broadcast"), std::string::npos) << e.what();
  }
}

TEST(EwNode, MismatchedTypesAndBadAttrsFail) {
  Node n = make_node("Mul", 2);
  auto k = make(n, 14);
  TensorType a = TensorType::of(DType::Float32, {2}), b = TensorType::of(DType::Int64, {2});
  InferContext ic(n, {&a, &b}, {nullptr, nullptr});
  EXPECT_THROW(k->infer(ic), Error);
  EXPECT_THROW(make(make_node("Gelu", 1, {{"approximate", str_attr("fast")}}), 20), Error);
  EXPECT_THROW(make(make_node("BitShift", 2, {{"direction", str_attr("UP")}}), 11), Error);
  // PRelu slope must broadcast to X without growing it.
  Node p = make_node("PRelu", 2);
  auto pk = make(p, 16);
  TensorType x = TensorType::of(DType::Float32, {3}), s = TensorType::of(DType::Float32, {2, 3});
  InferContext pc(p, {&x, &s}, {nullptr, nullptr});
  EXPECT_THROW(pk->infer(pc), Error);
}

TEST(EwNode, SymbolicDimsBroadcast) {
  Node n = make_node("Add", 2);
  auto k = make(n, 14);
  TensorType a;
  a.dtype = DType::Float32;
  a.has_shape = true;
  a.dims = {Dim::sym("batch"), Dim::of(1), Dim::of(8)};
  TensorType b = TensorType::of(DType::Float32, {4, 1});
  InferContext ic(n, {&a, &b}, {nullptr, nullptr});
  k->infer(ic);
  EXPECT_EQ(ic.output(0).str(), "float32[batch, 4, 8]");
}

TEST(EwNode, IntegerDivModSemantics) {
  Tensor a = tensor<int32_t>(DType::Int32, {6}, {-7, 7, -7, 7, 5, INT32_MIN});
  Tensor b = tensor<int32_t>(DType::Int32, {6}, {2, -2, -2, 0, 0, -1});
  EXPECT_EQ(values<int32_t>(run_node(make_node("Div", 2), {a, b})), (std::vector<int32_t>{-3, -3, 3, 0, 0, INT32_MIN}));
  EXPECT_EQ(values<int32_t>(run_node(make_node("Mod", 2), {a, b})), (std::vector<int32_t>{1, -1, -1, 0, 0, 0}));
  EXPECT_EQ(values<int32_t>(run_node(make_node("Mod", 2, {{"fmod", int_attr(1)}}), {a, b})),
            (std::vector<int32_t>{-1, 1, -1, 0, 0, 0}));
  // Integer Pow is exact beyond double's 53 bits.
  Tensor base = tensor<int64_t>(DType::Int64, {1}, {3}), ex = tensor<int64_t>(DType::Int64, {1}, {39});
  EXPECT_EQ(values<int64_t>(run_node(make_node("Pow", 2), {base, ex}))[0], 4052555153018976267LL);
}

TEST(EwNode, WhereBroadcastsThreeWays) {
  Tensor c = tensor<uint8_t>(DType::Bool, {2, 1}, {1, 0});
  Tensor x = tensor<float>(DType::Float32, {3}, {1, 2, 3});
  Tensor y = tensor<float>(DType::Float32, {}, {-1});
  Tensor r = run_node(make_node("Where", 3), {c, x, y});
  EXPECT_EQ(r.shape(), (Shape{2, 3}));
  EXPECT_EQ(values<float>(r), (std::vector<float>{1, 2, 3, -1, -1, -1}));
}

TEST(EwNode, Float16ComputedInFloatAndRounded) {
  Tensor a(DType::Float16, {2}), b(DType::Float16, {2});
  a.data<uint16_t>()[0] = float_to_half(1.f);
  a.data<uint16_t>()[1] = float_to_half(2048.f);
  b.data<uint16_t>()[0] = float_to_half(0.0009765625f);  // 2^-10: 1 + 2^-10 is exact in half
  b.data<uint16_t>()[1] = float_to_half(1.f);             // 2049 ties to even -> 2048
  Tensor r = run_node(make_node("Add", 2), {a, b});
  EXPECT_EQ(r.dtype(), DType::Float16);
  EXPECT_EQ(half_to_float(r.data<uint16_t>()[0]), 1.0009765625f);
  EXPECT_EQ(half_to_float(r.data<uint16_t>()[1]), 2048.f);
}

TEST(EwNode, ClipIntegerAndMinAboveMax) {
  Tensor x = tensor<int8_t>(DType::Int8, {4}, {-128, -5, 5, 127});
  Tensor lo = tensor<int8_t>(DType::Int8, {}, {-10}), hi = tensor<int8_t>(DType::Int8, {}, {10});
  EXPECT_EQ(values<int8_t>(run_node(make_node("Clip", 3), {x, lo, hi}, 13)), (std::vector<int8_t>{-10, -5, 5, 10}));
  Tensor xf = tensor<float>(DType::Float32, {2}, {-1, 5});
  Tensor l2 = tensor<float>(DType::Float32, {}, {3}), h2 = tensor<float>(DType::Float32, {}, {2});
  EXPECT_EQ(values<float>(run_node(make_node("Clip", 3), {xf, l2, h2}, 13)), (std::vector<float>{2, 2}));
  // opset 6: attributes.
  EXPECT_EQ(values<float>(run_node(make_node("Clip", 1, {{"min", float_attr(0)}, {"max", float_attr(1)}}), {xf}, 6)),
            (std::vector<float>{0, 1}));
}

TEST(EwNode, CastFloatToIntCornerCases) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = tensor<float>(DType::Float32, {7}, {2.7f, -2.7f, nan, 3e9f, -0.5f, 300.5f, INFINITY});
  auto cast = [&](DType to) { return run_node(make_node("Cast", 1, {{"to", int_attr((int64_t)to)}}), {x}); };
  // Truncation toward zero; NaN/out of range give x86's integer-indefinite value as numpy does.
  EXPECT_EQ(values<int32_t>(cast(DType::Int32)), (std::vector<int32_t>{2, -2, INT32_MIN, INT32_MIN, 0, 300, INT32_MIN}));
  EXPECT_EQ(values<int64_t>(cast(DType::Int64)), (std::vector<int64_t>{2, -2, INT64_MIN, 3000000000LL, 0, 300, INT64_MIN}));
  EXPECT_EQ(values<uint8_t>(cast(DType::UInt8)), (std::vector<uint8_t>{2, 254, 0, 0, 0, 44, 0}));
  EXPECT_EQ(values<uint8_t>(cast(DType::Bool)), (std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 1}));
  Tensor b = tensor<uint8_t>(DType::Bool, {2}, {0, 1});
  EXPECT_EQ(values<float>(run_node(make_node("Cast", 1, {{"to", int_attr(1)}}), {b})), (std::vector<float>{0, 1}));
  Tensor big = tensor<int64_t>(DType::Int64, {2}, {(1LL << 40) + 3, -1});
  EXPECT_EQ(values<uint16_t>(run_node(make_node("Cast", 1, {{"to", int_attr((int64_t)DType::UInt16)}}), {big})),
            (std::vector<uint16_t>{3, 65535}));
}

TEST(EwNode, CastDoubleToHalfRoundsOnce) {
  // 1 + 2^-11 + 2^-40: above the half-way point between 1 and 1+2^-10, so it rounds up to 1+2^-10.
  // Going through float first would drop the 2^-40 and tie to even (1.0).
  Tensor x = tensor<double>(DType::Float64, {1}, {1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40)});
  Tensor r = run_node(make_node("Cast", 1, {{"to", int_attr((int64_t)DType::Float16)}}), {x});
  EXPECT_EQ(half_to_float(r.data<uint16_t>()[0]), 1.0009765625f);
}

TEST(EwNode, CastToUnsupportedTypesIsReported) {
  try {
    make(make_node("Cast", 1, {{"to", int_attr(17)}}), 21);
    FAIL() << "expected unsupported";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unsupported);
    EXPECT_NE(std::string(e.what()).find("float8e4m3fn"), std::string::npos) << e.what();
  }
}

TEST(EwNode, ReluFamilyValuesAndNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = tensor<float>(DType::Float32, {4}, {-2.f, 3.f, 0.f, nan});
  auto r = values<float>(run_node(make_node("Relu", 1), {x}, 14));
  EXPECT_EQ(r[0], 0.f); EXPECT_EQ(r[1], 3.f); EXPECT_EQ(r[2], 0.f); EXPECT_TRUE(std::isnan(r[3]));
  auto l = values<float>(run_node(make_node("LeakyRelu", 1, {{"alpha", float_attr(0.5f)}}), {x}, 16));
  EXPECT_EQ(l[0], -1.f); EXPECT_EQ(l[1], 3.f); EXPECT_EQ(l[2], 0.f); EXPECT_TRUE(std::isnan(l[3]));
  Tensor s = tensor<float>(DType::Float32, {1}, {0.25f});
  auto p = values<float>(run_node(make_node("PRelu", 2), {x, s}, 16));
  EXPECT_EQ(p[0], -0.5f); EXPECT_EQ(p[1], 3.f); EXPECT_EQ(p[2], 0.f); EXPECT_TRUE(std::isnan(p[3]));
}

TEST(EwNode, UnaryFastPathMatchesReferenceInKernel) {
  // Sigmoid/Tanh/Gelu through the node (parallel chunks) vs the scalar double reference.
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> ud(-12.f, 12.f);
  std::vector<float> v(100003);
  for (auto& f : v) f = ud(rng);
  Tensor x = tensor<float>(DType::Float32, {(int64_t)v.size()}, v);
  int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  Tensor s = run_node(make_node("Sigmoid", 1), {x});
  Tensor g = run_node(make_node("Gelu", 1, {{"approximate", str_attr("tanh")}}), {x}, 20);
  omp_set_num_threads(saved);
  for (size_t i = 0; i < v.size(); ++i) {
    ASSERT_LE(ulp_error(s.data<float>()[i], ew::ref::sigmoid((double)v[i])), 3.0) << v[i];
    double x = v[i], z = 0.79788456080286535588 * (x + 0.044715 * x * x * x);
    ASSERT_LE(ulp_error(g.data<float>()[i], ew::ref::gelu_tanh(x)), 4.0 + 6.0 * std::fabs(2 * z)) << v[i];
  }
}

}  // namespace
