// Weights left in the mapped model file (load_onnx_file's defer_weights, on for Session::load): aligned ones are
// borrowed, unaligned ones deferred until the kernels that pack them copy them out (core/staging.h). A session so
// loaded computes exactly what one loaded from bytes (every weight copied) does, on its first run, after the
// originals were released, and for a new shape; weights that other ops read as values are copied out at load.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/staging.h"
#include "kiln/session.h"
#include "onnx/loader.h"
#include "onnx_build.h"
#include "test_util.h"

using namespace kiln;
using namespace kiln::testing_util;
using namespace kiln::testing_onnx;

namespace {

// x [N, 32, 8, 8] -> Conv (64x32x3x3) -> Relu -> GlobalAveragePool -> Flatten -> m = MatMul [64, 384]
//   -> y = Gemm (transB, [80, 384]) [N, 80]; y2 = Relu(m) @ w_shared [384, 80]; z = Relu(w_shared): one weight with
// a reader that packs it and one that reads its values. Names of several lengths put the weights' bytes at
// different alignments in the file.
std::string make_model() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("deferred");
  set_float_type(g->add_input(), "x", {"N", "32", "8", "8"});
  set_float_type(g->add_output(), "y", {"N", "80"});
  set_float_type(g->add_output(), "y2", {"N", "80"});
  set_float_type(g->add_output(), "z", {"384", "80"});
  add_float_init(g, "w_conv", uniform_tensor({64, 32, 3, 3}, 1));  // 72 KiB
  add_float_init(g, "b_conv", uniform_tensor({64}, 2));
  add_float_init(g, "w_mm1", uniform_tensor({64, 384}, 3));        // 96 KiB
  add_float_init(g, "w_gemm12", uniform_tensor({80, 384}, 4));     // 120 KiB
  add_float_init(g, "b_gemm", uniform_tensor({80}, 5));
  add_float_init(g, "w_shared123", uniform_tensor({384, 80}, 6));  // 120 KiB
  auto* conv = add_node(g, "Conv", {"x", "w_conv", "b_conv"}, {"c"});
  add_ints(conv, "pads", {1, 1, 1, 1});
  add_ints(conv, "kernel_shape", {3, 3});
  add_node(g, "Relu", {"c"}, {"r"});
  add_node(g, "GlobalAveragePool", {"r"}, {"p"});
  add_node(g, "Flatten", {"p"}, {"f"});
  add_node(g, "MatMul", {"f", "w_mm1"}, {"m"});
  auto* tb = add_node(g, "Gemm", {"m", "w_gemm12", "b_gemm"}, {"y"})->add_attribute();
  tb->set_name("transB");
  tb->set_type(onnx::AttributeProto::INT);
  tb->set_i(1);
  add_node(g, "Relu", {"m"}, {"mr"});
  add_node(g, "MatMul", {"mr", "w_shared123"}, {"y2"});
  add_node(g, "Relu", {"w_shared123"}, {"z"});
  return m.SerializeAsString();
}

std::string write_model(const TempDir& dir, const std::string& bytes) {
  const std::string path = dir / "model.onnx";
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::vector<Tensor> run(Session& s, const Tensor& x) {
  std::vector<Tensor> out;
  Status st = s.run({{"x", x}}, &out);
  EXPECT_TRUE(st.ok()) << st.message();
  return out;
}

}  // namespace

TEST(DeferredWeights, LoaderLeavesLargeWeightsInTheFile) {
  const std::string bytes = make_model();
  TempDir dir;
  const std::string path = write_model(dir, bytes);
  auto copied = load_onnx_file(path, false);
  auto left = load_onnx_file(path, true);
  int deferred = 0, borrowed = 0;
  for (auto& [name, t] : left->initializers) {
    const Tensor& c = copied->initializers.at(name);
    ASSERT_FALSE(c.is_deferred());
    ASSERT_EQ(t.shape(), c.shape());
    if (t.nbytes() < 64 * 1024) {
      EXPECT_FALSE(t.is_deferred()) << name << ": small weights are copied";
      continue;
    }
    if (t.is_deferred()) {
      ++deferred;
      EXPECT_EQ(t.raw(), nullptr);
      EXPECT_NE(reinterpret_cast<uintptr_t>(t.source()) % 4, 0u) << name << ": only unaligned weights are deferred";
      // Copied out: as its own tensor, through a staging scope's buffers, and without one.
      EXPECT_EQ(0, std::memcmp(t.materialized().raw(), c.raw(), c.nbytes())) << name;
      {
        StagingScope scope;
        Tensor s = staged_copy(t);
        ASSERT_NE(s.raw(), nullptr);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(s.raw()) % 64, 0u);
        EXPECT_EQ(0, std::memcmp(s.raw(), c.raw(), c.nbytes())) << name;
      }
      EXPECT_EQ(0, std::memcmp(staged_copy(t).raw(), c.raw(), c.nbytes())) << name;
      // Its pages were dropped while being copied: they are read again from the file.
      EXPECT_EQ(0, std::memcmp(t.materialized().raw(), c.raw(), c.nbytes())) << name;
    } else {
      ++borrowed;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 4, 0u);
      EXPECT_EQ(0, std::memcmp(t.raw(), c.raw(), c.nbytes())) << name;
    }
  }
  // The names' lengths place at least one of the four large weights unaligned (the test model is fixed).
  EXPECT_GE(deferred, 1);
  EXPECT_EQ(deferred + borrowed, 4);
  left.reset();  // the mapping goes with the last weight holding it
}

TEST(DeferredWeights, SessionMatchesOneWithCopiedWeights) {
  const std::string bytes = make_model();
  TempDir dir;
  const std::string path = write_model(dir, bytes);
  for (int threads : {1, 2}) {
    SessionOptions opt;
    opt.threads = threads;
    std::unique_ptr<Session> from_file, from_bytes;
    ASSERT_TRUE(Session::load(path, opt, &from_file).ok());
    ASSERT_TRUE(Session::load_from_bytes(bytes, ".", opt, &from_bytes).ok());
    EXPECT_GT(from_file->stats().deferred_weight_bytes, 0u) << "the test needs an unaligned weight";
    EXPECT_EQ(from_bytes->stats().deferred_weight_bytes, 0u);
    // w_shared123 is read by a Relu too: it must have been copied out, and z must be its Relu.
    const Tensor x1 = uniform_tensor({1, 32, 8, 8}, 7), x3 = uniform_tensor({3, 32, 8, 8}, 8);
    auto a = run(*from_file, x1), b = run(*from_bytes, x1);
    expect_bit_identical(a, b);
    const Tensor w = uniform_tensor({384, 80}, 6);
    for (int64_t i = 0; i < w.numel(); ++i) ASSERT_EQ(a[2].data<float>()[i], std::max(0.f, w.data<float>()[i]));
    // Second run: the packed weights have replaced the originals.
    expect_bit_identical(run(*from_file, x1), run(*from_bytes, x1));
    EXPECT_GT(from_file->stats().released_weight_bytes, 0u);
    // A new batch size: primitives made again from the packed copies.
    expect_bit_identical(run(*from_file, x3), run(*from_bytes, x3));
  }
}
