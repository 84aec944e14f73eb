// Reductions, softmax, normalisations and Einsum: fast float32 kernels against the plain references,
// shape inference, and error reporting.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backends/cpu/conv_postops.h"
#include "backends/cpu/data_util.h"
#include "backends/cpu/red_kernels.h"
#include "backends/cpu/red_ref.h"
#include "ops/common.h"

using namespace kiln;
using cpu::RedOp;

namespace {

std::vector<float> randv(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

Node make_node(const std::string& op, int nin, int nout, std::map<std::string, Attribute> attrs = {}) {
  Node n;
  n.name = "t_" + op;
  n.op_type = op;
  for (int i = 0; i < nin; ++i) n.inputs.push_back("in" + std::to_string(i));
  for (int i = 0; i < nout; ++i) n.outputs.push_back("out" + std::to_string(i));
  n.attrs = std::move(attrs);
  return n;
}

Attribute attr_i(int64_t v) { Attribute a; a.kind = Attribute::Int; a.i = v; return a; }
Attribute attr_s(const std::string& v) { Attribute a; a.kind = Attribute::String; a.s = v; return a; }

std::unique_ptr<Kernel> make(const Node& n, int opset) {
  const OpEntry* e = registry().find("", n.op_type, opset);
  if (!e) throw std::runtime_error("no kernel for " + n.op_type);
  return e->make(n, opset);
}

// Infers (types only, or with input values) and runs one node on concrete inputs.
std::vector<Tensor> run_node(const Node& n, int opset, const std::vector<Tensor>& ins) {
  auto k = make(n, opset);
  std::vector<TensorType> types;
  for (auto& t : ins) types.push_back(TensorType::of(t.dtype(), t.shape()));
  std::vector<const TensorType*> tp;
  std::vector<const Tensor*> vp;
  for (size_t i = 0; i < ins.size(); ++i) { tp.push_back(&types[i]); vp.push_back(&ins[i]); }
  InferContext ic(n, tp, vp);
  k->infer(ic);
  std::vector<Tensor> outs;
  for (auto& t : ic.outputs()) outs.emplace_back(t.dtype, t.concrete());
  std::vector<Tensor*> op;
  for (auto& t : outs) op.push_back(&t);
  RunContext rc(n, vp, op);
  k->run(rc);
  return outs;
}

Tensor tensor_f32(const Shape& s, const std::vector<float>& v) {
  Tensor t(DType::Float32, s);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

}  // namespace

// Fast [outer, R, inner] reductions against the double-accumulating reference.
// Tolerance: the fast path accumulates in float over 8-32 lanes, so its rounding error is bounded by about
// (R/32 + 8) * 2^-24 * sum|x|; with R <= 1000 that is < 5e-6 * sum|x|, so we allow 1e-5 * sum|x| + 1e-6.
// Max/Min must be exact; Prod uses values near 1 and a relative bound of 1e-5.
TEST(ReduceFast, MatchesReferenceOnRandomShapes) {
  const RedOp ops[] = {RedOp::Sum, RedOp::Mean, RedOp::Max, RedOp::Min, RedOp::Prod,
                       RedOp::L1, RedOp::L2, RedOp::LogSum, RedOp::LogSumExp, RedOp::SumSquare};
  const int64_t shapes[][3] = {{1, 1000, 1}, {7, 37, 1}, {3, 5, 19}, {1, 64, 300}, {2, 0, 4}, {4, 1, 9}, {5, 333, 1}, {2, 17, 257}};
  uint32_t seed = 1;
  for (RedOp op : ops)
    for (auto& s : shapes) {
      const int64_t outer = s[0], R = s[1], inner = s[2];
      bool positive = op == RedOp::LogSum || op == RedOp::Prod;
      auto x = randv(outer * R * inner, positive ? 0.9f : -2.f, positive ? 1.1f : 2.f, seed++);
      std::vector<float> fast(outer * inner), ref(outer * inner);
      cpu::red_reduce_f32(op, x.data(), fast.data(), outer, R, inner);
      cpu::ref::reduce<float, double>(op, x.data(), {outer, R, inner}, {false, true, false}, ref.data());
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          double mag = 0;
          for (int64_t r = 0; r < R; ++r) mag += std::fabs(x[(o * R + r) * inner + j]);
          float f = fast[o * inner + j], e = ref[o * inner + j];
          SCOPED_TRACE("op " + std::to_string((int)op) + " shape " + std::to_string(outer) + "x" + std::to_string(R) + "x" + std::to_string(inner));
          if (std::isinf(e)) { EXPECT_EQ(f, e); continue; }
          if (std::isnan(e)) { EXPECT_TRUE(std::isnan(f)); EXPECT_EQ(R, 0); continue; }  // mean of nothing
          if (op == RedOp::Max || op == RedOp::Min) EXPECT_EQ(f, e);
          else if (op == RedOp::Prod || op == RedOp::LogSumExp || op == RedOp::LogSum || op == RedOp::L2) EXPECT_NEAR(f, e, 1e-5 * std::fabs(e) + 1e-6);
          else EXPECT_NEAR(f, e, 1e-5 * mag + 1e-6);
        }
    }
}

TEST(ReduceFast, EmptySetGivesIdentity) {
  float y[3];
  cpu::red_reduce_f32(RedOp::Max, nullptr, y, 3, 0, 1);
  EXPECT_TRUE(std::isinf(y[0]) && y[0] < 0);
  cpu::red_reduce_f32(RedOp::Min, nullptr, y, 1, 0, 3);
  EXPECT_TRUE(std::isinf(y[2]) && y[2] > 0);
  cpu::red_reduce_f32(RedOp::Prod, nullptr, y, 3, 0, 1);
  EXPECT_EQ(y[1], 1.f);
  cpu::red_reduce_f32(RedOp::LogSumExp, nullptr, y, 3, 0, 1);
  EXPECT_TRUE(std::isinf(y[0]) && y[0] < 0);
}

// The vectorised exp against std::exp, including lanes outside the polynomial's range (handled by std::exp)
// and specials. Bound: 4 ulp (relative 4 * 2^-23) — the degree-7 polynomial's truncation error is < 1e-7.
TEST(ReduceFast, VectorExpMatchesStdExp) {
  std::vector<float> x;
  for (float v = -104.f; v <= 90.f; v += 0.01737f) x.push_back(v);
  x.push_back(INFINITY);
  x.push_back(-INFINITY);
  x.push_back(NAN);
  x.push_back(0.f);
  std::vector<float> y(x.size());
  cpu::red_exp_f32(x.data(), y.data(), (int64_t)x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    float e = std::exp(x[i]);
    if (std::isnan(e)) { EXPECT_TRUE(std::isnan(y[i])); continue; }
    if (std::isinf(e) || e == 0) { EXPECT_EQ(y[i], e) << x[i]; continue; }
    EXPECT_NEAR(y[i], e, 4.8e-7 * e) << "x = " << x[i];
  }
}

// Softmax probabilities are <= 1, so an absolute bound of 1e-6 (a few float ulps of 1) applies;
// LogSoftmax values grow with the spread of x (|x| <= 10 here), bound 1e-5.
TEST(SoftmaxFast, MatchesReference) {
  const int64_t shapes[][3] = {{3, 1000, 1}, {4, 7, 1}, {2, 33, 17}, {1, 5, 300}, {6, 1, 1}};
  uint32_t seed = 100;
  for (int log = 0; log < 2; ++log)
    for (auto& s : shapes) {
      const int64_t n = s[0] * s[1] * s[2];
      auto x = randv(n, -10.f, 10.f, seed++);
      std::vector<float> fast(n), ref(n);
      cpu::red_softmax_f32(log, x.data(), fast.data(), s[0], s[1], s[2]);
      cpu::ref::softmax<float>(log, x.data(), ref.data(), s[0], s[1], s[2]);
      for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(fast[i], ref[i], log ? 1e-5 : 1e-6) << "log " << log << " at " << i;
    }
}

// Layer/RMS/instance norm outputs are O(1) (normalised) times O(1) scale: absolute bound 1e-5.
TEST(NormFast, LayerAndRmsNormMatchReference) {
  const int64_t rows = 37, n = 771;
  auto x = randv(rows * n, -3.f, 5.f, 7), sc = randv(n, 0.5f, 1.5f, 8), b = randv(n, -1.f, 1.f, 9);
  std::vector<float> y(rows * n), yr(rows * n), m(rows), is(rows), mr(rows), isr(rows);
  cpu::red_row_moments_f32(x.data(), rows, n, 1e-5f, m.data(), is.data());
  cpu::red_row_normalize_f32(x.data(), y.data(), rows, n, m.data(), is.data(), sc.data(), b.data());
  cpu::ref::layer_norm(x.data(), yr.data(), rows, n, 1e-5f, sc.data(), b.data(), mr.data(), isr.data());
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_NEAR(m[r], mr[r], 1e-6);
    EXPECT_NEAR(is[r], isr[r], 1e-6 * isr[r]);
  }
  for (int64_t i = 0; i < rows * n; ++i) ASSERT_NEAR(y[i], yr[i], 1e-5) << i;
  cpu::red_rms_norm_f32(x.data(), y.data(), rows, n, 1e-5f, sc.data());
  cpu::ref::rms_norm(x.data(), yr.data(), rows, n, 1e-5f, sc.data());
  for (int64_t i = 0; i < rows * n; ++i) ASSERT_NEAR(y[i], yr[i], 1e-5) << i;
}

// InstanceNorm through the op on a long-row case with a large offset (mean 100, std ~1): a one-pass
// float variance would lose most digits here; the double two-pass one must match the reference to 1e-4.
TEST(NormFast, InstanceNormLargeChannels) {
  const int64_t N = 1, C = 3, S = 16 * 32 * 32;
  auto x = randv(N * C * S, 98.f, 102.f, 11), sc = randv(C, 0.5f, 2.f, 12), b = randv(C, -1.f, 1.f, 13);
  Node n = make_node("InstanceNormalization", 3, 1);
  auto out = run_node(n, 22, {tensor_f32({N, C, 16, 32, 32}, x), tensor_f32({C}, sc), tensor_f32({C}, b)});
  std::vector<float> ref(N * C * S);
  cpu::ref::instance_norm(x.data(), ref.data(), N, C, S, 1e-5f, sc.data(), b.data());
  for (int64_t i = 0; i < N * C * S; ++i) ASSERT_NEAR(out[0].data<float>()[i], ref[i], 1e-4) << i;
}

// The channels-last kernel (nnU-Net's layout): statistics in 64-row blocks over both threads, written over its own
// input (the plan runs it in place), with a fused LeakyReLU; rows not a multiple of the block, channels not a
// multiple of the vector width, two images, offset data (mean 100). Same reference and bound as above.
TEST(NormFast, InstanceNormChannelsLastInPlaceWithActivation) {
  const int64_t N = 2, C = 35, D = 9, H = 17, W = 23, S = D * H * W;
  auto x = randv(N * C * S, 98.f, 102.f, 14), sc = randv(C, 0.5f, 2.f, 15), b = randv(C, -1.f, 1.f, 16);
  std::vector<float> ref(N * C * S);
  cpu::ref::instance_norm(x.data(), ref.data(), N, C, S, 1e-5f, sc.data(), b.data());
  for (auto& v : ref) v = v >= 0 ? v : 0.01f * v;
  Node n = make_node("InstanceNormalization", 3, 1);
  cpu::set_post_ops(n, {{cpu::PostKind::LeakyRelu, 0.01f, 0}});
  auto k = make(n, 22);
  Tensor xt = tensor_f32({N, C, D, H, W}, x), xcl(DType::Float32, {N, C, D, H, W});
  data::layout_copy(xt.raw(), xcl.raw(), N, C, S, 4, true);
  Tensor st = tensor_f32({C}, sc), bt = tensor_f32({C}, b);
  TensorType xty = TensorType::of(DType::Float32, xt.shape()), cty = TensorType::of(DType::Float32, {C});
  InferContext ic(n, {&xty, &cty, &cty}, {nullptr, &st, &bt});
  k->infer(ic);
  EXPECT_EQ(k->inplace_input(), 0);
  Tensor y = Tensor::view(DType::Float32, xcl.shape(), xcl.raw());  // Y over X
  RunContext rc(n, {&xcl, &st, &bt}, {&y}, {Layout::ChannelsLast, Layout::Plain, Layout::Plain}, {Layout::ChannelsLast});
  k->run(rc);
  Tensor yp(DType::Float32, xt.shape());
  data::layout_copy(xcl.raw(), yp.raw(), N, C, S, 4, false);
  int64_t negatives = 0;
  for (int64_t i = 0; i < N * C * S; ++i) {
    ASSERT_NEAR(yp.data<float>()[i], ref[i], 1e-4) << i;
    negatives += ref[i] < 0;
  }
  EXPECT_GT(negatives, N * C * S / 4);  // the activation had work to do
}

TEST(ReduceInfer, KeepdimsWithSymbolicDims) {
  Attribute axes;
  axes.kind = Attribute::Ints;
  axes.ints = {-1, 1};
  for (int keep = 0; keep < 2; ++keep) {
    Node n = make_node("ReduceMean", 1, 1, {{"axes", axes}, {"keepdims", attr_i(keep)}});
    auto k = make(n, 13);
    TensorType x;
    x.dtype = DType::Float32;
    x.has_shape = true;
    x.dims = {Dim::sym("batch"), Dim::of(3), Dim::sym("h"), Dim::of(5)};
    InferContext ic(n, {&x}, {nullptr});
    k->infer(ic);
    const TensorType& y = ic.outputs()[0];
    ASSERT_TRUE(y.has_shape);
    if (keep) {
      ASSERT_EQ(y.rank(), 4);
      EXPECT_EQ(y.dims[0].symbol, "batch");
      EXPECT_EQ(y.dims[1].value, 1);
      EXPECT_EQ(y.dims[2].symbol, "h");
      EXPECT_EQ(y.dims[3].value, 1);
    } else {
      ASSERT_EQ(y.rank(), 2);
      EXPECT_EQ(y.dims[0].symbol, "batch");
      EXPECT_EQ(y.dims[1].symbol, "h");
    }
  }
}

TEST(ReduceInfer, AxesInputUnknownKeepsRank) {
  Node n = make_node("ReduceSum", 2, 1, {{"keepdims", attr_i(1)}});
  auto k = make(n, 18);
  TensorType x = TensorType::of(DType::Float32, {2, 3, 4}), a = TensorType::of(DType::Int64, {1});
  InferContext ic(n, {&x, &a}, {nullptr, nullptr});
  k->infer(ic);
  ASSERT_TRUE(ic.outputs()[0].has_shape);
  EXPECT_EQ(ic.outputs()[0].rank(), 3);
  EXPECT_FALSE(ic.outputs()[0].dims[0].known());
}

TEST(ReduceErrors, AxisOutOfRangeNamesTheNode) {
  Tensor x(DType::Float32, {2, 3});
  Tensor axes(DType::Int64, {1});
  axes.data<int64_t>()[0] = 2;
  Node n = make_node("ReduceMax", 2, 1);
  n.name = "my_reduce";
  try {
    run_node(n, 18, {x, axes});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("my_reduce"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
  Node s = make_node("Softmax", 1, 1, {{"axis", attr_i(-3)}});
  EXPECT_THROW(run_node(s, 13, {x}), Error);
}

TEST(ReduceOp, NoopWithEmptyAxesAndIntegerMean) {
  Tensor x(DType::Int32, {2, 3});
  for (int i = 0; i < 6; ++i) x.data<int32_t>()[i] = i * 3 + 1;  // 1 4 7 | 10 13 16
  Tensor empty(DType::Int64, {0});
  auto y = run_node(make_node("ReduceSum", 2, 1, {{"noop_with_empty_axes", attr_i(1)}}), 18, {x, empty});
  ASSERT_EQ(y[0].shape(), (Shape{2, 3}));
  EXPECT_EQ(y[0].data<int32_t>()[5], 16);
  Tensor ax(DType::Int64, {1});
  ax.data<int64_t>()[0] = 1;
  y = run_node(make_node("ReduceMean", 2, 1, {{"keepdims", attr_i(0)}}), 18, {x, ax});
  ASSERT_EQ(y[0].shape(), (Shape{2}));
  EXPECT_EQ(y[0].data<int32_t>()[0], 4);
  EXPECT_EQ(y[0].data<int32_t>()[1], 13);
}

// Einsum fast (packed batched matmul) path against a naive triple loop in double; operands are O(1) and
// K <= 64, so float accumulation error stays below 64 * 2^-24 * 64 ~ 3e-4 worst case: bound 1e-4 * K.
TEST(Einsum, MatmulFormsMatchNaive) {
  struct Case { const char* eq; Shape a, b, y; };
  // y[b,h,i,j] = sum_d a[b,h,i,d] * b[b,h,j,d]
  const int B = 2, H = 3, I = 5, J = 7, D = 64;
  auto a = randv(B * H * I * D, -1, 1, 21), b = randv(B * H * J * D, -1, 1, 22);
  Node n = make_node("Einsum", 2, 1, {{"equation", attr_s("bhid,bhjd->bhij")}});
  auto y = run_node(n, 12, {tensor_f32({B, H, I, D}, a), tensor_f32({B, H, J, D}, b)});
  ASSERT_EQ(y[0].shape(), (Shape{B, H, I, J}));
  for (int bh = 0; bh < B * H; ++bh)
    for (int i = 0; i < I; ++i)
      for (int j = 0; j < J; ++j) {
        double s = 0;
        for (int d = 0; d < D; ++d) s += (double)a[(bh * I + i) * D + d] * b[(bh * J + j) * D + d];
        ASSERT_NEAR(y[0].data<float>()[(bh * I + i) * J + j], s, 1e-4 * D);
      }
  // Output in a transposed order: y[k,i] = sum_j a[i,j] b[j,k].
  auto a2 = randv(4 * 6, -1, 1, 23), b2 = randv(6 * 3, -1, 1, 24);
  Node n2 = make_node("Einsum", 2, 1, {{"equation", attr_s("ij,jk->ki")}});
  auto y2 = run_node(n2, 12, {tensor_f32({4, 6}, a2), tensor_f32({6, 3}, b2)});
  ASSERT_EQ(y2[0].shape(), (Shape{3, 4}));
  for (int k = 0; k < 3; ++k)
    for (int i = 0; i < 4; ++i) {
      double s = 0;
      for (int j = 0; j < 6; ++j) s += (double)a2[i * 6 + j] * b2[j * 3 + k];
      EXPECT_NEAR(y2[0].data<float>()[k * 4 + i], s, 1e-5);
    }
}

TEST(Einsum, DiagonalEllipsisAndImplicitOutput) {
  // '...ii->...i' on [2, 3, 3]
  std::vector<float> v(18);
  for (int i = 0; i < 18; ++i) v[i] = (float)i;
  auto y = run_node(make_node("Einsum", 1, 1, {{"equation", attr_s("...ii->...i")}}), 12, {tensor_f32({2, 3, 3}, v)});
  ASSERT_EQ(y[0].shape(), (Shape{2, 3}));
  EXPECT_EQ(y[0].data<float>()[0], 0.f);
  EXPECT_EQ(y[0].data<float>()[1], 4.f);
  EXPECT_EQ(y[0].data<float>()[5], 17.f);
  // Implicit output 'ba' -> sorted 'ab': a transpose.
  auto t = run_node(make_node("Einsum", 1, 1, {{"equation", attr_s("ba")}}), 12, {tensor_f32({2, 3}, {0, 1, 2, 3, 4, 5})});
  ASSERT_EQ(t[0].shape(), (Shape{3, 2}));
  EXPECT_EQ(t[0].data<float>()[1], 3.f);
  // Broadcast ellipsis: [2,1,3] x [4,3] over '...j,...j->...'
  auto z = run_node(make_node("Einsum", 2, 1, {{"equation", attr_s("...j,...j->...")}}), 12,
                    {tensor_f32({2, 1, 3}, {1, 1, 1, 2, 2, 2}), tensor_f32({4, 3}, {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1})});
  ASSERT_EQ(z[0].shape(), (Shape{2, 4}));
  EXPECT_EQ(z[0].data<float>()[3], 3.f);
  EXPECT_EQ(z[0].data<float>()[7], 6.f);
  EXPECT_THROW(run_node(make_node("Einsum", 2, 1, {{"equation", attr_s("ij,jk->ik")}}), 12,
                        {tensor_f32({2, 3}, std::vector<float>(6)), tensor_f32({4, 2}, std::vector<float>(8))}),
               Error);
}

// Before opset 13 Softmax flattens to 2-D at `axis`: axis=0 normalises over the whole tensor; from opset 13
// axis=0 normalises each column separately.
TEST(SoftmaxOp, OpsetSemanticsDiffer) {
  Tensor x = tensor_f32({2, 3}, {0, 1, 2, 3, 4, 5});
  auto old = run_node(make_node("Softmax", 1, 1, {{"axis", attr_i(0)}}), 11, {x});
  auto neu = run_node(make_node("Softmax", 1, 1, {{"axis", attr_i(0)}}), 13, {x});
  double total = 0;
  for (int i = 0; i < 6; ++i) total += old[0].data<float>()[i];
  EXPECT_NEAR(total, 1.0, 1e-6);
  EXPECT_NEAR(old[0].data<float>()[5], std::exp(5.0) / (std::exp(0.0) + std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + std::exp(4.0) + std::exp(5.0)), 1e-6);
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(neu[0].data<float>()[j] + neu[0].data<float>()[3 + j], 1.0, 1e-6);
  EXPECT_NEAR(neu[0].data<float>()[0], 1.0 / (1.0 + std::exp(3.0)), 1e-6);
  // Hardmax at opset 11, default axis 1 on [2, 3]: one-hot per row at the first maximum.
  auto h = run_node(make_node("Hardmax", 1, 1), 11, {tensor_f32({2, 3}, {1, 5, 5, 7, 0, 7})});
  const float want[] = {0, 1, 0, 1, 0, 0};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(h[0].data<float>()[i], want[i]) << i;
}

TEST(ReduceOp, AxesAttributeBeforeOpset18) {
  Attribute axes;
  axes.kind = Attribute::Ints;
  axes.ints = {0};
  Tensor x = tensor_f32({2, 2}, {1, 2, 3, 4});
  auto y = run_node(make_node("ReduceMax", 1, 1, {{"axes", axes}, {"keepdims", attr_i(0)}}), 13, {x});
  ASSERT_EQ(y[0].shape(), (Shape{2}));
  EXPECT_EQ(y[0].data<float>()[0], 3.f);
  EXPECT_EQ(y[0].data<float>()[1], 4.f);
  // ReduceSum takes axes as an input from opset 13: the attribute form is rejected there.
  EXPECT_THROW(make(make_node("ReduceSum", 1, 1, {{"axes", axes}}), 13), Error);
}
