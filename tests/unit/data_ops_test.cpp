// Data-movement operators: symbolic shape inference, error cases, and the fast strided-copy /
// transpose kernels checked against the naive reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <numeric>
#include <random>

#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

Node make_node(const std::string& op, int n_in, int n_out = 1) {
  Node n;
  n.name = "t_" + op;
  n.op_type = op;
  for (int i = 0; i < n_in; ++i) n.inputs.push_back("in" + std::to_string(i));
  for (int i = 0; i < n_out; ++i) n.outputs.push_back("out" + std::to_string(i));
  return n;
}

void set_ints(Node& n, const std::string& k, std::vector<int64_t> v) {
  Attribute a;
  a.kind = Attribute::Ints;
  a.ints = std::move(v);
  n.attrs[k] = a;
}
void set_int(Node& n, const std::string& k, int64_t v) {
  Attribute a;
  a.kind = Attribute::Int;
  a.i = v;
  n.attrs[k] = a;
}

Tensor i64(std::vector<int64_t> v) {
  Tensor t(DType::Int64, {(int64_t)v.size()});
  std::copy(v.begin(), v.end(), t.data<int64_t>());
  return t;
}

TensorType sym_type(DType dt, std::vector<Dim> dims) { return data::make_type(dt, std::move(dims)); }

std::unique_ptr<Kernel> kernel(const Node& n, int opset) {
  const OpEntry* e = registry().find("", n.op_type, opset);
  EXPECT_NE(e, nullptr) << n.op_type;
  return e->make(n, opset);
}

// Runs infer with the given types/values; returns output types.
std::vector<TensorType> infer(const Node& n, int opset, std::vector<TensorType> types, std::vector<const Tensor*> values) {
  auto k = kernel(n, opset);
  std::vector<const TensorType*> tp;
  for (auto& t : types) tp.push_back(&t);
  values.resize(types.size(), nullptr);
  InferContext ctx(n, tp, values);
  k->infer(ctx);
  return ctx.outputs();
}

// Expects a kiln::Error whose message names the node and contains `what`.
template <class F>
void expect_node_error(const Node& n, F&& f, const std::string& what) {
  try {
    f();
    FAIL() << "expected an error naming " << n.describe();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(n.describe()), std::string::npos) << m;
    EXPECT_NE(m.find(what), std::string::npos) << m;
  }
}

TEST(DataOps, ReshapeSymbolicCopyAndInfer) {
  Node n = make_node("Reshape", 2);
  TensorType x = sym_type(DType::Float32, {Dim::sym("batch"), Dim::of(3), Dim::of(4), Dim::of(4)});
  TensorType st = TensorType::of(DType::Int64, {2});
  Tensor s = i64({0, -1});
  auto out = infer(n, 14, {x, st}, {nullptr, &s});
  EXPECT_EQ(out[0].str(), "float32[batch, 48]");
  // -1 resolves to the one symbol left over when the known parts balance.
  Tensor s2 = i64({-1, 48});
  EXPECT_EQ(infer(n, 14, {x, st}, {nullptr, &s2})[0].str(), "float32[batch, 48]");
  // Unknown target values: rank from the shape input's length, dims unknown.
  TensorType st3 = TensorType::of(DType::Int64, {3});
  EXPECT_EQ(infer(n, 14, {x, st3}, {})[0].str(), "float32[?, ?, ?]");
  // -1 with an unbalanced symbol stays unknown.
  Tensor s4 = i64({2, -1});
  EXPECT_EQ(infer(n, 14, {x, st}, {nullptr, &s4})[0].str(), "float32[2, ?]");
}

TEST(DataOps, ReshapeAllowZero) {
  Node n = make_node("Reshape", 2);
  set_int(n, "allowzero", 1);
  Tensor s = i64({0, 4});
  auto out = infer(n, 14, {TensorType::of(DType::Float32, {0, 4}), TensorType::of(DType::Int64, {2})}, {nullptr, &s});
  EXPECT_EQ(out[0].str(), "float32[0, 4]");
  Tensor bad = i64({0, -1});
  expect_node_error(n, [&] { infer(n, 14, {TensorType::of(DType::Float32, {0, 4}), TensorType::of(DType::Int64, {2})}, {nullptr, &bad}); },
                    "allowzero");
}

TEST(DataOps, ReshapeImpossibleNamesNode) {
  Node n = make_node("Reshape", 2);
  TensorType x = TensorType::of(DType::Float32, {2, 3});
  TensorType st = TensorType::of(DType::Int64, {2});
  Tensor a = i64({4, -1});
  expect_node_error(n, [&] { infer(n, 14, {x, st}, {nullptr, &a}); }, "not divisible");
  Tensor b = i64({4, 2});
  expect_node_error(n, [&] { infer(n, 14, {x, st}, {nullptr, &b}); }, "element counts differ");
  Tensor c = i64({-1, -1});
  expect_node_error(n, [&] { infer(n, 14, {x, st}, {nullptr, &c}); }, "more than one -1");
}

TEST(DataOps, TransposePermutesSymbols) {
  Node n = make_node("Transpose", 1);
  set_ints(n, "perm", {1, 0, 2});
  auto out = infer(n, 13, {sym_type(DType::Float32, {Dim::sym("b"), Dim::sym("s"), Dim::of(8)})}, {});
  EXPECT_EQ(out[0].str(), "float32[s, b, 8]");
  set_ints(n, "perm", {1, 1, 2});
  expect_node_error(n, [&] { infer(n, 13, {TensorType::of(DType::Float32, {1, 2, 3})}, {}); }, "not a permutation");
}

TEST(DataOps, ConcatSymbolicAxis) {
  Node n = make_node("Concat", 2);
  set_int(n, "axis", 1);
  auto out = infer(n, 13,
                   {sym_type(DType::Float32, {Dim::sym("b"), Dim::sym("s")}), sym_type(DType::Float32, {Dim::of(2), Dim::of(5)})}, {});
  EXPECT_EQ(out[0].str(), "float32[2, ?]");  // b meets 2 -> 2; s + 5 unknown
  auto k = infer(n, 13, {TensorType::of(DType::Float32, {2, 3}), TensorType::of(DType::Float32, {2, 5})}, {});
  EXPECT_EQ(k[0].str(), "float32[2, 8]");
  expect_node_error(n, [&] { infer(n, 13, {TensorType::of(DType::Float32, {2, 3}), TensorType::of(DType::Float32, {4, 5})}, {}); },
                    "does not match");
  // The message says which input and axis clash (it is only built on a clash).
  expect_node_error(n, [&] { infer(n, 13, {TensorType::of(DType::Float32, {2, 3}), TensorType::of(DType::Float32, {4, 5})}, {}); },
                    "input 1 float32[4, 5] vs float32[2, 3] on axis 0: dimension 2 does not match 4");
  set_int(n, "axis", 2);
  expect_node_error(n, [&] { infer(n, 13, {TensorType::of(DType::Float32, {2, 3}), TensorType::of(DType::Float32, {2, 5})}, {}); },
                    "out of range");
}

TEST(DataOps, SliceInference) {
  Node n = make_node("Slice", 5);
  TensorType x = sym_type(DType::Float32, {Dim::sym("b"), Dim::of(10), Dim::of(7)});
  TensorType v1 = TensorType::of(DType::Int64, {2});
  Tensor starts = i64({0, -1}), ends = i64({INT64_MAX, INT64_MIN}), axes = i64({0, 1}), steps = i64({1, -3});
  auto out = infer(n, 13, {x, v1, v1, v1, v1}, {nullptr, &starts, &ends, &axes, &steps});
  // axis 0 is kept whole (symbol survives); axis 1 from 9 down to the start by -3: 9, 6, 3, 0.
  EXPECT_EQ(out[0].str(), "float32[b, 4, 7]");
  // Values unknown but axes known: only those axes become unknown.
  auto out2 = infer(n, 13, {x, v1, v1, v1, v1}, {nullptr, nullptr, nullptr, &axes, nullptr});
  EXPECT_EQ(out2[0].str(), "float32[?, ?, 7]");
  Tensor zero = i64({1, 0});
  expect_node_error(n, [&] { infer(n, 13, {x, v1, v1, v1, v1}, {nullptr, &starts, &ends, &axes, &zero}); }, "step cannot be 0");
}

TEST(DataOps, UnsqueezeSqueezeAxes) {
  Node u = make_node("Unsqueeze", 2);
  Tensor ax = i64({0, -1});
  auto out = infer(u, 13, {sym_type(DType::Float32, {Dim::sym("n"), Dim::of(3)}), TensorType::of(DType::Int64, {2})}, {nullptr, &ax});
  EXPECT_EQ(out[0].str(), "float32[1, n, 3, 1]");
  Node s = make_node("Squeeze", 2);
  Tensor bad = i64({1});
  expect_node_error(s, [&] { infer(s, 13, {TensorType::of(DType::Float32, {1, 3}), TensorType::of(DType::Int64, {1})}, {nullptr, &bad}); },
                    "size is not 1");
  Tensor oob = i64({5});
  expect_node_error(s, [&] { infer(s, 13, {TensorType::of(DType::Float32, {1, 3}), TensorType::of(DType::Int64, {1})}, {nullptr, &oob}); },
                    "out of range");
}

TEST(DataOps, ExpandTileRangeWithKnownValues) {
  Node e = make_node("Expand", 2);
  Tensor shp = i64({4, 1, 5});
  auto out = infer(e, 13, {sym_type(DType::Float32, {Dim::sym("c"), Dim::of(1)}), TensorType::of(DType::Int64, {3})}, {nullptr, &shp});
  EXPECT_EQ(out[0].str(), "float32[4, c, 5]");
  Node r = make_node("Range", 3);
  Tensor a(DType::Int32, {}), b(DType::Int32, {}), d(DType::Int32, {});
  *a.data<int32_t>() = 10; *b.data<int32_t>() = 1; *d.data<int32_t>() = -3;
  TensorType sc = TensorType::of(DType::Int32, {});
  EXPECT_EQ(infer(r, 11, {sc, sc, sc}, {&a, &b, &d})[0].str(), "int32[3]");
  EXPECT_EQ(infer(r, 11, {sc, sc, sc}, {})[0].str(), "int32[?]");
}

TEST(DataOps, TopKKnownAndUnknownK) {
  Node n = make_node("TopK", 2, 2);
  Tensor k = i64({3});
  TensorType x = sym_type(DType::Float32, {Dim::sym("b"), Dim::of(10)});
  auto out = infer(n, 11, {x, TensorType::of(DType::Int64, {1})}, {nullptr, &k});
  EXPECT_EQ(out[0].str(), "float32[b, 3]");
  EXPECT_EQ(out[1].str(), "int64[b, 3]");
  EXPECT_EQ(infer(n, 11, {x, TensorType::of(DType::Int64, {1})}, {})[0].str(), "float32[b, ?]");
  Tensor big = i64({11});
  expect_node_error(n, [&] { infer(n, 11, {x, TensorType::of(DType::Int64, {1})}, {nullptr, &big}); }, "exceeds axis size");
}

TEST(DataOps, GatherIndexOutOfRangeIsAnError) {
  Node n = make_node("Gather", 2);
  auto k = kernel(n, 13);
  Tensor x(DType::Float32, {4, 2});
  Tensor idx = i64({1, 4});
  Tensor y(DType::Float32, {2, 2});
  RunContext ctx(n, {&x, &idx}, {&y});
  expect_node_error(n, [&] { k->run(ctx); }, "out of range");
  // A negative index inside [-4, 0) is valid and counts from the end.
  Tensor ok = i64({-1, 0});
  for (int i = 0; i < 8; ++i) x.data<float>()[i] = (float)i;
  RunContext ctx2(n, {&x, &ok}, {&y});
  k->run(ctx2);
  EXPECT_EQ(y.data<float>()[0], 6.f);
  EXPECT_EQ(y.data<float>()[1], 7.f);
  EXPECT_EQ(y.data<float>()[2], 0.f);
}

TEST(DataOps, ScatterElementsIndexOutOfRangeIsAnError) {
  Node n = make_node("ScatterElements", 3);
  auto k = kernel(n, 18);
  Tensor x(DType::Float32, {3});
  Tensor idx = i64({3});
  Tensor up(DType::Float32, {1});
  Tensor y(DType::Float32, {3});
  RunContext ctx(n, {&x, &idx, &up}, {&y});
  expect_node_error(n, [&] { k->run(ctx); }, "out of range");
}

// TopK ties go to the lower index, for largest and smallest alike.
TEST(DataOps, TopKTiesPreferLowerIndex) {
  for (int largest : {0, 1}) {
    Node n = make_node("TopK", 2, 2);
    set_int(n, "largest", largest);
    auto k = kernel(n, 11);
    Tensor x(DType::Float32, {6});
    float v[6] = {2, 1, 2, 1, 2, 1};
    std::copy(v, v + 6, x.data<float>());
    Tensor kk = i64({4});
    Tensor yv(DType::Float32, {4}), yi(DType::Int64, {4});
    RunContext ctx(n, {&x, &kk}, {&yv, &yi});
    k->run(ctx);
    std::vector<int64_t> want = largest ? std::vector<int64_t>{0, 2, 4, 1} : std::vector<int64_t>{1, 3, 5, 0};
    for (int i = 0; i < 4; ++i) EXPECT_EQ(yi.data<int64_t>()[i], want[i]) << "largest=" << largest << " i=" << i;
  }
}

// Fast transpose against the naive reference, exact equality (pure data movement).
TEST(DataOps, FastTransposeMatchesNaive) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    const int rank = 1 + (int)(rng() % 5);
    Shape s(rank);
    for (auto& d : s) d = 1 + (int64_t)(rng() % (rank <= 2 ? 300 : rank == 3 ? 40 : 12));
    if (trial % 25 == 0) s[rng() % rank] = 1;
    std::vector<int> perm(rank);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const size_t es = size_t(1) << (rng() % 4);
    const int64_t n = shape_numel(s);
    std::vector<uint8_t> in(n * es), a(n * es, 0xAA), b(n * es, 0x55);
    for (auto& c : in) c = (uint8_t)rng();
    data::transpose(a.data(), in.data(), s, perm, es);
    data::transpose_naive(b.data(), in.data(), s, perm, es);
    ASSERT_EQ(a, b) << "shape " << shape_str(s) << " esize " << es << " trial " << trial;
  }
}

// Large float32 transposes take the tiled + OpenMP path.
TEST(DataOps, FastTransposeLargeFloat) {
  std::mt19937 rng(7);
  const std::vector<std::pair<Shape, std::vector<int>>> cases = {
      {{1, 197, 12, 64}, {0, 2, 1, 3}}, {{1, 12, 197, 64}, {0, 1, 3, 2}}, {{512, 768}, {1, 0}}, {{8, 58, 2, 28, 28}, {0, 2, 1, 3, 4}},
      {{3, 256, 1024}, {2, 0, 1}}};
  for (auto& [s, perm] : cases) {
    const int64_t n = shape_numel(s);
    std::vector<float> in(n), a(n, -1), b(n, -2);
    for (auto& v : in) v = (float)(rng() % 100000);
    data::transpose(a.data(), in.data(), s, perm, 4);
    data::transpose_naive(b.data(), in.data(), s, perm, 4);
    ASSERT_EQ(a, b) << shape_str(s);
  }
}

// Plain -> channels-last with few channels (an RGB input entering a channels-last network) has its own loop.
TEST(DataOps, FewChannelLayoutCopyMatchesNaive) {
  std::mt19937 rng(11);
  for (int64_t N : {1, 2})
    for (int64_t C : {2, 3, 4, 5})
      for (int64_t S : {64, 1000, 224 * 224}) {
        const int64_t n = N * C * S;
        std::vector<float> in(n), a(n, -1), b(n, -2);
        for (auto& v : in) v = (float)(rng() % 100000);
        data::layout_copy(in.data(), a.data(), N, C, S, 4, true);
        data::transpose_naive(b.data(), in.data(), {N, C, S}, {0, 2, 1}, 4);
        ASSERT_EQ(a, b) << "N " << N << " C " << C << " S " << S;
      }
}

// Strided copies with negative and zero strides (Slice with negative steps, Expand).
TEST(DataOps, StridedCopyMatchesNaive) {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 200; ++trial) {
    const int rank = 1 + (int)(rng() % 4);
    Shape src_shape(rank), out(rank);
    for (auto& d : src_shape) d = 1 + (int64_t)(rng() % 9);
    auto st = strides_of(src_shape);
    std::vector<int64_t> ss(rank);
    int64_t base = 0;
    for (int d = 0; d < rank; ++d) {
      int mode = (int)(rng() % 3);
      if (mode == 0) { out[d] = src_shape[d]; ss[d] = st[d]; }
      else if (mode == 1) { out[d] = src_shape[d]; ss[d] = -st[d]; base += (src_shape[d] - 1) * st[d]; }
      else { out[d] = 1 + (int64_t)(rng() % 4); ss[d] = 0; }
    }
    const int64_t n = shape_numel(src_shape), m = shape_numel(out);
    std::vector<uint32_t> in(n), a(m, 1), b(m, 2);
    for (auto& v : in) v = rng();
    data::strided_copy(a.data(), in.data() + base, out, ss, 4);
    data::strided_copy_naive(b.data(), in.data() + base, out, ss, 4);
    ASSERT_EQ(a, b) << "trial " << trial;
  }
}

}  // namespace
}  // namespace kiln
