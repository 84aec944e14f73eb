// Attention / recurrent / loss operators: shape inference with symbolic dims, error messages, the
// fast attention kernel against the plain reference, the op against an independent naive
// attention, and a hand-checkable LSTM.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>

#include "backends/cpu/ops2_attention.h"
#include "ops/common.h"

namespace kiln {
namespace {

Node make_node(const std::string& op, std::vector<std::string> ins, int n_out = 1) {
  Node n;
  n.name = "t_" + op;
  n.op_type = op;
  n.inputs = std::move(ins);
  for (int i = 0; i < n_out; ++i) n.outputs.push_back("out" + std::to_string(i));
  return n;
}
void set_int(Node& n, const std::string& k, int64_t v) { Attribute a; a.kind = Attribute::Int; a.i = v; n.attrs[k] = a; }
void set_float(Node& n, const std::string& k, float v) { Attribute a; a.kind = Attribute::Float; a.f = v; n.attrs[k] = a; }

std::unique_ptr<Kernel> kernel(const Node& n, int opset) {
  const OpEntry* e = registry().find("", n.op_type, opset);
  EXPECT_NE(e, nullptr) << n.op_type;
  return e->make(n, opset);
}

TensorType typ(DType dt, std::vector<Dim> dims) { TensorType t; t.dtype = dt; t.has_shape = true; t.dims = std::move(dims); return t; }

// Infers output shapes from the concrete inputs, allocates the outputs and runs the kernel.
std::vector<Tensor> run_op(const Node& n, int opset, std::vector<const Tensor*> ins) {
  auto k = kernel(n, opset);
  std::vector<TensorType> types;
  for (auto* t : ins) types.push_back(t ? TensorType::of(t->dtype(), t->shape()) : TensorType());
  std::vector<const TensorType*> tp;
  for (size_t i = 0; i < ins.size(); ++i) tp.push_back(ins[i] ? &types[i] : nullptr);
  InferContext ictx(n, tp, ins);
  k->infer(ictx);
  std::vector<Tensor> outs;
  for (auto& t : ictx.outputs()) outs.emplace_back(t.dtype, t.concrete());
  std::vector<Tensor*> op;
  for (auto& t : outs) op.push_back(&t);
  RunContext rctx(n, ins, op);
  k->run(rctx);
  return outs;
}

Tensor rand_tensor(Shape s, std::mt19937& g, float lo = -1, float hi = 1) {
  Tensor t(DType::Float32, s);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(g);
  return t;
}

// ---- Attention ------------------------------------------------------------------------------

// Fast blocked kernel vs the plain double-accumulating reference on an awkward configuration:
// GQA (6 q heads on 2 kv heads), causal with an offset, additive broadcast mask shorter than the
// kv length, softcap, Sq not a multiple of the 4-row block, and the softmax qk output.
TEST(Ops2Attention, FastMatchesReference) {
  std::mt19937 g(7);
  const int64_t B = 2, Hq = 6, Hkv = 2, Sq = 13, T = 21, D = 16, Dv = 12;
  Tensor q = rand_tensor({B, Hq, Sq, D}, g), k = rand_tensor({B, Hkv, T, D}, g), v = rand_tensor({B, Hkv, T, Dv}, g);
  Tensor mask = rand_tensor({Sq, 19}, g, -2, 2);
  std::vector<int64_t> offs = {8, 3};
  for (int qk_mode : {0, 2, 3}) {
    cpu::ops2::AttnArgs a;
    a.B = B, a.Hq = Hq, a.Hkv = Hkv, a.Sq = Sq, a.T = T, a.D = D, a.Dv = Dv;
    a.q = q.data<float>(), a.k = k.data<float>(), a.v = v.data<float>();
    a.scale = 0.3f, a.softcap = 2.5f;
    a.mask = mask.data<float>(), a.ms[0] = 0, a.ms[1] = 0, a.ms[2] = 19, a.mask_len = 19;
    a.causal = true, a.causal_offset = offs.data();
    a.qk_mode = qk_mode;
    Tensor y1(DType::Float32, {B, Hq, Sq, Dv}), y2(DType::Float32, {B, Hq, Sq, Dv});
    Tensor s1(DType::Float32, {B, Hq, Sq, T}), s2(DType::Float32, {B, Hq, Sq, T});
    a.y = y1.data<float>(), a.qk_out = s1.data<float>();
    cpu::ops2::attention_ref(a);
    a.y = y2.data<float>(), a.qk_out = s2.data<float>();
    cpu::ops2::attention_fast(a);
    // float32 vs double accumulation over D = 16 / T = 21 terms of magnitude <= 1: errors ~1e-6.
    for (int64_t i = 0; i < y1.numel(); ++i) ASSERT_NEAR(y1.data<float>()[i], y2.data<float>()[i], 2e-5) << i;
    for (int64_t i = 0; i < s1.numel(); ++i) {
      const float r = s1.data<float>()[i], f = s2.data<float>()[i];
      if (std::isinf(r)) ASSERT_EQ(r, f) << i;
      else ASSERT_NEAR(r, f, 2e-5) << "mode " << qk_mode << " at " << i;
    }
  }
}

// The op on 4-D GQA + causal inputs vs an independent naive computation written here.
TEST(Ops2Attention, GqaCausalMatchesNaive) {
  std::mt19937 g(11);
  const int64_t B = 2, Hq = 4, Hkv = 2, Sq = 5, S = 7, D = 8;
  Tensor q = rand_tensor({B, Hq, Sq, D}, g), k = rand_tensor({B, Hkv, S, D}, g), v = rand_tensor({B, Hkv, S, D}, g);
  Node n = make_node("Attention", {"q", "k", "v"});
  set_int(n, "is_causal", 1);
  auto out = run_op(n, 23, {&q, &k, &v});
  ASSERT_EQ(out[0].shape(), (Shape{B, Hq, Sq, D}));
  const double scale = 1.0 / std::sqrt((double)D);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / (Hq / Hkv);
      for (int64_t i = 0; i < Sq; ++i) {
        std::vector<double> p(S, 0.0);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= i && j < S; ++j) {  // causal, no past: keys 0..i
          double d = 0;
          for (int64_t c = 0; c < D; ++c) d += q.data<float>()[((b * Hq + h) * Sq + i) * D + c] * k.data<float>()[((b * Hkv + hk) * S + j) * D + c];
          p[j] = d * scale;
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = 0; j <= i && j < S; ++j) { p[j] = std::exp(p[j] - mx); sum += p[j]; }
        for (int64_t c = 0; c < D; ++c) {
          double y = 0;
          for (int64_t j = 0; j <= i && j < S; ++j) y += p[j] / sum * v.data<float>()[((b * Hkv + hk) * S + j) * D + c];
          ASSERT_NEAR(out[0].data<float>()[((b * Hq + h) * Sq + i) * D + c], y, 1e-5) << b << " " << h << " " << i << " " << c;
        }
      }
    }
}

TEST(Ops2Attention, InferSymbolic3dWithPast) {
  Node n = make_node("Attention", {"q", "k", "v", "", "pk", "pv"}, 4);
  set_int(n, "q_num_heads", 9);
  set_int(n, "kv_num_heads", 3);
  auto k = kernel(n, 23);
  TensorType q = typ(DType::Float32, {Dim::sym("batch"), Dim::sym("seq"), Dim::of(72)});
  TensorType kk = typ(DType::Float32, {Dim::sym("batch"), Dim::of(6), Dim::of(24)});
  TensorType vv = typ(DType::Float32, {Dim::sym("batch"), Dim::of(6), Dim::of(30)});
  TensorType pk = typ(DType::Float32, {Dim::sym("batch"), Dim::of(3), Dim::of(12), Dim::of(8)});
  TensorType pv = typ(DType::Float32, {Dim::sym("batch"), Dim::of(3), Dim::of(12), Dim::of(10)});
  InferContext ctx(n, {&q, &kk, &vv, nullptr, &pk, &pv}, {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr});
  k->infer(ctx);
  EXPECT_EQ(ctx.output(0).str(), "float32[batch, seq, 90]");
  EXPECT_EQ(ctx.output(1).str(), "float32[batch, 3, 18, 8]");
  EXPECT_EQ(ctx.output(2).str(), "float32[batch, 3, 18, 10]");
  EXPECT_EQ(ctx.output(3).str(), "float32[batch, 9, seq, 18]");
}

TEST(Ops2Attention, BadHeadsNameTheNode) {
  std::mt19937 g(1);
  Tensor q = rand_tensor({1, 5, 2, 4}, g), k = rand_tensor({1, 2, 3, 4}, g), v = rand_tensor({1, 2, 3, 4}, g);
  Node n = make_node("Attention", {"q", "k", "v"});
  try {
    run_op(n, 23, {&q, &k, &v});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("t_Attention"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("multiple of kv heads"), std::string::npos) << e.what();
  }
  Node n3 = make_node("Attention", {"q", "k", "v"});  // 3-D without head counts
  Tensor q3 = rand_tensor({1, 2, 8}, g), k3 = rand_tensor({1, 3, 8}, g), v3 = rand_tensor({1, 3, 8}, g);
  EXPECT_THROW(run_op(n3, 23, {&q3, &k3, &v3}), Error);
}

// ViT-Base attention size (12 heads, S = 197, d = 64): fast kernel agrees with the reference and
// the time is reported (not asserted: the machine is shared).
TEST(Ops2Attention, VitSizeFast) {
  std::mt19937 g(3);
  const int64_t H = 12, S = 197, D = 64;
  Tensor q = rand_tensor({1, H, S, D}, g), k = rand_tensor({1, H, S, D}, g), v = rand_tensor({1, H, S, D}, g);
  cpu::ops2::AttnArgs a;
  a.B = 1, a.Hq = H, a.Hkv = H, a.Sq = S, a.T = S, a.D = D, a.Dv = D;
  a.q = q.data<float>(), a.k = k.data<float>(), a.v = v.data<float>();
  a.scale = 0.125f;
  Tensor y1(DType::Float32, {1, H, S, D}), y2(DType::Float32, {1, H, S, D});
  a.y = y1.data<float>();
  auto t0 = std::chrono::steady_clock::now();
  cpu::ops2::attention_ref(a);
  auto t1 = std::chrono::steady_clock::now();
  a.y = y2.data<float>();
  cpu::ops2::attention_fast(a);
  auto t2 = std::chrono::steady_clock::now();
  for (int reps = 0; reps < 4; ++reps) cpu::ops2::attention_fast(a);
  auto t3 = std::chrono::steady_clock::now();
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf("attention 12x197x64: reference %.1f ms, fast %.2f ms (first), %.2f ms (mean of 4)\n", ms(t1 - t0), ms(t2 - t1), ms(t3 - t2) / 4);
  // 64-term float dot products of values in [-1, 1], scale 0.125: absolute error well under 1e-5.
  for (int64_t i = 0; i < y1.numel(); ++i) ASSERT_NEAR(y1.data<float>()[i], y2.data<float>()[i], 1e-5) << i;
}

// ---- LSTM -----------------------------------------------------------------------------------

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// One input feature, one hidden unit, two steps, hand-written gate arithmetic.
// W (i, o, f, c) = (0.5, -0.3, 0.2, 0.7), R = (0.1, 0.2, -0.4, 0.3), Wb = (0.05, 0, 0, -0.1), Rb = 0.
TEST(Ops2Lstm, TinyHandChecked) {
  Tensor x(DType::Float32, {2, 1, 1});
  x.data<float>()[0] = 1.0f, x.data<float>()[1] = -2.0f;
  Tensor w(DType::Float32, {1, 4, 1}), r(DType::Float32, {1, 4, 1}), b(DType::Float32, {1, 8});
  const float W[4] = {0.5f, -0.3f, 0.2f, 0.7f}, R[4] = {0.1f, 0.2f, -0.4f, 0.3f}, Wb[4] = {0.05f, 0, 0, -0.1f};
  for (int i = 0; i < 4; ++i) w.data<float>()[i] = W[i], r.data<float>()[i] = R[i], b.data<float>()[i] = Wb[i];
  Node n = make_node("LSTM", {"x", "w", "r", "b"}, 3);
  set_int(n, "hidden_size", 1);
  auto out = run_op(n, 14, {&x, &w, &r, &b});
  ASSERT_EQ(out[0].shape(), (Shape{2, 1, 1, 1}));
  ASSERT_EQ(out[1].shape(), (Shape{1, 1, 1}));
  double h = 0, c = 0;
  double expect_y[2];
  for (int t = 0; t < 2; ++t) {
    const double xt = x.data<float>()[t];
    const double i = sig(W[0] * xt + R[0] * h + Wb[0]);
    const double o = sig(W[1] * xt + R[1] * h + Wb[1]);
    const double f = sig(W[2] * xt + R[2] * h + Wb[2]);
    const double g = std::tanh(W[3] * xt + R[3] * h + Wb[3]);
    c = f * c + i * g;
    h = o * std::tanh(c);
    expect_y[t] = h;
  }
  // Step 1 by hand: i = sig(0.55) = 0.63413, o = sig(-0.3) = 0.42556, f = sig(0.2) = 0.54983,
  // g = tanh(0.6) = 0.53705 -> c = 0.34056, h = 0.42556 * tanh(0.34056) = 0.13957.
  EXPECT_NEAR(expect_y[0], 0.13957, 1e-5);
  EXPECT_NEAR(out[0].data<float>()[0], expect_y[0], 1e-6);
  EXPECT_NEAR(out[0].data<float>()[1], expect_y[1], 1e-6);
  EXPECT_NEAR(out[1].data<float>()[0], expect_y[1], 1e-6);
  EXPECT_NEAR(out[2].data<float>()[0], c, 1e-6);
}

// Reverse direction with sequence_lens: batch 1 has length 1, so only its first step runs and
// its Y rows beyond that stay zero.
TEST(Ops2Lstm, ReverseWithSequenceLens) {
  Tensor x(DType::Float32, {3, 2, 1});
  for (int i = 0; i < 6; ++i) x.data<float>()[i] = 0.5f * (float)(i + 1);
  Tensor w(DType::Float32, {1, 4, 1}), r(DType::Float32, {1, 4, 1});
  for (int i = 0; i < 4; ++i) w.data<float>()[i] = 0.3f, r.data<float>()[i] = -0.2f;
  Tensor lens(DType::Int32, {2});
  lens.data<int32_t>()[0] = 3, lens.data<int32_t>()[1] = 1;
  Node n = make_node("LSTM", {"x", "w", "r", "", "lens"}, 2);
  set_int(n, "hidden_size", 1);
  Node* np = &n;
  Attribute dir;
  dir.kind = Attribute::String;
  dir.s = "reverse";
  np->attrs["direction"] = dir;
  auto out = run_op(n, 14, {&x, &w, &r, nullptr, &lens});
  // Batch 1: single step on x[0, 1] from zero state.
  const double x1 = x.data<float>()[1];
  const double i = sig(0.3 * x1), f = sig(0.3 * x1), o = sig(0.3 * x1), g = std::tanh(0.3 * x1);
  (void)f;
  const double c = i * g, h = o * std::tanh(c);
  EXPECT_NEAR(out[0].data<float>()[1], h, 1e-6);       // Y[t=0, d=0, b=1]
  EXPECT_EQ(out[0].data<float>()[3], 0.f);             // Y[t=1, d=0, b=1]
  EXPECT_EQ(out[0].data<float>()[5], 0.f);             // Y[t=2, d=0, b=1]
  EXPECT_NEAR(out[1].data<float>()[1], h, 1e-6);       // Y_h[b=1]
  // Batch 0 (reverse, full length): Y_h is the state after t = 0, which is Y[0, 0, 0].
  EXPECT_EQ(out[1].data<float>()[0], out[0].data<float>()[0]);
}

// ---- Losses ---------------------------------------------------------------------------------

TEST(Ops2Loss, NllMeanWeightedIgnore) {
  Tensor x(DType::Float32, {3, 2});
  const float xv[6] = {-0.1f, -2.0f, -1.5f, -0.3f, -0.7f, -0.9f};
  std::copy(xv, xv + 6, x.data<float>());
  Tensor t(DType::Int64, {3});
  t.data<int64_t>()[0] = 0, t.data<int64_t>()[1] = 1, t.data<int64_t>()[2] = 1;
  Tensor w(DType::Float32, {2});
  w.data<float>()[0] = 2.f, w.data<float>()[1] = 0.5f;
  Node n = make_node("NegativeLogLikelihoodLoss", {"x", "t", "w"});
  set_int(n, "ignore_index", 1);
  auto out = run_op(n, 13, {&x, &t, &w});
  ASSERT_EQ(out[0].rank(), 0);
  // Only element 0 counts: loss 0.1 * 2, divided by weight 2.
  EXPECT_NEAR(out[0].data<float>()[0], 0.1f, 1e-6);
  t.data<int64_t>()[0] = 2;  // out of range and not ignored
  EXPECT_THROW(run_op(n, 13, {&x, &t, &w}), Error);
}

}  // namespace
}  // namespace kiln
