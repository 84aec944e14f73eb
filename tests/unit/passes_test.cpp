// Graph passes (graph/passes): each pass on a small graph built here, checking the rewritten graph (node count, op
// types, post-op lists) and that the optimized graph computes the same outputs as the original on random inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>

#include "backends/cpu/conv_postops.h"
#include "graph/passes/passes.h"
#include "runtime/plan.h"

using namespace kiln;

namespace {

Attribute aint(int64_t v) { Attribute a; a.kind = Attribute::Int; a.i = v; return a; }
Attribute afloat(float v) { Attribute a; a.kind = Attribute::Float; a.f = v; return a; }
Attribute aints(std::vector<int64_t> v) { Attribute a; a.kind = Attribute::Ints; a.ints = std::move(v); return a; }
Attribute atensor(Tensor t) { Attribute a; a.kind = Attribute::TensorV; a.t = std::move(t); return a; }

Tensor rnd(const Shape& s, std::mt19937& rng, float lo = -1, float hi = 1) {
  Tensor t(DType::Float32, s);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}
Tensor scalar(float v) {
  Tensor t(DType::Float32, {});
  t.data<float>()[0] = v;
  return t;
}

struct G {
  Graph g;
  int counter = 0;
  G() { g.opsets[""] = 17; g.name = "test"; }
  void input(const std::string& name, const Shape& s) { g.inputs.push_back({name, TensorType::of(DType::Float32, s)}); }
  void output(const std::string& name) { g.outputs.push_back({name, TensorType{}}); }
  void init(const std::string& name, Tensor t) { g.initializers[name] = std::move(t); }
  std::string node(const std::string& op, std::vector<std::string> ins, std::map<std::string, Attribute> attrs = {},
                   std::string out = "") {
    Node n;
    n.name = op + std::to_string(counter++);
    n.op_type = op;
    n.inputs = std::move(ins);
    n.outputs = {out.empty() ? n.name + "_out" : out};
    n.attrs = std::move(attrs);
    g.nodes.push_back(n);
    return n.outputs[0];
  }
};

std::vector<Tensor> run_graph(const Graph& g, const std::vector<Tensor>& inputs) {
  Plan plan(g, 2);
  std::vector<const Tensor*> ptrs;
  for (auto& t : inputs) ptrs.push_back(&t);
  return plan.run(ptrs);
}

int count_op(const Graph& g, const std::string& op) {
  int c = 0;
  for (auto& n : g.nodes) c += n.op_type == op;
  return c;
}

// Element-wise |a - b| <= atol + rtol * |b|. The fused and unfused graphs run the same oneDNN convolution /
// matmul; they differ only in where the elementwise tail is evaluated: oneDNN's post-op (vectorised exp/tanh/erf
// approximations, accurate to a few float ulps) vs kiln's own elementwise kernels. 1e-5 relative + 1e-6 absolute
// (values here are O(1)) allows ~100 ulps; a wrong post-op (e.g. swapped alpha, missing bias) is off by >> 1e-3.
void expect_close(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-6) {
  ASSERT_EQ(a.shape(), b.shape());
  int bad = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double x = a.data<float>()[i], y = b.data<float>()[i];
    if (!(std::fabs(x - y) <= atol + rtol * std::fabs(y)) && bad++ < 5)
      ADD_FAILURE() << "element " << i << ": optimized " << x << " vs original " << y;
  }
}

// Optimizes a copy of g, and checks outputs agree; returns the optimized graph.
Graph optimize_and_compare(const Graph& g, const std::vector<Tensor>& inputs, double rtol = 1e-5, double atol = 1e-6) {
  Graph opt = g;
  passes::optimize(opt);
  auto want = run_graph(g, inputs);
  auto got = run_graph(opt, inputs);
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) expect_close(got[i], want[i], rtol, atol);
  // Graph interface unchanged.
  EXPECT_EQ(opt.inputs.size(), g.inputs.size());
  for (size_t i = 0; i < g.outputs.size(); ++i) EXPECT_EQ(opt.outputs[i].name, g.outputs[i].name);
  return opt;
}

std::vector<std::string> post_names(const Node& n) {
  std::vector<std::string> r;
  for (auto& o : cpu::post_ops_of(n)) r.push_back(cpu::post_kind_name(o.kind));
  return r;
}

// Conv 3->8 channels, 3x3, pad 1, on [1, 3, 9, 9].
std::string add_conv(G& b, const std::string& x, std::mt19937& rng, const std::string& tag = "", int cin = 3, int cout = 8) {
  b.init("W" + tag, rnd({cout, cin, 3, 3}, rng));
  b.init("B" + tag, rnd({cout}, rng));
  return b.node("Conv", {x, "W" + tag, "B" + tag}, {{"pads", aints({1, 1, 1, 1})}});
}

}  // namespace

TEST(Passes, IdentityDropoutAndDeadNodes) {
  std::mt19937 rng(1);
  G b;
  b.input("X", {2, 5});
  std::string i1 = b.node("Identity", {"X"});
  std::string r = b.node("Relu", {i1});
  b.node("Sigmoid", {"X"});                      // dead: its output is unused
  b.node("Dropout", {r}, {}, "Y");                 // graph output produced through a Dropout
  b.output("Y");
  Graph before = b.g;
  Graph g = b.g;
  EXPECT_TRUE(passes::eliminate_identity(g));
  EXPECT_EQ(count_op(g, "Identity"), 0);
  EXPECT_EQ(count_op(g, "Dropout"), 0);
  EXPECT_TRUE(passes::eliminate_dead(g));
  EXPECT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(g.nodes[0].op_type, "Relu");
  EXPECT_EQ(g.nodes[0].inputs[0], "X");
  EXPECT_EQ(g.nodes[0].outputs[0], "Y");          // the graph output keeps its name
  EXPECT_FALSE(passes::eliminate_identity(g));
  EXPECT_FALSE(passes::eliminate_dead(g));
  Tensor x = rnd({2, 5}, rng);
  expect_close(run_graph(g, {x})[0], run_graph(before, {x})[0], 0, 0);
}

TEST(Passes, IdentityKeptWhenGraphOutputAliasesInput) {
  G b;
  b.input("X", {3});
  b.node("Identity", {"X"}, {}, "Y");
  b.output("Y");
  Graph g = b.g;
  EXPECT_FALSE(passes::eliminate_identity(g));
  EXPECT_EQ(g.nodes.size(), 1u);
}

TEST(Passes, DropoutWithUsedMaskIsKept) {
  G b;
  b.input("X", {3});
  Node d;
  d.name = "d";
  d.op_type = "Dropout";
  d.inputs = {"X"};
  d.outputs = {"Y", "M"};
  b.g.nodes.push_back(d);
  b.output("Y");
  b.output("M");
  Graph g = b.g;
  EXPECT_FALSE(passes::eliminate_identity(g));
}

TEST(Passes, ConstantFolding) {
  std::mt19937 rng(2);
  G b;
  b.input("X", {4, 3});
  b.init("A", rnd({4, 3}, rng));
  b.g.nodes.push_back([] {
    Node n;
    n.name = "c";
    n.op_type = "Constant";
    n.outputs = {"C"};
    n.attrs["value"] = atensor(scalar(2.5f));
    return n;
  }());
  std::string t = b.node("Mul", {"A", "C"});
  std::string t2 = b.node("Transpose", {t}, {{"perm", aints({1, 0})}});
  std::string t3 = b.node("Transpose", {t2}, {{"perm", aints({1, 0})}});
  b.node("Add", {"X", t3}, {}, "Y");
  b.output("Y");
  Graph g = b.g;
  EXPECT_TRUE(passes::fold_constants(g));
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(g.nodes[0].op_type, "Add");
  ASSERT_TRUE(g.initializers.count(t3));
  EXPECT_EQ(g.initializers.at(t3).shape(), (Shape{4, 3}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(g.initializers.at(t3).data<float>()[i], 2.5f * b.g.initializers.at("A").data<float>()[i]);
  EXPECT_TRUE(passes::eliminate_dead(g));  // A and the intermediate constants are no longer needed
  EXPECT_EQ(g.initializers.size(), 1u);
  Tensor x = rnd({4, 3}, rng);
  expect_close(run_graph(g, {x})[0], run_graph(b.g, {x})[0], 0, 0);
}

TEST(Passes, RandomOpsAreNotFolded) {
  G b;
  b.node("RandomUniform", {}, {{"shape", aints({3})}}, "Y");
  b.output("Y");
  Graph g = b.g;
  EXPECT_FALSE(passes::fold_constants(g));
}

// Every single-node activation after a Conv becomes a post-op, with the same result.
TEST(Passes, ConvActivationPostOps) {
  struct A { std::string op; std::map<std::string, Attribute> attrs; std::string kind; };
  std::vector<A> acts = {
      {"Relu", {}, "relu"},
      {"LeakyRelu", {{"alpha", afloat(0.1f)}}, "leaky_relu"},
      {"Sigmoid", {}, "sigmoid"},
      {"Tanh", {}, "tanh"},
      {"Elu", {{"alpha", afloat(0.7f)}}, "elu"},
      {"HardSigmoid", {{"alpha", afloat(0.3f)}, {"beta", afloat(0.4f)}}, "hard_sigmoid"},
      {"HardSwish", {}, "hard_swish"},
      {"Clip", {}, "clip"},
  };
  for (auto& a : acts) {
    std::mt19937 rng(3);
    G b;
    b.input("X", {1, 3, 9, 9});
    std::string c = add_conv(b, "X", rng);
    std::vector<std::string> ins{c};
    if (a.op == "Clip") {
      b.init("lo", scalar(-0.5f));
      b.init("hi", scalar(0.8f));
      ins = {c, "lo", "hi"};
    }
    b.node(a.op, ins, a.attrs, "Y");
    b.output("Y");
    Tensor x = rnd({1, 3, 9, 9}, rng, -2, 2);
    Graph g = optimize_and_compare(b.g, {x});
    ASSERT_EQ(g.nodes.size(), 1u) << a.op;
    EXPECT_EQ(g.nodes[0].op_type, "Conv");
    EXPECT_EQ(post_names(g.nodes[0]), std::vector<std::string>{a.kind}) << a.op;
    EXPECT_EQ(g.nodes[0].outputs[0], "Y");
  }
}

TEST(Passes, ConvTransposeLeakyRelu) {
  std::mt19937 rng(4);
  G b;
  b.input("X", {1, 4, 5, 5, 5});
  b.init("W", rnd({4, 2, 2, 2, 2}, rng));
  std::string c = b.node("ConvTranspose", {"X", "W"}, {{"strides", aints({2, 2, 2})}});
  b.node("LeakyRelu", {c}, {{"alpha", afloat(0.01f)}}, "Y");
  b.output("Y");
  Graph g = optimize_and_compare(b.g, {rnd({1, 4, 5, 5, 5}, rng)});
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(post_names(g.nodes[0]), std::vector<std::string>{"leaky_relu"});
}

TEST(Passes, SiluAndHardSwishPatterns) {
  for (std::string gate : {"Sigmoid", "HardSigmoid"}) {
    std::mt19937 rng(5);
    G b;
    b.input("X", {1, 3, 9, 9});
    std::string c = add_conv(b, "X", rng);
    std::map<std::string, Attribute> attrs;
    if (gate == "HardSigmoid") attrs = {{"alpha", afloat(1.f / 6)}, {"beta", afloat(0.5f)}};
    std::string s = b.node(gate, {c}, attrs);
    b.node("Mul", {s, c}, {}, "Y");  // operand order swapped on purpose
    b.output("Y");
    Graph g = optimize_and_compare(b.g, {rnd({1, 3, 9, 9}, rng, -4, 4)});
    ASSERT_EQ(g.nodes.size(), 1u) << gate;
    EXPECT_EQ(post_names(g.nodes[0]), std::vector<std::string>{gate == "Sigmoid" ? "swish" : "hard_swish"});
  }
}

TEST(Passes, NoFusionWhenConvOutputIsSharedOrAGraphOutput) {
  std::mt19937 rng(6);
  G b;
  b.input("X", {1, 3, 9, 9});
  std::string c1 = add_conv(b, "X", rng, "1");
  b.node("Relu", {c1}, {}, "Y1");
  b.node("Sigmoid", {c1}, {}, "Y2");      // c1 has two consumers
  std::string c2 = add_conv(b, "X", rng, "2");
  b.node("Relu", {c2}, {}, "Y3");
  b.output("Y1");
  b.output("Y2");
  b.output("Y3");
  b.g.outputs.push_back({c2, TensorType{}});  // c2 itself is a graph output
  Graph g = optimize_and_compare(b.g, {rnd({1, 3, 9, 9}, rng)});
  EXPECT_EQ(g.nodes.size(), 5u);
  for (auto& n : g.nodes) EXPECT_TRUE(post_names(n).empty()) << n.describe();
}

// The ResNet block tail: Add(conv_a(x), conv_b(y)) -> Relu becomes one conv with sum + relu.
TEST(Passes, ResidualAddAndRelu) {
  std::mt19937 rng(7);
  G v;
  v.input("X", {1, 8, 9, 9});
  std::string a1 = add_conv(v, "X", rng, "1", 8, 8);
  std::string a2 = add_conv(v, a1, rng, "2", 8, 8);
  std::string d = add_conv(v, "X", rng, "3", 8, 8);   // "downsample" branch: also a conv
  std::string sum = v.node("Add", {d, a2});
  v.node("Relu", {sum}, {}, "Y");
  v.output("Y");
  Graph g = optimize_and_compare(v.g, {rnd({1, 8, 9, 9}, rng)});
  ASSERT_EQ(g.nodes.size(), 3u);
  EXPECT_EQ(count_op(g, "Add"), 0);
  EXPECT_EQ(count_op(g, "Relu"), 0);
  const Node& last = g.nodes.back();
  EXPECT_EQ(last.outputs[0], "Y");
  EXPECT_EQ(post_names(last), (std::vector<std::string>{"sum", "relu"}));
  ASSERT_EQ(last.inputs.size(), 4u);
}

// Optimizes `src` (built with one residual Add to fuse into a conv), runs the result on a Plan (channels-last or
// plain layouts), checks its outputs against the unoptimized graph's, and keeps the plan for its arena offsets.
struct FusedRun {
  std::unique_ptr<Graph> g;   // the plan refers to it
  std::unique_ptr<Plan> plan;
  std::string summand;        // the fused conv's input 3
};
FusedRun run_fused_residual(const Graph& src, const std::vector<Tensor>& in, bool channels_last = true) {
  FusedRun r;
  r.g = std::make_unique<Graph>(optimize_and_compare(src, in));
  EXPECT_EQ(count_op(*r.g, "Add"), 0);
  for (auto& n : r.g->nodes)
    if (n.inputs.size() == 4) r.summand = n.inputs[3];
  r.plan = std::make_unique<Plan>(*r.g, 2, channels_last);
  std::vector<const Tensor*> ptrs;
  for (auto& t : in) ptrs.push_back(&t);
  auto got = r.plan->run(ptrs);
  auto want = run_graph(src, in);
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) expect_close(got[i], want[i]);
  // A second run over the same buffers gives the same answer (nothing depends on stale contents).
  auto again = r.plan->run(ptrs);
  for (size_t i = 0; i < got.size() && i < again.size(); ++i) expect_close(again[i], got[i], 0, 0);
  return r;
}

Tensor shape_tensor(std::vector<int64_t> dims) {
  Tensor t(DType::Int64, {(int64_t)dims.size()});
  for (size_t i = 0; i < dims.size(); ++i) t.data<int64_t>()[i] = dims[i];
  return t;
}

// The fused residual conv accumulates onto its summand in place when the summand is read for the last time there
// (Kernel::inplace_input): both get one arena buffer, and the results equal the unfused graph's.
TEST(Passes, ResidualSumRunsInPlaceOfItsSummand) {
  std::mt19937 rng(8);
  G v;
  v.input("X", {2, 8, 9, 9});
  std::string a1 = add_conv(v, "X", rng, "1", 8, 8);
  std::string a2 = add_conv(v, a1, rng, "2", 8, 8);
  std::string d = add_conv(v, "X", rng, "3", 8, 8);
  std::string sum = v.node("Add", {d, a2});
  std::string r = v.node("Relu", {sum}, {}, "R");
  add_conv(v, r, rng, "4", 8, 8);
  v.g.nodes.back().outputs[0] = "Y";
  v.output("Y");
  FusedRun f = run_fused_residual(v.g, {rnd({2, 8, 9, 9}, rng)});
  ASSERT_TRUE(f.summand == d || f.summand == a2) << f.summand;
  ASSERT_GE(f.plan->last_arena_offset(f.summand), 0);
  EXPECT_EQ(f.plan->last_arena_offset("R"), f.plan->last_arena_offset(f.summand));
}

// A summand still needed after the fused conv keeps its own buffer, and its value is unchanged for the later reader.
TEST(Passes, ResidualSumKeepsALiveSummand) {
  std::mt19937 rng(9);
  G v;
  v.input("X", {1, 8, 9, 9});
  std::string a1 = add_conv(v, "X", rng, "1", 8, 8);
  std::string d = add_conv(v, "X", rng, "3", 8, 8);
  std::string a2 = add_conv(v, a1, rng, "2", 8, 8);
  std::string sum = v.node("Add", {d, a2});
  std::string r = v.node("Relu", {sum}, {}, "R");
  v.node("Mul", {r, d}, {}, "Y");  // d read again after the fused conv
  v.output("Y");
  FusedRun f = run_fused_residual(v.g, {rnd({1, 8, 9, 9}, rng)});
  ASSERT_EQ(f.summand, d);
  ASSERT_GE(f.plan->last_arena_offset(d), 0);
  EXPECT_NE(f.plan->last_arena_offset("R"), f.plan->last_arena_offset(d));
}

// Reshape shares its input's buffer (Kernel::output_views_input). A fused sum must then not accumulate in place of
// a summand whose view is still read later: the later reader would see the sum instead of the summand.
// (Plain layouts throughout: channels-last would put a conversion copy between d and the Reshape.)
TEST(Passes, InPlaceSumWaitsForViewsOfItsSummand) {
  std::mt19937 rng(10);
  G v;
  v.input("X", {1, 8, 9, 9});
  v.init("shape", shape_tensor({1, 8, 81}));
  std::string a1 = add_conv(v, "X", rng, "1", 8, 8);
  std::string d = add_conv(v, "X", rng, "3", 8, 8);
  std::string view = v.node("Reshape", {d, "shape"});   // a view of d, read at the end
  std::string a2 = add_conv(v, a1, rng, "2", 8, 8);
  std::string sum = v.node("Add", {d, a2});
  std::string r = v.node("Relu", {sum}, {}, "R");
  std::string rv = v.node("Reshape", {r, "shape"});
  v.node("Mul", {rv, view}, {}, "Y");
  v.output("Y");
  FusedRun f = run_fused_residual(v.g, {rnd({1, 8, 9, 9}, rng)}, /*channels_last=*/false);
  ASSERT_GE(f.plan->last_arena_offset(d), 0);
  EXPECT_EQ(f.plan->last_arena_offset(view), f.plan->last_arena_offset(d));  // the view shares d's buffer
  EXPECT_NE(f.plan->last_arena_offset("R"), f.plan->last_arena_offset(d));   // so the sum does not write there
}

// Nor when the conv's own input X is a view of the summand's buffer: writing Y there would overwrite X mid-read.
TEST(Passes, InPlaceSumNotOverItsOwnInput) {
  std::mt19937 rng(14);
  G v;
  v.input("X", {1, 8, 9, 9});
  v.init("shape", shape_tensor({1, 8, 9, 9}));
  std::string d = add_conv(v, "X", rng, "1", 8, 8);
  std::string view = v.node("Reshape", {d, "shape"});
  std::string a2 = add_conv(v, view, rng, "2", 8, 8);
  std::string sum = v.node("Add", {d, a2});
  std::string r = v.node("Relu", {sum}, {}, "R");
  v.node("Neg", {r}, {}, "Y");
  v.output("Y");
  FusedRun f = run_fused_residual(v.g, {rnd({1, 8, 9, 9}, rng)}, /*channels_last=*/false);
  ASSERT_GE(f.plan->last_arena_offset(d), 0);
  ASSERT_EQ(f.plan->last_arena_offset(view), f.plan->last_arena_offset(d));
  EXPECT_NE(f.plan->last_arena_offset("R"), f.plan->last_arena_offset(d));
}

// Inference BatchNormalization followed by an activation becomes one node (DenseNet's BN -> ReLU before each conv):
// channels-last after a Conv (ReLU inline, Sigmoid through the generic post-op path) and plain on a graph input.
TEST(Passes, BatchNormActivation) {
  for (const char* act : {"Relu", "Sigmoid"}) {
    for (bool after_conv : {true, false}) {
      SCOPED_TRACE(std::string(act) + (after_conv ? " after a conv" : " on the input"));
      std::mt19937 rng(12);
      G b;
      b.input("X", {2, 8, 9, 9});
      std::string x = after_conv ? add_conv(b, "X", rng, "1", 8, 8) : "X";
      b.init("s", rnd({8}, rng));
      b.init("bb", rnd({8}, rng));
      b.init("m", rnd({8}, rng));
      b.init("v", rnd({8}, rng, 0.5f, 2.f));
      std::string bn = b.node("BatchNormalization", {x, "s", "bb", "m", "v"});
      b.node(act, {bn}, {}, "Y");
      b.output("Y");
      Graph g = optimize_and_compare(b.g, {rnd({2, 8, 9, 9}, rng, -2, 2)});
      EXPECT_EQ(count_op(g, act), 0);
      ASSERT_EQ(count_op(g, "BatchNormalization"), 1);
      for (auto& n : g.nodes)
        if (n.op_type == "BatchNormalization") {
          EXPECT_EQ(post_names(n), (std::vector<std::string>{std::string(act) == "Relu" ? "relu" : "sigmoid"}));
          EXPECT_EQ(n.outputs[0], "Y");
        }
    }
  }
}

// InstanceNormalization followed by LeakyReLU (every nnU-Net stage) becomes one node, channels-last after a 3D
// Conv and plain on a graph input; the results match the unfused graph.
TEST(Passes, InstanceNormLeakyRelu) {
  for (bool after_conv : {true, false}) {
    SCOPED_TRACE(after_conv ? "after a conv" : "on the input");
    std::mt19937 rng(13);
    G b;
    b.input("X", {1, 8, 5, 6, 7});
    std::string x = "X";
    if (after_conv) {
      b.init("W3", rnd({8, 8, 3, 3, 3}, rng));
      x = b.node("Conv", {"X", "W3"}, {{"pads", aints({1, 1, 1, 1, 1, 1})}});
    }
    b.init("s", rnd({8}, rng));
    b.init("bb", rnd({8}, rng));
    std::string in = b.node("InstanceNormalization", {x, "s", "bb"});
    b.node("LeakyRelu", {in}, {{"alpha", afloat(0.01f)}}, "Y");
    b.output("Y");
    Graph g = optimize_and_compare(b.g, {rnd({1, 8, 5, 6, 7}, rng, -2, 2)});
    EXPECT_EQ(count_op(g, "LeakyRelu"), 0);
    ASSERT_EQ(count_op(g, "InstanceNormalization"), 1);
    for (auto& n : g.nodes)
      if (n.op_type == "InstanceNormalization") {
        EXPECT_EQ(post_names(n), (std::vector<std::string>{"leaky_relu"}));
        EXPECT_EQ(n.outputs[0], "Y");
      }
  }
}

// Conv(Concat(a, b, ...)) -> Conv(a, W_a, B) then Conv(b, W_b) summed onto it (U-Net decoders): 2 and 3 parts, 3D
// and 2D, with a LeakyReLU fused after the last part. The two graphs sum the same K = C*27 (or C*9) products in
// another order: float32 error <= 6*sqrt(K)*2^-24*sum|terms| ~ 1e-3 at worst with these values (|w| <= 0.1,
// |x| <= 1), typically ~1e-5; a wrongly assigned channel block is off by ~0.1. Atol and rtol 1e-4.
TEST(Passes, SplitConcatConv) {
  for (int parts : {2, 3}) {
    for (bool three_d : {true, false}) {
      SCOPED_TRACE(std::to_string(parts) + " parts, " + (three_d ? "3D" : "2D"));
      std::mt19937 rng(14);
      G b;
      const Shape sp = three_d ? Shape{4, 5, 6} : Shape{7, 6};
      std::vector<std::string> xs;
      std::vector<Tensor> ins;
      int64_t total = 0;
      for (int i = 0; i < parts; ++i) {
        Shape s{1, 16 + 8 * i};
        s.insert(s.end(), sp.begin(), sp.end());
        total += s[1];
        b.input("X" + std::to_string(i), s);
        xs.push_back("X" + std::to_string(i));
        ins.push_back(rnd(s, rng));
      }
      std::string cat = b.node("Concat", xs, {{"axis", aint(1)}});
      Shape ws{24, total};
      for (size_t i = 0; i < sp.size(); ++i) ws.push_back(3);
      b.init("W", rnd(ws, rng, -0.1f, 0.1f));
      b.init("B", rnd({24}, rng));
      std::string c = b.node("Conv", {cat, "W", "B"}, {{"pads", aints(std::vector<int64_t>(2 * sp.size(), 1))}});
      b.node("LeakyRelu", {c}, {{"alpha", afloat(0.1f)}}, "Y");
      b.output("Y");
      Graph g = optimize_and_compare(b.g, ins, 1e-4, 1e-4);
      EXPECT_EQ(count_op(g, "Concat"), 0);
      EXPECT_EQ(count_op(g, "LeakyRelu"), 0);
      ASSERT_EQ(count_op(g, "Conv"), parts);
      EXPECT_EQ(g.initializers.count("W"), 0u);
      int sums = 0;
      for (auto& n : g.nodes) {
        if (n.op_type != "Conv") continue;
        const auto post = post_names(n);
        if (n.outputs[0] == "Y") EXPECT_EQ(post, (std::vector<std::string>{"sum", "leaky_relu"}));
        sums += !post.empty() && post[0] == "sum";
      }
      EXPECT_EQ(sums, parts - 1);
    }
  }
  // Inputs that cannot be concatenated (spatial sizes differ, dims symbolic so only a run finds out): the error
  // names the Concat, as without the pass.
  {
    std::mt19937 rng(16);
    G b;
    for (const char* name : {"A", "C"})
      b.g.inputs.push_back({name, TensorType{DType::Float32, true, {Dim::of(1), Dim::of(16), Dim::sym("h"), Dim::sym("w")}}});
    std::string cat = b.node("Concat", {"A", "C"}, {{"axis", aint(1)}});
    b.init("W", rnd({24, 32, 3, 3}, rng, -0.1f, 0.1f));
    b.node("Conv", {cat, "W"}, {{"pads", aints({1, 1, 1, 1})}}, "Y");
    b.output("Y");
    Graph g = b.g;
    passes::optimize(g);
    ASSERT_EQ(count_op(g, "Concat"), 0);
    std::string msg;
    try {
      run_graph(g, {rnd({1, 16, 5, 5}, rng), rnd({1, 16, 4, 4}, rng)});
    } catch (const Error& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find("node '" + cat.substr(0, cat.size() - 4) + "' (Concat): its inputs do not match"), std::string::npos) << msg;
  }
  // Left alone: more output channels than the concatenation (the sums would cost more than the copy), a pointwise
  // kernel, and a concatenation read elsewhere too.
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE("variant " + std::to_string(variant));
    std::mt19937 rng(15);
    G b;
    b.input("A", {1, 16, 5, 5});
    b.input("C", {1, 16, 5, 5});
    std::string cat = b.node("Concat", {"A", "C"}, {{"axis", aint(1)}}, variant == 2 ? "K" : "");
    const int64_t m = variant == 0 ? 40 : 24, k = variant == 1 ? 1 : 3;
    b.init("W", rnd({m, 32, k, k}, rng, -0.1f, 0.1f));
    b.node("Conv", {cat, "W"}, {{"pads", aints(std::vector<int64_t>(4, k / 2))}}, "Y");
    b.output("Y");
    if (variant == 2) b.output("K");
    std::vector<Tensor> ins{rnd({1, 16, 5, 5}, rng), rnd({1, 16, 5, 5}, rng)};
    Graph g = optimize_and_compare(b.g, ins);
    EXPECT_EQ(count_op(g, "Concat"), 1);
    EXPECT_EQ(count_op(g, "Conv"), 1);
  }
}

// A BatchNormalization carrying fused activations is refused, naming the node, when they cannot apply: a 'sum'
// (BN has no summand input) or a non-float32 tensor.
TEST(Passes, BatchNormPostOpsRefusedWhereTheyCannotApply) {
  for (bool sum : {true, false}) {
    G b;
    const DType dt = sum ? DType::Float32 : DType::Float64;
    b.g.inputs.push_back({"X", TensorType::of(dt, {1, 4, 3, 3})});
    for (const char* p : {"s", "bb", "m", "v"}) {
      Tensor t(dt, {4});
      for (int i = 0; i < 4; ++i) {
        if (sum) t.data<float>()[i] = 1.f;
        else t.data<double>()[i] = 1.0;
      }
      b.init(p, t);
    }
    b.node("BatchNormalization", {"X", "s", "bb", "m", "v"}, {}, "Y");
    b.output("Y");
    cpu::set_post_ops(b.g.nodes[0], {{sum ? cpu::PostKind::Sum : cpu::PostKind::Relu, 0, 0}});
    std::string msg;
    try {
      Tensor x(dt, {1, 4, 3, 3});
      std::memset(x.raw(), 0, x.nbytes());
      run_graph(b.g, {x});
    } catch (const Error& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find(b.g.nodes[0].name), std::string::npos) << msg;
    EXPECT_NE(msg.find(sum ? "a fused 'sum' is not supported" : "fused activations need float32, got float64"),
              std::string::npos) << msg;
  }
}

// A Pad that pads nothing is the identity (DenseNet's transitions export AvgPool as Pad(0) + AveragePool); real
// padding stays.
TEST(Passes, ZeroPadIsRemoved) {
  for (int64_t p : {0, 1}) {
    std::mt19937 rng(13);
    G b;
    b.input("X", {1, 4, 6, 6});
    Tensor pads(DType::Int64, {8});
    for (int i = 0; i < 8; ++i) pads.data<int64_t>()[i] = (i == 2 || i == 7) ? p : 0;
    b.init("pads", pads);
    std::string y = b.node("Pad", {"X", "pads"});
    b.node("AveragePool", {y}, {{"kernel_shape", aints({2, 2})}, {"strides", aints({2, 2})}}, "Y");
    b.output("Y");
    Graph g = optimize_and_compare(b.g, {rnd({1, 4, 6, 6}, rng)});
    EXPECT_EQ(count_op(g, "Pad"), p == 0 ? 0 : 1) << "pads " << p;
  }
}

// ShuffleNet's channel shuffle, Reshape -> Transpose(0, 2, 1, 3, 4) -> Reshape, becomes one kiln:ChannelShuffle,
// which keeps channels-last data channels-last between the convolutions: only the graph's input and output are
// converted. The same chain when it is not a channel shuffle is fused too and computed as the three ops were.
TEST(Passes, ChannelShuffle) {
  std::mt19937 rng(14);
  auto build = [&](std::vector<int64_t> s1, std::vector<int64_t> s2, bool shared_transpose) {
    G b;
    b.input("X", {2, 3, 7, 6});
    std::string c = add_conv(b, "X", rng);  // 8 channels
    b.init("s1", shape_tensor(s1));
    b.init("s2", shape_tensor(s2));
    std::string r1 = b.node("Reshape", {c, "s1"});
    std::string t = b.node("Transpose", {r1}, {{"perm", aints({0, 2, 1, 3, 4})}});
    std::string r2 = b.node("Reshape", {t, "s2"});
    if (s2.size() == 4) {
      b.init("W2", rnd({8, 8, 3, 3}, rng));
      b.node("Conv", {r2, "W2"}, {{"pads", aints({1, 1, 1, 1})}}, "Y");
    } else {
      b.node("Relu", {r2}, {}, "Y");
    }
    b.output("Y");
    if (shared_transpose) {
      b.node("Neg", {t}, {}, "Z");
      b.output("Z");
    }
    return b.g;
  };
  const Tensor x = rnd({2, 3, 7, 6}, rng);
  auto conversions = [&](const Graph& g) {
    Plan plan(g, 2);
    plan.run({&x});
    return plan.last_layout_stats()[2];
  };
  // A channel shuffle of 2 groups.
  Graph orig = build({2, 2, 4, 7, 6}, {2, 8, 7, 6}, false);
  Graph g = optimize_and_compare(orig, {x});
  EXPECT_EQ(count_op(g, "ChannelShuffle"), 1);
  EXPECT_EQ(count_op(g, "Transpose") + count_op(g, "Reshape"), 0);
  EXPECT_EQ(conversions(g), 2);
  EXPECT_GT(conversions(orig), 2);
  // Four groups, with -1 and 0 in the targets (Reshape's rules apply).
  g = optimize_and_compare(build({0, 4, -1, 7, 6}, {0, -1, 7, 6}, false), {x});
  EXPECT_EQ(count_op(g, "ChannelShuffle"), 1);
  EXPECT_EQ(conversions(g), 2);
  // Not a channel shuffle (S1 does not split the channel axis alone; the result is 3-D): fused, plain, same values.
  g = optimize_and_compare(build({2, 2, 4, 42, 1}, {2, 8, 42}, false), {x});
  EXPECT_EQ(count_op(g, "ChannelShuffle"), 1);
  // The transposed value read elsewhere: nothing to fuse.
  g = optimize_and_compare(build({2, 2, 4, 7, 6}, {2, 8, 7, 6}, true), {x});
  EXPECT_EQ(count_op(g, "ChannelShuffle"), 0);
}

TEST(Passes, AddWithBroadcastIsNotFused) {
  std::mt19937 rng(8);
  G b;
  b.input("X", {1, 3, 9, 9});
  b.input("Z", {1, 8, 1, 1});
  std::string c = add_conv(b, "X", rng);
  b.node("Add", {c, "Z"}, {}, "Y");
  b.output("Y");
  Graph g = optimize_and_compare(b.g, {rnd({1, 3, 9, 9}, rng), rnd({1, 8, 1, 1}, rng)});
  EXPECT_EQ(g.nodes.size(), 2u);
}

// ViT MLP: MatMul(x, W) + bias -> GELU (Erf expansion) -> MatMul(., W2) + bias2 (+ Relu).
TEST(Passes, MatMulBiasGeluAndRelu) {
  std::mt19937 rng(9);
  G b;
  b.input("X", {2, 5, 16});
  b.init("W1", rnd({16, 32}, rng));
  b.init("b1", rnd({32}, rng));
  b.init("W2", rnd({32, 8}, rng));
  b.init("b2", rnd({1, 8}, rng));
  b.init("sqrt2", scalar(1.4142135f));
  b.init("one", scalar(1.f));
  b.init("half", scalar(0.5f));
  std::string m = b.node("MatMul", {"X", "W1"});
  std::string a = b.node("Add", {"b1", m});
  std::string dv = b.node("Div", {a, "sqrt2"});
  std::string e = b.node("Erf", {dv});
  std::string p1 = b.node("Add", {e, "one"});
  std::string mu = b.node("Mul", {a, p1});
  std::string h = b.node("Mul", {mu, "half"});
  std::string m2 = b.node("MatMul", {h, "W2"});
  std::string a2 = b.node("Add", {m2, "b2"});
  b.node("Relu", {a2}, {}, "Y");
  b.output("Y");
  Graph g = optimize_and_compare(b.g, {rnd({2, 5, 16}, rng, -2, 2)});
  ASSERT_EQ(g.nodes.size(), 2u);
  for (auto& n : g.nodes) {
    EXPECT_EQ(n.op_type, "FusedMatMul");
    EXPECT_EQ(n.domain, "kiln");
    EXPECT_EQ(n.inputs.size(), 3u);
  }
  EXPECT_EQ(post_names(g.nodes[0]), std::vector<std::string>{"gelu"});
  EXPECT_EQ(post_names(g.nodes[1]), std::vector<std::string>{"relu"});
}

// Non-constant bias or a bias that broadcasts the product up must stay an Add.
TEST(Passes, MatMulBiasNeedsConstantRowVector) {
  std::mt19937 rng(10);
  G b;
  b.input("X", {4, 16});
  b.input("Bv", {8});
  b.init("W", rnd({16, 8}, rng));
  b.init("Bm", rnd({4, 8}, rng));
  std::string m = b.node("MatMul", {"X", "W"});
  b.node("Add", {m, "Bv"}, {}, "Y1");
  std::string m2 = b.node("MatMul", {"X", "W"});
  b.node("Add", {m2, "Bm"}, {}, "Y2");
  b.output("Y1");
  b.output("Y2");
  Graph g = b.g;
  auto types = passes::infer_types(g);
  EXPECT_FALSE(passes::fuse_matmul_bias(g, types));
}

// The fused kernels' own reference paths agree with oneDNN's post-ops (the fallback used when oneDNN declines).
TEST(Passes, PostOpReferenceMatchesOneDnn) {
  std::vector<cpu::PostOp> ops = {{cpu::PostKind::Sum, 0, 0}, {cpu::PostKind::Gelu, 0, 0}, {cpu::PostKind::Clip, -0.3f, 0.6f}};
  std::mt19937 rng(11);
  Tensor y = rnd({64}, rng, -3, 3), s = rnd({64}, rng), y2 = y.clone();
  cpu::apply_post_ops_ref(ops, y.data<float>(), 64, s.data<float>());
  for (int i = 0; i < 64; ++i) {
    double v = y2.data<float>()[i] + (double)s.data<float>()[i];
    v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    v = std::min(0.6, std::max(-0.3, v));
    EXPECT_NEAR(y.data<float>()[i], v, 1e-6);
  }
}

// Training-mode Dropout is the identity only when its ratio is a constant 0 (torchvision's swin_t exports its
// attention dropout as Dropout(x, ratio=0, training_mode=true)).
TEST(Passes, TrainingDropoutWithZeroRatioIsIdentity) {
  for (float ratio : {0.0f, 0.5f}) {
    G b;
    b.input("X", {2, 3});
    Tensor on(DType::Bool, {});
    on.data<uint8_t>()[0] = 1;
    b.init("ratio", scalar(ratio));
    b.init("training", on);
    std::string r = b.node("Relu", {"X"});
    std::string d = b.node("Dropout", {r, "ratio", "training"});
    b.node("Neg", {d}, {}, "Y");
    b.output("Y");
    Graph g = b.g;
    passes::eliminate_identity(g);
    EXPECT_EQ(count_op(g, "Dropout"), ratio == 0.0f ? 0 : 1) << "ratio " << ratio;
  }
}

// Slice keeps channels-last data channels-last (ShuffleNet's channel split between convolutions): a channel half, and
// a slice with steps over channels and both spatial axes, equal the plain plan's results, with only the graph's
// input and output converted.
TEST(Layout, ChannelsLastSliceMatchesPlain) {
  std::mt19937 rng(15);
  G b;
  b.input("X", {2, 3, 9, 8});
  std::string c = add_conv(b, "X", rng);  // 8 channels
  b.init("st1", shape_tensor({4}));
  b.init("en1", shape_tensor({8}));
  b.init("ax1", shape_tensor({1}));
  std::string half = b.node("Slice", {c, "st1", "en1", "ax1"});
  b.init("st2", shape_tensor({0, 1, 7}));
  b.init("en2", shape_tensor({4, 9, -9}));
  b.init("ax2", shape_tensor({1, 2, 3}));
  b.init("sp2", shape_tensor({2, 2, -3}));
  std::string strided = b.node("Slice", {half, "st2", "en2", "ax2", "sp2"});  // [2, 2, 4, 3]
  b.init("W2", rnd({8, 2, 3, 3}, rng));
  b.node("Conv", {strided, "W2"}, {{"pads", aints({1, 1, 1, 1})}}, "Y");
  b.output("Y");
  const Tensor x = rnd({2, 3, 9, 8}, rng);
  Plan cl(b.g, 2, true), plain(b.g, 2, false);
  auto got = cl.run({&x}), want = plain.run({&x});
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].shape(), (Shape{2, 8, 4, 3}));
  expect_close(got[0], want[0]);
  EXPECT_EQ(cl.last_layout_stats()[2], 2);
  EXPECT_EQ(cl.last_layout_stats()[1], 4) << "both convolutions and both slices channels-last";
}
