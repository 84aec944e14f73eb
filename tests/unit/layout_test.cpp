// The planner's channels-last propagation must not change results: the same model runs with layouts planned
// (default) and with KILN_LAYOUT=plain, and the outputs agree to float32 summation-order noise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "kiln/session.h"
#include "kiln_proto/onnx.pb.h"
#include "onnx_build.h"

using namespace kiln;
using kiln::testing_onnx::add_ints;
using kiln::testing_onnx::add_node;

namespace {

onnx::TensorProto* add_init(onnx::GraphProto* g, const std::string& name, std::vector<int64_t> dims, std::mt19937& rng,
                            float scale = 0.2f) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(1);
  int64_t n = 1;
  for (auto d : dims) { t->add_dims(d); n *= d; }
  std::normal_distribution<float> nd(0.f, scale);
  for (int64_t i = 0; i < n; ++i) t->add_float_data(nd(rng));
  return t;
}

void io(onnx::ValueInfoProto* v, const std::string& name) {
  v->set_name(name);
  v->mutable_type()->mutable_tensor_type()->set_elem_type(1);
}

// conv -> relu -> conv -> add(residual) -> maxpool -> [1x1 conv] -> concat -> batchnorm -> instancenorm -> leakyrelu
//   -> global average pool -> flatten (output y);  mul(concat, per-channel scale) is a second, 4-D output.
std::string residual_model() {
  std::mt19937 rng(7);
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("layout");
  io(g->add_input(), "x");
  io(g->add_output(), "y");
  io(g->add_output(), "z");
  add_init(g, "w1", {8, 8, 3, 3}, rng);
  add_init(g, "b1", {8}, rng);
  add_init(g, "w2", {8, 8, 3, 3}, rng);
  add_init(g, "w3", {8, 8, 1, 1}, rng);
  add_init(g, "s", {16}, rng, 1.0f);
  add_init(g, "bias", {16}, rng, 1.0f);
  add_init(g, "k", {1, 16, 1, 1}, rng, 1.0f);
  add_init(g, "bn_scale", {16}, rng, 1.0f);
  add_init(g, "bn_b", {16}, rng, 1.0f);
  add_init(g, "bn_mean", {16}, rng, 1.0f);
  auto* var = add_init(g, "bn_var", {16}, rng, 1.0f);
  for (int i = 0; i < var->float_data_size(); ++i) var->set_float_data(i, 0.5f + std::fabs(var->float_data(i)));
  add_ints(add_node(g, "Conv", {"x", "w1", "b1"}, {"c1"}), "pads", {1, 1, 1, 1});
  add_node(g, "Relu", {"c1"}, {"r1"});
  add_ints(add_node(g, "Conv", {"r1", "w2"}, {"c2"}), "pads", {1, 1, 1, 1});
  add_node(g, "Add", {"c2", "r1"}, {"a"});
  auto* mp = add_node(g, "MaxPool", {"a"}, {"m"});
  add_ints(mp, "kernel_shape", {2, 2});
  add_ints(mp, "strides", {2, 2});
  add_node(g, "Conv", {"m", "w3"}, {"c3"});
  auto* cat = add_node(g, "Concat", {"m", "c3"}, {"cat"});
  auto* ax = cat->add_attribute();
  ax->set_name("axis");
  ax->set_type(onnx::AttributeProto::INT);
  ax->set_i(1);
  add_node(g, "BatchNormalization", {"cat", "bn_scale", "bn_b", "bn_mean", "bn_var"}, {"bn"});
  add_node(g, "InstanceNormalization", {"bn", "s", "bias"}, {"in"});
  add_node(g, "LeakyRelu", {"in"}, {"lr"});
  add_node(g, "GlobalAveragePool", {"lr"}, {"gap"});
  add_node(g, "Flatten", {"gap"}, {"y"});
  add_node(g, "Mul", {"cat", "k"}, {"z"});
  return m.SerializeAsString();
}

std::vector<Tensor> run_with(const std::string& model, const Tensor& x, bool plain, RunStats* stats) {
  if (plain) setenv("KILN_LAYOUT", "plain", 1);
  std::unique_ptr<Session> s;
  SessionOptions opt;
  opt.threads = 2;
  Status st = Session::load_from_bytes(model, ".", opt, &s);
  unsetenv("KILN_LAYOUT");
  EXPECT_TRUE(st.ok()) << st.message();
  std::vector<Tensor> out;
  st = s->run({{"x", x}}, &out);
  EXPECT_TRUE(st.ok()) << st.message();
  *stats = s->stats();
  return out;
}

}  // namespace

TEST(Layout, ChannelsLastPlanMatchesPlainPlan) {
  std::string model = residual_model();
  Tensor x(DType::Float32, {2, 8, 12, 12});
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = nd(rng);
  RunStats plain_stats, cl_stats;
  auto want = run_with(model, x, true, &plain_stats);
  auto got = run_with(model, x, false, &cl_stats);
  EXPECT_EQ(plain_stats.channels_last_steps, 0);
  EXPECT_EQ(plain_stats.layout_conversions, 0);
  // Everything up to the global pooling stays channels-last: 3 convolutions (the residual Add fused into the
  // second; the ReLU stays separate, its output has two readers), ReLU, MaxPool, Concat, BatchNorm,
  // InstanceNorm (the LeakyReLU after it fused in) and Mul.
  EXPECT_EQ(cl_stats.channels_last_steps, 9) << "steps " << cl_stats.steps;
  // Two conversions: x into channels-last before the first convolution, and z (a 4-D graph output) back to
  // plain; y comes out of global pooling, the same bytes in both layouts.
  EXPECT_EQ(cl_stats.layout_conversions, 2);
  ASSERT_EQ(got.size(), want.size());
  for (size_t o = 0; o < got.size(); ++o) {
    ASSERT_EQ(got[o].shape(), want[o].shape());
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < got[o].numel(); ++i) {
      worst = std::max(worst, (double)std::fabs(got[o].data<float>()[i] - want[o].data<float>()[i]));
      scale = std::max(scale, (double)std::fabs(want[o].data<float>()[i]));
    }
    // Different convolution kernels sum in different orders: float32 noise, far below any real error.
    EXPECT_LE(worst, 1e-5 * std::max(1.0, scale)) << "output " << o;
  }
}

// Global pooling of a large channels-last tensor splits the positions between threads and combines the partial
// results; it must agree with the plain kernel (one sum per channel) for average and max, with a channel count
// that is not a multiple of the vector width.
TEST(Layout, ChannelsLastGlobalPoolingMatchesPlain) {
  std::mt19937 rng(5);
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("gap");
  io(g->add_input(), "x");
  io(g->add_output(), "avg");
  io(g->add_output(), "max");
  add_init(g, "w", {40, 8, 1, 1}, rng);
  add_node(g, "Conv", {"x", "w"}, {"c"});  // channels-last from here
  add_node(g, "GlobalAveragePool", {"c"}, {"avg"});
  add_node(g, "GlobalMaxPool", {"c"}, {"max"});
  const std::string model = m.SerializeAsString();
  // One large image (its positions split between the threads) and a batch of small ones (whole images shared out).
  for (const Shape& xs : {Shape{2, 8, 61, 59}, Shape{8, 8, 20, 20}}) {
    SCOPED_TRACE(shape_str(xs));
    Tensor x(DType::Float32, xs);
    std::normal_distribution<float> nd;
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = nd(rng) + 0.5f;
    RunStats plain_stats, cl_stats;
    auto want = run_with(model, x, true, &plain_stats);
    auto got = run_with(model, x, false, &cl_stats);
    EXPECT_GT(cl_stats.channels_last_steps, 0);
    ASSERT_EQ(got.size(), 2u);
    for (size_t o = 0; o < 2; ++o) {
      ASSERT_EQ(got[o].shape(), (Shape{xs[0], 40, 1, 1}));
      for (int64_t i = 0; i < got[o].numel(); ++i) {
        // Max is exact; the average differs only in summation order (float partial sums over 64 positions):
        // relative 1e-6 of values O(1) over 3599 positions.
        const double tol = o == 0 ? 1e-6 * std::max(1.0, (double)std::fabs(want[o].data<float>()[i])) : 0;
        EXPECT_NEAR(got[o].data<float>()[i], want[o].data<float>()[i], tol) << "output " << o << " element " << i;
      }
    }
  }
}
