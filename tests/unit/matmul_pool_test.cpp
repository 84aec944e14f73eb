// MatMul / Gemm / pooling: oneDNN fast paths against the reference kernels, shape inference, errors.
//
// Tolerances. The reference accumulates in double, so it is (to ~1e-16) the exact product of the
// float32 inputs. oneDNN accumulates in float32 in an order of its choosing (blocked, FMA). For
// any summation order the error of a K-term float dot product is bounded by
//   gamma_K * sum_k |a_k b_k|,  gamma_K = K u / (1 - K u),  u = 2^-24,
// so each element is checked against that bound computed from |A| x |B| (plus a few ulps of the
// result for alpha scaling, adding beta*C and the final rounding). The bound is worst case and
// still tight enough to catch any real mistake (a wrong index or a missing term is O(|a b|)).
// Max pooling must match bitwise (no arithmetic). Average pooling sums at most V = kernel volume
// values: error <= (V + 2) u max|x|.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>

#include "backends/cpu/mm_dnnl.h"
#include "backends/cpu/mm_ref.h"
#include "backends/cpu/pool_cl.h"
#include "ops/common.h"

using namespace kiln;

namespace {

constexpr double kU = 1.0 / (1 << 24);

Attribute int_attr(int64_t v) { Attribute a; a.kind = Attribute::Int; a.i = v; return a; }
Attribute float_attr(float v) { Attribute a; a.kind = Attribute::Float; a.f = v; return a; }
Attribute ints_attr(std::vector<int64_t> v) { Attribute a; a.kind = Attribute::Ints; a.ints = std::move(v); return a; }
Attribute str_attr(std::string v) { Attribute a; a.kind = Attribute::String; a.s = std::move(v); return a; }

Node make_node(const std::string& op, int nin, int nout = 1) {
  Node n;
  n.name = "t_" + op;
  n.op_type = op;
  for (int i = 0; i < nin; ++i) n.inputs.push_back("in" + std::to_string(i));
  for (int i = 0; i < nout; ++i) n.outputs.push_back("out" + std::to_string(i));
  return n;
}

std::unique_ptr<Kernel> make(const Node& n, int opset) {
  const OpEntry* e = registry().find("", n.op_type, opset);
  if (!e) throw Error(ErrorCode::Unsupported, "no kernel for " + n.op_type);
  return e->make(n, opset);
}

// Infers output types from symbolic input types (no values).
std::vector<TensorType> infer_types(const Node& n, int opset, const std::vector<TensorType>& ins) {
  auto k = make(n, opset);
  std::vector<const TensorType*> pt;
  for (auto& t : ins) pt.push_back(&t);
  InferContext ctx(n, pt, std::vector<const Tensor*>(ins.size(), nullptr));
  k->infer(ctx);
  return ctx.outputs();
}

// Runs one node on concrete inputs (inputs flagged constant are given to infer as values).
std::vector<Tensor> run_node(const Node& n, int opset, const std::vector<Tensor>& ins, std::vector<bool> konst = {},
                             Kernel* kernel = nullptr) {
  std::unique_ptr<Kernel> owned;
  if (!kernel) { owned = make(n, opset); kernel = owned.get(); }
  std::vector<TensorType> types;
  for (auto& t : ins) types.push_back(TensorType::of(t.dtype(), t.shape()));
  std::vector<const TensorType*> pt;
  std::vector<const Tensor*> pv, pin;
  for (size_t i = 0; i < ins.size(); ++i) {
    pt.push_back(&types[i]);
    pv.push_back(i < konst.size() && konst[i] ? &ins[i] : nullptr);
    pin.push_back(&ins[i]);
  }
  InferContext ictx(n, pt, pv);
  kernel->infer(ictx);
  std::vector<Tensor> outs;
  for (auto& t : ictx.outputs()) outs.emplace_back(t.dtype, t.concrete());
  std::vector<Tensor*> pout;
  for (auto& t : outs) pout.push_back(&t);
  RunContext rctx(n, pin, pout);
  kernel->run(rctx);
  return outs;
}

Tensor random_tensor(std::mt19937& rng, const Shape& s, float lo = -1, float hi = 1) {
  Tensor t(DType::Float32, s);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

Tensor abs_of(const Tensor& t) {
  Tensor r(t.dtype(), t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) r.data<float>()[i] = std::fabs(t.data<float>()[i]);
  return r;
}

// numpy-semantics reference via mm::ref_matmul (promotes 1-D, aligns ranks, drops promoted axes).
Tensor ref_matmul(const Tensor& A, const Tensor& B) {
  Shape as = A.shape(), bs = B.shape();
  if (as.size() == 1) as.insert(as.begin(), 1);
  if (bs.size() == 1) bs.push_back(1);
  size_t r = std::max(as.size(), bs.size());
  as.insert(as.begin(), r - as.size(), 1);
  bs.insert(bs.begin(), r - bs.size(), 1);
  Shape ys(r), out;
  for (size_t i = 0; i + 2 < r; ++i) ys[i] = std::max(as[i], bs[i]);
  ys[r - 2] = as[r - 2];
  ys[r - 1] = bs[r - 1];
  for (size_t i = 0; i + 2 < r; ++i) out.push_back(ys[i]);
  if (A.rank() != 1) out.push_back(ys[r - 2]);
  if (B.rank() != 1) out.push_back(ys[r - 1]);
  Tensor Y(A.dtype(), out);
  mm::ref_matmul(A.dtype(), A.raw(), as, B.raw(), bs, Y.raw(), ys);
  return Y;
}

// got vs exact, with per-element bound gamma_K * absprod + slack_ulps * u * |exact|.
void expect_within_bound(const Tensor& got, const Tensor& exact, const Tensor& absprod, int64_t K, double slack_ulps,
                         const std::string& what) {
  ASSERT_EQ(got.shape(), exact.shape()) << what;
  const double gamma = K * kU / (1 - K * kU);
  int bad = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.data<float>()[i], e = exact.data<float>()[i];
    const double tol = gamma * absprod.data<float>()[i] * (1 + 1e-6) + slack_ulps * kU * std::fabs(e) + 1e-30;
    if (!(std::fabs(g - e) <= tol) && bad++ < 5)
      ADD_FAILURE() << what << ": element " << i << " got " << g << " expected " << e << " (tolerance " << tol << ")";
  }
}

}  // namespace

// ---- MatMul ------------------------------------------------------------------------------------

TEST(MatMul, OneDnnMatchesReferenceOnRandomShapes) {
  std::mt19937 rng(1234);
  struct Case { Shape a, b; };
  std::vector<Case> cases = {
      {{5, 7}, {7, 3}},                 // plain 2-D
      {{1, 768}, {768, 33}},            // row vector
      {{7}, {7, 4}},                    // 1-D A
      {{3, 7}, {7}},                    // 1-D B
      {{9}, {9}},                       // dot product
      {{2, 3, 5, 7}, {7}},              // batched x vector
      {{7}, {2, 3, 7, 5}},              // vector x batched
      {{2, 5, 7}, {7, 6}},              // batch folded into M (constant weight case)
      {{2, 1, 5, 7}, {3, 7, 6}},        // broadcast batch both ways
      {{1, 4, 5, 7}, {3, 1, 7, 6}},     // broadcast 1s in both
      {{4, 5, 7}, {4, 7, 6}},           // equal batch
      {{5, 7}, {3, 7, 6}},              // 2-D A broadcast over B's batch
      {{2, 3, 1, 2, 4, 3}, {3, 1, 3, 5}},  // rank 6 with broadcasting
  };
  for (int extra = 0; extra < 6; ++extra) {   // a few random ones
    std::uniform_int_distribution<int64_t> d(1, 17);
    int64_t M = d(rng), K = d(rng), N = d(rng), b0 = d(rng) % 4 + 1;
    cases.push_back({{b0, M, K}, {extra % 2 ? 1 : b0, K, N}});
  }
  for (auto& c : cases) {
    for (bool konst : {false, true}) {
      Tensor A = random_tensor(rng, c.a), B = random_tensor(rng, c.b);
      Node n = make_node("MatMul", 2);
      auto out = run_node(n, 13, {A, B}, {false, konst});
      Tensor exact = ref_matmul(A, B);
      Tensor absprod = ref_matmul(abs_of(A), abs_of(B));
      const int64_t K = c.a.back();
      expect_within_bound(out[0], exact, absprod, K, 1, "MatMul " + shape_str(c.a) + " x " + shape_str(c.b) + (konst ? " (const B)" : ""));
      // The node must have used oneDNN, not quietly fallen back: the same call on a fresh cache succeeds.
      Shape as = c.a, bs = c.b;
      if (as.size() == 1) as.insert(as.begin(), 1);
      if (bs.size() == 1) bs.push_back(1);
      const size_t r = std::max(as.size(), bs.size());
      as.insert(as.begin(), r - as.size(), 1);
      bs.insert(bs.begin(), r - bs.size(), 1);
      Shape ys = as;
      for (size_t i = 0; i + 2 < r; ++i) ys[i] = std::max(as[i], bs[i]);
      ys[r - 1] = bs[r - 1];
      Tensor direct(DType::Float32, ys);
      mm::MatmulCache cache;
      mm::MatmulCall call;
      call.a = A.data<float>(); call.as = as;
      call.b = B.data<float>(); call.bs = bs; call.b_const = konst;
      call.y = direct.data<float>(); call.ys = ys;
      ASSERT_TRUE(cache.run(call)) << shape_str(c.a) << " x " << shape_str(c.b);
      expect_within_bound(direct.reshaped(exact.shape()), exact, absprod, K, 1, "direct oneDNN " + shape_str(c.a) + " x " + shape_str(c.b));
    }
  }
}

TEST(MatMul, FastPathIsTakenAndCachedPerShape) {
  std::mt19937 rng(7);
  mm::MatmulCache cache;
  Tensor A = random_tensor(rng, {3, 4, 16}), B = random_tensor(rng, {1, 16, 8});
  Tensor Y(DType::Float32, {3, 4, 8});
  mm::MatmulCall c;
  c.a = A.data<float>(); c.as = A.shape();
  c.b = B.data<float>(); c.bs = B.shape(); c.b_const = true;
  c.y = Y.data<float>(); c.ys = Y.shape();
  ASSERT_TRUE(cache.run(c));
  Tensor exact(DType::Float32, {3, 4, 8});
  mm::ref_matmul(DType::Float32, A.raw(), A.shape(), B.raw(), B.shape(), exact.raw(), exact.shape());
  Tensor Aa = abs_of(A), Ba = abs_of(B), absprod(DType::Float32, {3, 4, 8});
  mm::ref_matmul(DType::Float32, Aa.raw(), A.shape(), Ba.raw(), B.shape(), absprod.raw(), absprod.shape());
  expect_within_bound(Y, exact, absprod, 16, 1, "cached matmul, first call");
  // Second call with new data in the same buffers reuses the primitive; B is constant so it is not changed.
  for (int64_t i = 0; i < A.numel(); ++i) A.data<float>()[i] *= -2;
  for (int64_t i = 0; i < exact.numel(); ++i) exact.data<float>()[i] *= -2;
  ASSERT_TRUE(cache.run(c));
  expect_within_bound(Y, exact, absprod, 16, 2, "cached matmul, second call");
}

TEST(MatMul, IntegerAndDoubleUseExactReference) {
  Node n = make_node("MatMul", 2);
  Tensor A(DType::Int64, {2, 3}), B(DType::Int64, {3, 2});
  for (int i = 0; i < 6; ++i) { A.data<int64_t>()[i] = i + 1; B.data<int64_t>()[i] = (i % 2 ? -1 : 1) * (int64_t)1e9 * (i + 1); }
  auto y = run_node(n, 13, {A, B})[0];
  // Row 0: [1 2 3] . columns of B = [[1e9,-2e9],[3e9,-4e9],[5e9,-6e9]]
  EXPECT_EQ(y.data<int64_t>()[0], (int64_t)(1e9 + 6e9 + 15e9));
  EXPECT_EQ(y.data<int64_t>()[1], (int64_t)(-2e9 - 8e9 - 18e9));
  Tensor Ad(DType::Float64, {3}), Bd(DType::Float64, {3});
  for (int i = 0; i < 3; ++i) { Ad.data<double>()[i] = 0.1 * (i + 1); Bd.data<double>()[i] = 3.0 - i; }
  auto yd = run_node(n, 13, {Ad, Bd})[0];
  EXPECT_EQ(yd.rank(), 0);
  EXPECT_NEAR(yd.data<double>()[0], 0.3 + 0.4 + 0.3, 1e-15);
}

TEST(MatMul, ShapeInferenceKeepsSymbols) {
  Node n = make_node("MatMul", 2);
  TensorType a;
  a.dtype = DType::Float32;
  a.has_shape = true;
  a.dims = {Dim::sym("batch"), Dim::sym("seq"), Dim::of(768)};
  TensorType b = TensorType::of(DType::Float32, {768, 3072});
  auto y = infer_types(n, 13, {a, b})[0];
  EXPECT_EQ(y.str(), "float32[batch, seq, 3072]");
  TensorType v = TensorType::of(DType::Float32, {768});
  EXPECT_EQ(infer_types(n, 13, {a, v})[0].str(), "float32[batch, seq]");
  TensorType unk;
  unk.dtype = DType::Float32;
  EXPECT_FALSE(infer_types(n, 13, {unk, b})[0].has_shape);
}

TEST(MatMul, InnerDimensionMismatchNamesNodeAndBothShapes) {
  Node n = make_node("MatMul", 2);
  try {
    infer_types(n, 13, {TensorType::of(DType::Float32, {2, 3}), TensorType::of(DType::Float32, {4, 5})});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("t_MatMul"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[4, 5]"), std::string::npos) << m;
  }
  // Also at run time (shapes only known then).
  EXPECT_THROW(infer_types(n, 13, {TensorType::of(DType::Float32, {2, 2, 3}), TensorType::of(DType::Float32, {3, 3, 4})}), Error);
  EXPECT_THROW(infer_types(n, 13, {TensorType::of(DType::Float32, {}), TensorType::of(DType::Float32, {3})}), Error);
  EXPECT_THROW(infer_types(n, 13, {TensorType::of(DType::Float32, {3}), TensorType::of(DType::Int64, {3})}), Error);
}

// ---- Gemm --------------------------------------------------------------------------------------

TEST(Gemm, OneDnnMatchesReferenceWithTransposesAlphaBeta) {
  std::mt19937 rng(99);
  struct Case { int64_t M, K, N; bool ta, tb; float alpha, beta; Shape c; bool has_c; };
  std::vector<Case> cases = {
      {5, 7, 3, false, false, 1, 1, {3}, true},
      {5, 7, 3, true, false, 1, 1, {5, 3}, true},
      {5, 7, 3, false, true, 0.5f, 2, {5, 1}, true},
      {5, 7, 3, true, true, -1.5f, 0.25f, {1, 3}, true},
      {1, 64, 10, false, true, 1, 1, {10}, true},        // bias row fast path
      {4, 33, 9, false, false, 2, 1, {}, true},          // scalar C
      {4, 33, 9, false, false, 1, 1, {1}, true},         // single-element C
      {6, 17, 11, true, false, 0.75f, 0, {6, 11}, true}, // beta 0 ignores C
      {6, 17, 11, false, false, 3, 1, {}, false},        // no C
  };
  for (auto& c : cases) {
    Tensor A = random_tensor(rng, c.ta ? Shape{c.K, c.M} : Shape{c.M, c.K});
    Tensor B = random_tensor(rng, c.tb ? Shape{c.N, c.K} : Shape{c.K, c.N});
    Tensor C = random_tensor(rng, c.c);
    Node n = make_node("Gemm", c.has_c ? 3 : 2);
    n.attrs["transA"] = int_attr(c.ta);
    n.attrs["transB"] = int_attr(c.tb);
    n.attrs["alpha"] = float_attr(c.alpha);
    n.attrs["beta"] = float_attr(c.beta);
    std::vector<Tensor> ins = {A, B};
    if (c.has_c) ins.push_back(C);
    auto got = run_node(n, 13, ins, {false, true, false})[0];
    Tensor exact(DType::Float32, {c.M, c.N}), absprod(DType::Float32, {c.M, c.N});
    mm::ref_gemm(DType::Float32, A.raw(), B.raw(), c.has_c ? C.raw() : nullptr, C.shape(), exact.raw(), c.M, c.N, c.K, c.ta, c.tb,
                 c.alpha, c.beta);
    Tensor Aa = abs_of(A), Ba = abs_of(B);
    mm::ref_gemm(DType::Float32, Aa.raw(), Ba.raw(), nullptr, {}, absprod.raw(), c.M, c.N, c.K, c.ta, c.tb, std::fabs(c.alpha), 0);
    // Extra slack: alpha scaling and adding beta*C each round once (relative to the terms' size).
    for (int64_t i = 0; i < absprod.numel(); ++i) absprod.data<float>()[i] += 4.f * std::fabs(c.beta);
    char what[128];
    std::snprintf(what, sizeof what, "Gemm M%lld K%lld N%lld ta%d tb%d alpha%g beta%g", (long long)c.M, (long long)c.K, (long long)c.N,
                  c.ta, c.tb, c.alpha, c.beta);
    expect_within_bound(got, exact, absprod, c.K + 2, 3, what);
    // The oneDNN path itself (the node may only fall back when oneDNN refuses): must accept these.
    mm::MatmulCache cache;
    mm::MatmulCall call;
    Tensor direct(DType::Float32, {c.M, c.N});
    call.a = A.data<float>(); call.as = {c.M, c.K}; call.trans_a = c.ta;
    call.b = B.data<float>(); call.bs = {c.K, c.N}; call.trans_b = c.tb; call.b_const = true;
    call.y = direct.data<float>(); call.ys = {c.M, c.N}; call.alpha = c.alpha;
    if (c.has_c && c.beta != 0) {
      for (int64_t m = 0; m < c.M; ++m)
        for (int64_t j = 0; j < c.N; ++j) {
          const int64_t cm = C.rank() == 2 ? C.dim(0) : 1, cn = C.rank() ? C.dim(-1) : 1;
          direct.data<float>()[m * c.N + j] = c.beta * C.data<float>()[(cm == 1 ? 0 : m) * cn + (cn == 1 ? 0 : j)];
        }
      call.accumulate = true;
    }
    ASSERT_TRUE(cache.run(call)) << what;
    expect_within_bound(direct, exact, absprod, c.K + 2, 3, std::string("direct oneDNN ") + what);
  }
}

TEST(Gemm, ReferenceIsCorrectOnAHandExample) {
  // A = [[1,2],[3,4]], B^T given as [[5,6],[7,8]] -> A B = [[17,23],[39,53]]; 2*AB + 10*[1,-1]
  Tensor A(DType::Float32, {2, 2}), B(DType::Float32, {2, 2}), C(DType::Float32, {2});
  float av[] = {1, 2, 3, 4}, bv[] = {5, 6, 7, 8}, cv[] = {1, -1};
  std::copy(av, av + 4, A.data<float>());
  std::copy(bv, bv + 4, B.data<float>());
  std::copy(cv, cv + 2, C.data<float>());
  Node n = make_node("Gemm", 3);
  n.attrs["transB"] = int_attr(1);
  n.attrs["alpha"] = float_attr(2);
  n.attrs["beta"] = float_attr(10);
  auto y = run_node(n, 13, {A, B, C})[0];
  const float want[] = {2 * 17 + 10, 2 * 23 - 10, 2 * 39 + 10, 2 * 53 - 10};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y.data<float>()[i], want[i]) << i;
}

TEST(Gemm, ErrorsNameTheNode) {
  Node n = make_node("Gemm", 3);
  auto f32 = [](Shape s) { return TensorType::of(DType::Float32, s); };
  auto expect_err = [&](std::vector<TensorType> ins, const char* part) {
    try {
      infer_types(n, 13, ins);
      ADD_FAILURE() << "expected an error mentioning " << part;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("t_Gemm"), std::string::npos) << m;
      EXPECT_NE(m.find(part), std::string::npos) << m;
    }
  };
  expect_err({f32({2, 3}), f32({4, 5}), f32({5})}, "inner dimensions");
  expect_err({f32({2, 3, 1}), f32({3, 5}), f32({5})}, "2-D");
  expect_err({f32({2, 3}), f32({3, 5}), f32({4})}, "cannot be broadcast");
  expect_err({f32({2, 3}), f32({3, 5}), f32({3, 5})}, "cannot be broadcast");
  Node n10 = make_node("Gemm", 2);
  EXPECT_THROW(make(n10, 9), Error);   // C required before opset 11
  EXPECT_NO_THROW(make(n10, 13));
}

// ---- Pooling -----------------------------------------------------------------------------------

namespace {

struct PoolCase {
  const char* op;
  Shape x;
  std::vector<int64_t> kernel, strides, pads, dilations;
  int ceil = 0, include_pad = 0;
  const char* auto_pad = "NOTSET";
  bool expect_fast = true;
};

Node pool_node(const PoolCase& c) {
  Node n = make_node(c.op, 1);
  n.attrs["kernel_shape"] = ints_attr(c.kernel);
  if (!c.strides.empty()) n.attrs["strides"] = ints_attr(c.strides);
  if (!c.pads.empty()) n.attrs["pads"] = ints_attr(c.pads);
  if (!c.dilations.empty()) n.attrs["dilations"] = ints_attr(c.dilations);
  n.attrs["ceil_mode"] = int_attr(c.ceil);
  if (std::string(c.op) == "AveragePool") n.attrs["count_include_pad"] = int_attr(c.include_pad);
  n.attrs["auto_pad"] = str_attr(c.auto_pad);
  return n;
}

mm::PoolAttrs attrs_of(const PoolCase& c) {
  mm::PoolAttrs a;
  a.kind = std::string(c.op) == "MaxPool" ? mm::PoolKind::Max : mm::PoolKind::Avg;
  const size_t nsp = c.kernel.size();
  a.kernel = c.kernel;
  a.strides = c.strides.empty() ? std::vector<int64_t>(nsp, 1) : c.strides;
  a.dilations = c.dilations.empty() ? std::vector<int64_t>(nsp, 1) : c.dilations;
  a.pads = c.pads.empty() ? std::vector<int64_t>(2 * nsp, 0) : c.pads;
  a.auto_pad = c.auto_pad;
  a.ceil_mode = c.ceil;
  a.count_include_pad = c.include_pad;
  return a;
}

}  // namespace

TEST(Pool, OneDnnMatchesReference) {
  std::mt19937 rng(5);
  const std::vector<PoolCase> cases = {
      {"MaxPool", {2, 3, 17}, {3}, {2}, {1, 1}},
      {"MaxPool", {1, 4, 12, 13}, {3, 3}, {2, 2}, {1, 1, 1, 1}},
      {"MaxPool", {1, 4, 12, 13}, {3, 3}, {2, 2}, {0, 0, 0, 0}, {}, 1},            // ceil_mode
      {"MaxPool", {1, 2, 2, 2}, {1, 1}, {2, 2}, {}, {}, 1},                        // ceil reduce-by-one
      {"MaxPool", {1, 2, 9, 10}, {2, 3}, {1, 2}, {}, {}, 0, 0, "SAME_UPPER"},
      {"MaxPool", {1, 2, 9, 10}, {2, 3}, {1, 2}, {}, {}, 0, 0, "SAME_LOWER"},
      {"MaxPool", {1, 2, 11, 11}, {3, 3}, {1, 1}, {}, {2, 2}},                     // dilations
      {"MaxPool", {1, 2, 6, 7, 8}, {2, 2, 2}, {2, 2, 2}, {0, 1, 0, 1, 0, 1}, {}, 1},  // 3-D ceil
      {"AveragePool", {2, 3, 17}, {4}, {3}, {2, 1}},
      {"AveragePool", {1, 3, 12, 13}, {3, 3}, {2, 2}, {1, 1, 1, 1}},               // exclude pad
      {"AveragePool", {1, 3, 12, 13}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 0, 1},     // include pad
      {"AveragePool", {1, 3, 12, 13}, {3, 3}, {2, 2}, {0, 0, 0, 0}, {}, 1, 0},     // ceil, exclude pad
      {"AveragePool", {1, 3, 12, 12}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 1, 1, "NOTSET", false},  // include pad + ceil overhang: reference only
      {"AveragePool", {1, 3, 2, 2}, {3, 3}, {3, 3}, {1, 1, 1, 1}, {}, 1, 1},       // last window would start on pad
      {"AveragePool", {1, 2, 9, 10}, {3, 2}, {2, 1}, {}, {}, 0, 0, "SAME_UPPER"},
      {"AveragePool", {1, 2, 11, 11}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {2, 2}, 0, 0}, // dilated, exclude pad
      {"AveragePool", {1, 2, 11, 11}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {2, 2}, 0, 1}, // dilated, include pad
      {"AveragePool", {1, 1, 10, 10, 10}, {5, 5, 5}, {3, 3, 3}, {}, {2, 2, 2}, 1, 1, "NOTSET", false},  // 3-D dilated ceil overhang
      {"AveragePool", {2, 2, 5, 6, 7}, {2, 3, 2}, {1, 2, 2}, {1, 0, 1, 0, 1, 1}},
  };
  for (const auto& c : cases) {
    Tensor X = random_tensor(rng, c.x, -3, 3);
    mm::PoolAttrs a = attrs_of(c);
    const std::string who = std::string(c.op) + " " + shape_str(c.x) + " k" + shape_str(c.kernel) + " ceil" + std::to_string(c.ceil) +
                            " incl" + std::to_string(c.include_pad) + " " + c.auto_pad;
    mm::PoolGeom g = mm::pool_geometry(a, c.x, who);
    Tensor ref(DType::Float32, g.out_shape());
    mm::ref_pool(DType::Float32, a, g, X.raw(), ref.raw(), nullptr);
    // The node (shape inference + whichever path it picks) ...
    auto got = run_node(pool_node(c), 22, {X})[0];
    ASSERT_EQ(got.shape(), ref.shape()) << who;
    // ... and the oneDNN path explicitly, where it claims the configuration.
    mm::PoolCache cache;
    Tensor fast(DType::Float32, g.out_shape());
    const bool took = cache.run(a, g, X.data<float>(), fast.data<float>());
    EXPECT_EQ(took, c.expect_fast) << who;
    int64_t vol = 1;
    for (auto k : c.kernel) vol *= k;
    for (const Tensor* t : {&got, &fast}) {
      if (t == &fast && !took) continue;
      for (int64_t i = 0; i < ref.numel(); ++i) {
        const float r = ref.data<float>()[i], v = t->data<float>()[i];
        if (a.kind == mm::PoolKind::Max) {
          ASSERT_EQ(v, r) << who << (t == &fast ? " (oneDNN)" : " (node)") << " at " << i;
        } else {
          ASSERT_NEAR(v, r, (vol + 2) * kU * 3.0) << who << (t == &fast ? " (oneDNN)" : " (node)") << " at " << i;
        }
      }
    }
  }
}

// kiln's channels-last 2D max pooling against the reference on the plain layout, bit for bit: channel counts below,
// at and above its 64-channel register block, padding, ceil mode, strides, dilation, windows hanging over the
// edge, and NaNs (kept only where one is a window's first in-bounds value, as in the reference).
TEST(Pool, ChannelsLastMaxPoolMatchesReference) {
  std::mt19937 rng(17);
  const std::vector<PoolCase> cases = {
      {"MaxPool", {2, 64, 13, 12}, {3, 3}, {2, 2}, {0, 0, 0, 0}, {}, 1},           // googlenet/squeezenet style, ceil
      {"MaxPool", {1, 130, 9, 9}, {3, 3}, {1, 1}, {1, 1, 1, 1}, {}},               // inception branch pool, 2 blocks + 2
      {"MaxPool", {1, 5, 11, 10}, {3, 2}, {2, 3}, {1, 0, 2, 1}, {}},                // fewer channels than a block
      {"MaxPool", {1, 70, 11, 11}, {3, 3}, {2, 1}, {2, 1, 2, 1}, {2, 2}},          // dilated, asymmetric pads
      {"MaxPool", {2, 64, 7, 7}, {2, 2}, {2, 2}, {}, {}, 0, 0, "SAME_UPPER"},
      {"MaxPool", {1, 3, 2, 2}, {3, 3}, {3, 3}, {1, 1, 1, 1}, {}, 1},               // windows mostly in the pads
  };
  for (const auto& c : cases) {
    Tensor X = random_tensor(rng, c.x, -3, 3);
    // A few NaNs, some of which are first in their windows.
    for (int64_t i = 0; i < X.numel(); i += 97) X.data<float>()[i] = std::nanf("");
    mm::PoolAttrs a = attrs_of(c);
    const std::string who = shape_str(c.x) + " k" + shape_str(c.kernel) + " s" + shape_str(c.strides) + " " + c.auto_pad;
    mm::PoolGeom g = mm::pool_geometry(a, c.x, who);
    Tensor ref(DType::Float32, g.out_shape());
    mm::ref_pool(DType::Float32, a, g, X.raw(), ref.raw(), nullptr);
    const int64_t N = g.N, C = g.C, S = X.numel() / (N * C), OS = ref.numel() / (N * C);
    Tensor xcl(DType::Float32, X.shape()), ycl(DType::Float32, ref.shape());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t p = 0; p < S; ++p) xcl.data<float>()[(n * S + p) * C + ch] = X.data<float>()[(n * C + ch) * S + p];
    cpu::max_pool_2d_cl(g, xcl.data<float>(), ycl.data<float>());
    int64_t nans = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t p = 0; p < OS; ++p) {
          const float r = ref.data<float>()[(n * C + ch) * OS + p], v = ycl.data<float>()[(n * OS + p) * C + ch];
          nans += std::isnan(r);
          if (std::isnan(r)) {
            ASSERT_TRUE(std::isnan(v)) << who << " n" << n << " c" << ch << " p" << p;
          } else {
            ASSERT_EQ(v, r) << who << " n" << n << " c" << ch << " p" << p;
          }
        }
    if (c.x[1] >= 64) {
      EXPECT_GT(nans, 0) << who << ": the NaN case should be exercised";
    }
  }
}

TEST(Pool, ReferenceHandExamples) {
  // 4x4 ramp, 3x3 kernel stride 2, ceil_mode: windows [0..2] and [2..3] per axis.
  Tensor X(DType::Float32, {1, 1, 4, 4});
  for (int i = 0; i < 16; ++i) X.data<float>()[i] = (float)(i + 1);
  PoolCase c{"AveragePool", {1, 1, 4, 4}, {3, 3}, {2, 2}, {}, {}, 1};
  auto y = run_node(pool_node(c), 22, {X})[0];
  ASSERT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  const float want[] = {6, 7.5f, 12, 13.5f};
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(y.data<float>()[i], want[i]);
  // Include-pad over a ceil overhang: 2x2 input, pads 1, kernel 3 stride 3 -> one window, sum / 9.
  Tensor X2(DType::Float32, {1, 1, 2, 2});
  for (int i = 0; i < 4; ++i) X2.data<float>()[i] = 9.f * (i + 1);
  PoolCase c2{"AveragePool", {1, 1, 2, 2}, {3, 3}, {3, 3}, {1, 1, 1, 1}, {}, 1, 1};
  auto y2 = run_node(pool_node(c2), 22, {X2})[0];
  ASSERT_EQ(y2.shape(), (Shape{1, 1, 1, 1}));
  EXPECT_FLOAT_EQ(y2.data<float>()[0], 10.f);
}

TEST(Pool, MaxPoolIndicesRowAndColumnMajor) {
  Tensor X(DType::Float32, {1, 2, 3, 4});
  for (int i = 0; i < 24; ++i) X.data<float>()[i] = (float)((i * 7) % 24);
  for (int order : {0, 1}) {
    Node n = make_node("MaxPool", 1, 2);
    n.attrs["kernel_shape"] = ints_attr({2, 2});
    n.attrs["strides"] = ints_attr({1, 2});
    n.attrs["storage_order"] = int_attr(order);
    auto out = run_node(n, 12, {X});
    ASSERT_EQ(out[1].shape(), (Shape{1, 2, 2, 2}));
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t oh = 0; oh < 2; ++oh)
        for (int64_t ow = 0; ow < 2; ++ow) {
          float best = -1;
          int64_t bh = 0, bw = 0;
          for (int kh = 0; kh < 2; ++kh)
            for (int kw = 0; kw < 2; ++kw) {
              const int64_t h = oh + kh, w = ow * 2 + kw;
              const float v = X.data<float>()[c * 12 + h * 4 + w];
              if (v > best) { best = v; bh = h; bw = w; }
            }
          const int64_t o = c * 4 + oh * 2 + ow;
          EXPECT_EQ(out[0].data<float>()[o], best);
          EXPECT_EQ(out[1].data<int64_t>()[o], c * 12 + (order ? bh + bw * 3 : bh * 4 + bw)) << "order " << order;
        }
  }
}

TEST(Pool, GlobalAndLp) {
  std::mt19937 rng(3);
  Tensor X = random_tensor(rng, {2, 3, 5, 7});
  auto avg = run_node(make_node("GlobalAveragePool", 1), 22, {X})[0];
  auto mx = run_node(make_node("GlobalMaxPool", 1), 22, {X})[0];
  Node lpn = make_node("GlobalLpPool", 1);
  lpn.attrs["p"] = int_attr(3);
  auto lp = run_node(lpn, 22, {X})[0];
  ASSERT_EQ(avg.shape(), (Shape{2, 3, 1, 1}));
  for (int64_t p = 0; p < 6; ++p) {
    double s = 0, m = -1e30, l = 0;
    for (int i = 0; i < 35; ++i) {
      const double v = X.data<float>()[p * 35 + i];
      s += v;
      m = std::max(m, v);
      l += std::pow(std::fabs(v), 3);
    }
    EXPECT_NEAR(avg.data<float>()[p], s / 35, 37 * kU);   // 35 terms of |x| <= 1, float partial sums
    EXPECT_EQ(mx.data<float>()[p], (float)m);
    EXPECT_NEAR(lp.data<float>()[p], std::cbrt(l), 4 * kU * std::cbrt(l));
  }
  // LpPool p=1 with padding equals sum of |x| over the window (pads contribute 0).
  Node n = make_node("LpPool", 1);
  n.attrs["kernel_shape"] = ints_attr({2});
  n.attrs["pads"] = ints_attr({1, 1});
  n.attrs["p"] = int_attr(1);
  Tensor x1(DType::Float32, {1, 1, 3});
  float xv[] = {-1, 2, -4};
  std::copy(xv, xv + 3, x1.data<float>());
  auto y = run_node(n, 18, {x1})[0];
  ASSERT_EQ(y.shape(), (Shape{1, 1, 4}));
  const float want[] = {1, 3, 6, 4};
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(y.data<float>()[i], want[i]);
}

TEST(Pool, ShapeInferenceAndErrors) {
  Node n = make_node("MaxPool", 1);
  n.attrs["kernel_shape"] = ints_attr({3, 3});
  n.attrs["strides"] = ints_attr({2, 2});
  n.attrs["pads"] = ints_attr({1, 1, 1, 1});
  TensorType x;
  x.dtype = DType::Float32;
  x.has_shape = true;
  x.dims = {Dim::sym("N"), Dim::of(64), Dim::of(112), Dim::sym("W")};
  EXPECT_EQ(infer_types(n, 12, {x})[0].str(), "float32[N, 64, 56, ?]");
  auto expect_err = [](const Node& node, std::vector<TensorType> ins, const char* part) {
    try {
      if (ins.empty()) make(node, 22);
      else infer_types(node, 22, ins);
      ADD_FAILURE() << "expected an error mentioning " << part;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(node.name), std::string::npos) << m;
      EXPECT_NE(m.find(part), std::string::npos) << m;
    }
  };
  expect_err(n, {TensorType::of(DType::Float32, {1, 3, 8})}, "rank 4");
  Node nopad = n;
  nopad.attrs.erase("pads");
  expect_err(nopad, {TensorType::of(DType::Float32, {1, 3, 2, 9})}, "too small");
  Node bad = n;
  bad.attrs["strides"] = ints_attr({0, 1});
  expect_err(bad, {}, "strides");
  bad = n;
  bad.attrs["pads"] = ints_attr({1, 1});
  expect_err(bad, {}, "pads");
  bad = n;
  bad.attrs["auto_pad"] = str_attr("SAME");
  expect_err(bad, {}, "auto_pad");
  bad = n;
  bad.attrs.erase("kernel_shape");
  expect_err(bad, {}, "kernel_shape");
  Node avg = make_node("AveragePool", 1, 2);
  avg.attrs["kernel_shape"] = ints_attr({2});
  expect_err(avg, {TensorType::of(DType::Float32, {1, 1, 4})}, "Indices");
}

// ---- Timing (not run by default: --gtest_also_run_disabled_tests --gtest_filter=*Timing*) ------

namespace {

// Median of `reps` timed calls after one warm-up call (primitive creation, weight reorder, caches).
// The median rather than the mean: the build machine is shared and preemption spikes are common.
double time_ms(const std::function<void()>& f, int reps) {
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The "naive loop": y[m][n] = sum_k a[m][k] * b[k][n], float accumulation, one thread.
void naive(const float* a, const float* b, float* y, int64_t M, int64_t K, int64_t N, bool tb) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float s = 0;
      for (int64_t k = 0; k < K; ++k) s += a[m * K + k] * (tb ? b[n * K + k] : b[k * N + n]);
      y[m * N + n] = s;
    }
}

}  // namespace

TEST(MatMulPoolTiming, DISABLED_ReportMsPerCall) {
  std::mt19937 rng(1);
  struct B { const char* name; int64_t M, K, N; bool gemm; };
  for (const B& c : {B{"MatMul 1x768 x 768x3072", 1, 768, 3072, false}, B{"MatMul 197x768 x 768x768 (ViT)", 197, 768, 768, false},
                     B{"Gemm 1x2048 x (1000x2048)^T + bias (resnet50 fc)", 1, 2048, 1000, true}}) {
    Tensor A = random_tensor(rng, {c.M, c.K});
    Tensor Bw = random_tensor(rng, c.gemm ? Shape{c.N, c.K} : Shape{c.K, c.N});
    Tensor C = random_tensor(rng, {c.N});
    Node n = make_node(c.gemm ? "Gemm" : "MatMul", c.gemm ? 3 : 2);
    if (c.gemm) n.attrs["transB"] = int_attr(1);
    auto k = make(n, 13);
    std::vector<Tensor> ins = {A, Bw};
    if (c.gemm) ins.push_back(C);
    // Same kernel object every call: primitives are created once.
    std::vector<TensorType> types;
    for (auto& t : ins) types.push_back(TensorType::of(t.dtype(), t.shape()));
    std::vector<const TensorType*> pt;
    std::vector<const Tensor*> pv, pin;
    for (size_t i = 0; i < ins.size(); ++i) { pt.push_back(&types[i]); pv.push_back(i == 0 ? nullptr : &ins[i]); pin.push_back(&ins[i]); }
    InferContext ictx(n, pt, pv);
    k->infer(ictx);
    Tensor Y(DType::Float32, ictx.outputs()[0].concrete());
    std::vector<Tensor*> pout{&Y};
    RunContext rctx(n, pin, pout);
    const int reps = c.M > 1 ? 20 : 200;
    const double fast = time_ms([&] { k->run(rctx); }, reps);
    Tensor Yn(DType::Float32, {c.M, c.N});
    const double slow = time_ms([&] { naive(A.data<float>(), Bw.data<float>(), Yn.data<float>(), c.M, c.K, c.N, c.gemm); }, c.M > 1 ? 2 : 10);
    // The reference kernel (row-parallel, k-outer loop, double accumulation) as a second baseline.
    const double ref = time_ms([&] {
      if (c.gemm) mm::ref_gemm(DType::Float32, A.raw(), Bw.raw(), C.raw(), C.shape(), Yn.raw(), c.M, c.N, c.K, false, true, 1, 1);
      else mm::ref_matmul(DType::Float32, A.raw(), A.shape(), Bw.raw(), Bw.shape(), Yn.raw(), Yn.shape());
    }, c.M > 1 ? 2 : 10);
    const double gflop = 2.0 * c.M * c.K * c.N / 1e9;
    std::printf("%-50s oneDNN %8.3f ms (%6.1f GFLOP/s, %d threads)   naive loop %9.3f ms (%.0fx)   reference kernel %9.3f ms (%.0fx)\n",
                c.name, fast, gflop / fast * 1e3, omp_get_max_threads(), slow, slow / fast, ref, ref / fast);
  }
}

TEST(MatMulPoolTiming, DISABLED_PoolingMsPerCall) {
  std::mt19937 rng(2);
  // ResNet-50 stem max pool: 1x64x112x112, 3x3 stride 2 pad 1.
  PoolCase c{"MaxPool", {1, 64, 112, 112}, {3, 3}, {2, 2}, {1, 1, 1, 1}};
  Tensor X = random_tensor(rng, c.x);
  Node n = pool_node(c);
  auto k = make(n, 22);
  mm::PoolAttrs a = attrs_of(c);
  mm::PoolGeom g = mm::pool_geometry(a, c.x, "timing");
  Tensor Y(DType::Float32, g.out_shape());
  std::vector<const Tensor*> pin{&X};
  std::vector<Tensor*> pout{&Y};
  TensorType xt = TensorType::of(DType::Float32, c.x);
  InferContext ictx(n, {&xt}, {nullptr});
  k->infer(ictx);
  RunContext rctx(n, pin, pout);
  const double fast = time_ms([&] { k->run(rctx); }, 50);
  const double ref = time_ms([&] { mm::ref_pool(DType::Float32, a, g, X.raw(), Y.raw(), nullptr); }, 5);
  std::printf("%-50s node %8.3f ms   reference kernel %8.3f ms (%.0fx)\n", "MaxPool 1x64x112x112 k3 s2 p1", fast, ref, ref / fast);
  // ResNet-50 head: GlobalAveragePool 1x2048x7x7.
  Tensor X2 = random_tensor(rng, {1, 2048, 7, 7});
  Tensor Y2(DType::Float32, {1, 2048, 1, 1});
  const double gap = time_ms([&] { mm::global_pool(DType::Float32, mm::PoolKind::Avg, 2, X2.raw(), Y2.raw(), 2048, 49); }, 200);
  std::printf("%-50s %8.3f ms\n", "GlobalAveragePool 1x2048x7x7", gap);
}
