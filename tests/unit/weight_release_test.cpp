// Freeing initializers the kernels keep in prepared form (Plan::enable_constant_release, Kernel::owns_constant):
// the freed graph computes exactly what the original does, for the shapes it first ran with and for new ones
// (whose primitives are made from the kept copies), weights read by another kernel stay, and the kept copies can be
// written back in ONNX's layout (the reference kernels' fallback).
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "backends/cpu/conv_dnnl.h"
#include "backends/cpu/deconv_gemm.h"
#include "backends/cpu/mm_dnnl.h"
#include "runtime/plan.h"
#include "test_util.h"

using namespace kiln;
using namespace kiln::testing_util;

namespace {

Attribute aint(int64_t v) { Attribute a; a.kind = Attribute::Int; a.i = v; return a; }
Attribute aints(std::vector<int64_t> v) { Attribute a; a.kind = Attribute::Ints; a.ints = std::move(v); return a; }

Node node(const std::string& op, std::vector<std::string> ins, std::string out, std::map<std::string, Attribute> attrs = {}) {
  Node n;
  n.name = out + "_node";
  n.op_type = op;
  n.inputs = std::move(ins);
  n.outputs = {std::move(out)};
  n.attrs = std::move(attrs);
  return n;
}

// x [N, 32, H, W] -> Conv(64, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> MatMul [64, 96]
//   -> Gemm(transB, [80, 96]) -> y [N, 80]; plus `extra`: a weight read by a Conv and by an Add.
Graph make_graph(bool shared_weight) {
  Graph g;
  g.opsets[""] = 17;
  g.name = "release";
  g.inputs.push_back({"x", TensorType{DType::Float32, true, {Dim::sym("N"), Dim::of(32), Dim::sym("H"), Dim::sym("W")}}});
  g.initializers["w_conv"] = uniform_tensor({64, 32, 3, 3}, 1);   // 72 KiB
  g.initializers["b_conv"] = uniform_tensor({64}, 2);
  g.initializers["w_mm"] = uniform_tensor({64, 96}, 3);           // 24 KiB
  g.initializers["w_gemm"] = uniform_tensor({80, 96}, 4);         // 30 KiB
  g.initializers["b_gemm"] = uniform_tensor({80}, 5);
  g.nodes.push_back(node("Conv", {"x", "w_conv", "b_conv"}, "c", {{"pads", aints({1, 1, 1, 1})}, {"kernel_shape", aints({3, 3})}}));
  g.nodes.push_back(node("Relu", {"c"}, "r"));
  g.nodes.push_back(node("GlobalAveragePool", {"r"}, "p"));
  g.nodes.push_back(node("Flatten", {"p"}, "f", {{"axis", aint(1)}}));
  g.nodes.push_back(node("MatMul", {"f", "w_mm"}, "m"));
  g.nodes.push_back(node("Gemm", {"m", "w_gemm", "b_gemm"}, "y", {{"transB", aint(1)}}));
  g.outputs.push_back({"y", TensorType{}});
  if (shared_weight) {
    // The Add reads w_mm's values on every run: it must never be freed.
    g.initializers["bias_like"] = uniform_tensor({64, 96}, 6);
    g.nodes.push_back(node("Add", {"w_mm", "bias_like"}, "z"));
    g.outputs.push_back({"z", TensorType{}});
  }
  return g;
}

std::vector<Tensor> run(Plan& plan, const Tensor& x) { return plan.run({&x}); }

}  // namespace

TEST(WeightRelease, FreesPreparedWeightsAndKeepsResults) {
  Graph ref_g = make_graph(false), g = make_graph(false);
  Plan ref(ref_g, 2), plan(g, 2);
  plan.enable_constant_release(g);
  const Tensor x1 = uniform_tensor({1, 32, 12, 10}, 7), x2 = uniform_tensor({2, 32, 7, 9}, 8);

  expect_bit_identical(run(plan, x1), run(ref, x1));
  const size_t expected = (64 * 32 * 9 + 64 * 96 + 80 * 96) * sizeof(float);
  EXPECT_EQ(plan.released_bytes(), expected);
  EXPECT_EQ(g.initializers.at("w_conv").raw(), nullptr);
  EXPECT_EQ(g.initializers.at("w_mm").raw(), nullptr);
  EXPECT_EQ(g.initializers.at("w_gemm").raw(), nullptr);
  EXPECT_EQ(g.initializers.at("w_conv").shape(), (Shape{64, 32, 3, 3}));  // type kept for later shape plans
  EXPECT_NE(g.initializers.at("b_conv").raw(), nullptr);                 // small constants stay
  EXPECT_NE(ref_g.initializers.at("w_conv").raw(), nullptr);              // release is opt-in

  // Later runs of the same shapes, and new shapes planned after the originals are gone.
  expect_bit_identical(run(plan, x1), run(ref, x1));
  expect_bit_identical(run(plan, x2), run(ref, x2));
  expect_bit_identical(run(plan, x1), run(ref, x1));
  EXPECT_EQ(plan.released_bytes(), expected);
}

TEST(WeightRelease, KeepsWeightsOtherKernelsRead) {
  Graph ref_g = make_graph(true), g = make_graph(true);
  Plan ref(ref_g, 2), plan(g, 2);
  plan.enable_constant_release(g);
  const Tensor x = uniform_tensor({1, 32, 8, 8}, 9);
  expect_bit_identical(run(plan, x), run(ref, x));
  expect_bit_identical(run(plan, x), run(ref, x));
  EXPECT_NE(g.initializers.at("w_mm").raw(), nullptr);   // also read by the Add
  EXPECT_EQ(g.initializers.at("w_conv").raw(), nullptr);
}

TEST(WeightRelease, ConvUnpacksKeptWeights) {
  cpu::ConvParams p;
  p.nsp = 2;
  p.N = 1; p.C = 8; p.M = 12; p.G = 2;
  p.in = {1, 9, 9}; p.k = {1, 3, 3}; p.out = {1, 9, 9}; p.pad_l = {0, 1, 1}; p.pad_r = {0, 1, 1};
  const Tensor x = uniform_tensor({1, 8, 9, 9}, 10), w = uniform_tensor({12, 4, 3, 3}, 11);
  Tensor y(DType::Float32, {1, 12, 9, 9}), y2(DType::Float32, {1, 12, 9, 9});
  cpu::DnnlConv dc;
  EXPECT_FALSE(dc.holds_weights());
  ASSERT_TRUE(dc.run(p, x.data<float>(), w.data<float>(), nullptr, y.data<float>(), true));
  ASSERT_TRUE(dc.holds_weights());
  Tensor back(DType::Float32, w.shape());
  ASSERT_TRUE(dc.unpack_weights(p, back.data<float>()));
  EXPECT_EQ(0, std::memcmp(back.raw(), w.raw(), w.nbytes()));
  // No original at all: the kept copy serves the call.
  ASSERT_TRUE(dc.run(p, x.data<float>(), nullptr, nullptr, y2.data<float>(), true));
  EXPECT_EQ(0, std::memcmp(y.raw(), y2.raw(), y.nbytes()));
}

// ConvTranspose with kernel == stride keeps its weights in the matrix product's layout (cpu::GemmDeconv, for outputs
// of >= 4M elements): the W initializer is freed after the first run, and new shapes still compute what the original
// graph does, also a small one that oneDNN takes (it gets the weights back from GemmDeconv's copy); the kept copy
// unpacks to ONNX's layout exactly.
TEST(WeightRelease, KernelEqualsStrideTransposeKeepsItsWeights) {
  auto make = [] {
    Graph g;
    g.opsets[""] = 17;
    g.name = "upsample";
    g.inputs.push_back({"x", TensorType{DType::Float32, true, {Dim::sym("N"), Dim::of(32), Dim::sym("H"), Dim::sym("W")}}});
    g.initializers["w_up"] = uniform_tensor({32, 64, 2, 2}, 30);  // 32 KiB
    g.initializers["b_up"] = uniform_tensor({64}, 31);
    g.nodes.push_back(node("ConvTranspose", {"x", "w_up", "b_up"}, "y", {{"strides", aints({2, 2})}}));
    g.outputs.push_back({"y", TensorType{}});
    return g;
  };
  Graph ref_g = make(), g = make();
  Plan ref(ref_g, 2), plan(g, 2);
  plan.enable_constant_release(g);
  // x1: 64 x 256 x 256 outputs (GemmDeconv); x2: a small batch of 2 (oneDNN).
  const Tensor x1 = uniform_tensor({1, 32, 128, 128}, 32), x2 = uniform_tensor({2, 32, 7, 9}, 33);
  expect_bit_identical(run(plan, x1), run(ref, x1));
  EXPECT_EQ(g.initializers.at("w_up").raw(), nullptr);
  EXPECT_EQ(plan.released_bytes(), 32 * 64 * 4 * sizeof(float));
  expect_bit_identical(run(plan, x2), run(ref, x2));
  expect_bit_identical(run(plan, x1), run(ref, x1));
  expect_bit_identical(run(plan, x2), run(ref, x2));

  cpu::ConvParams p;
  p.nsp = 2;
  p.transpose = true;
  p.N = 1; p.C = 6; p.M = 5;
  p.in = {1, 3, 4}; p.k = {1, 2, 3}; p.stride = {1, 2, 3}; p.out = {1, 6, 12};
  const Tensor w = uniform_tensor({6, 5, 2, 3}, 34);
  cpu::GemmDeconv gd;
  ASSERT_TRUE(cpu::GemmDeconv::applies(p));
  EXPECT_FALSE(gd.holds_weights());
  gd.pack(p, w.data<float>());
  ASSERT_TRUE(gd.holds_weights());
  Tensor back(DType::Float32, w.shape());
  gd.unpack(p, back.data<float>());
  EXPECT_EQ(0, std::memcmp(back.raw(), w.raw(), w.nbytes()));
}

TEST(WeightRelease, MatmulUnpacksKeptWeights) {
  for (bool tb : {false, true}) {
    const int64_t M = 5, K = 64, N = 48;
    const Tensor a = uniform_tensor({M, K}, 12), b = uniform_tensor(tb ? Shape{N, K} : Shape{K, N}, 13);
    Tensor y(DType::Float32, {M, N}), y2(DType::Float32, {M, N});
    mm::MatmulCache cache;
    mm::MatmulCall c;
    c.a = a.data<float>(); c.as = {M, K};
    c.b = b.data<float>(); c.bs = {K, N}; c.trans_b = tb; c.b_const = true;
    c.y = y.data<float>(); c.ys = {M, N};
    ASSERT_TRUE(cache.run(c));
    if (!cache.holds_weights()) continue;  // oneDNN kept B in place: nothing was copied, nothing to free
    Tensor back(DType::Float32, b.shape());
    ASSERT_TRUE(cache.unpack_b(K, N, tb, back.data<float>()));
    EXPECT_EQ(0, std::memcmp(back.raw(), b.raw(), b.nbytes())) << "trans_b " << tb;
    c.b = nullptr;
    c.y = y2.data<float>();
    ASSERT_TRUE(cache.run(c));
    EXPECT_EQ(0, std::memcmp(y.raw(), y2.raw(), y.nbytes())) << "trans_b " << tb;
  }
}

// One arena for every shape plan of a session, and for sessions that share it: grown to the largest plan, results
// unchanged.
TEST(Arena, SharedByShapePlansAndSessions) {
  Graph g1 = make_graph(false), g2 = make_graph(false), ref_g = make_graph(false);
  auto arena = std::make_shared<Arena>();
  Plan p1(g1, 2), p2(g2, 2);
  p1.set_arena(arena);
  p2.set_arena(arena);
  // The reference is a fresh plan each time, so it runs the kernels a first run of a shape takes, as p1 and p2 do
  // below (for `big` the Conv switches to Winograd from its second call on, see DnnlConv).
  auto reference = [&](const Tensor& x) {
    Plan ref(ref_g, 2);
    return run(ref, x);
  };
  const Tensor small = uniform_tensor({1, 32, 6, 5}, 20), big = uniform_tensor({2, 32, 16, 12}, 21);
  expect_bit_identical(run(p1, small), reference(small));
  const size_t after_small = arena->capacity();
  EXPECT_EQ(after_small, p1.last_arena_bytes());
  expect_bit_identical(run(p2, big), reference(big));
  const size_t after_big = arena->capacity();
  EXPECT_GT(after_big, after_small);
  EXPECT_EQ(after_big, p2.last_arena_bytes());
  // Back to the small plan on the first session: the larger buffer is reused, not replaced.
  expect_bit_identical(run(p1, small), reference(small));
  expect_bit_identical(run(p1, big), reference(big));
  expect_bit_identical(run(p2, small), reference(small));
  EXPECT_EQ(arena->capacity(), after_big);
}
