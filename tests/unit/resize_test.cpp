// Resize: hand-computed cases, PyTorch F.interpolate references (tests/unit/gen_resize_refs.py), fast kernels
// against the reference kernel, shape inference and error handling. Also small checks of NMS and random ops.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "backends/cpu/resize_common.h"
#include "ops/registry.h"

using namespace kiln;

namespace {

Tensor f32(const Shape& s, const std::vector<float>& v) {
  Tensor t(DType::Float32, s);
  EXPECT_EQ((size_t)t.numel(), v.size());
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}
Tensor i64(const std::vector<int64_t>& v) {
  Tensor t(DType::Int64, {(int64_t)v.size()});
  std::copy(v.begin(), v.end(), t.data<int64_t>());
  return t;
}

Attribute sattr(const std::string& s) { Attribute a; a.kind = Attribute::String; a.s = s; return a; }
Attribute iattr(int64_t i) { Attribute a; a.kind = Attribute::Int; a.i = i; return a; }
Attribute fattr(float f) { Attribute a; a.kind = Attribute::Float; a.f = f; return a; }
Attribute intsattr(std::vector<int64_t> v) { Attribute a; a.kind = Attribute::Ints; a.ints = std::move(v); return a; }

// Runs one node through its registered kernel: infer (with the given values known), allocate, run.
// Returns the outputs; `inferred` receives the plan-time output types.
std::vector<Tensor> run_node(const Node& n, int opset, const std::vector<const Tensor*>& ins,
                             std::vector<TensorType>* inferred = nullptr) {
  const OpEntry* e = registry().find(n.domain, n.op_type, opset);
  if (!e) throw Error(ErrorCode::Unsupported, "no kernel for " + n.op_type);
  auto k = e->make(n, opset);
  std::vector<TensorType> types(ins.size());
  std::vector<const TensorType*> tin;
  for (size_t i = 0; i < ins.size(); ++i) {
    if (ins[i]) types[i] = TensorType::of(ins[i]->dtype(), ins[i]->shape());
    tin.push_back(ins[i] ? &types[i] : nullptr);
  }
  InferContext ictx(n, tin, ins);
  k->infer(ictx);
  if (inferred) *inferred = ictx.outputs();
  std::vector<Tensor> outs(n.outputs.size());
  std::vector<Tensor*> pout;
  for (size_t o = 0; o < outs.size(); ++o) {
    const TensorType& t = ictx.outputs()[o];
    if (t.fully_known()) outs[o] = Tensor(t.dtype, t.concrete());
    pout.push_back(&outs[o]);  // left empty when unknown: the kernel must allocate_output it
  }
  RunContext rctx(n, ins, pout);
  k->run(rctx);
  for (size_t o = 0; o < outs.size(); ++o)
    if (outs[o].empty()) throw Error(ErrorCode::RuntimeError, "output " + std::to_string(o) + " was not produced");
  return outs;
}

Node resize_node(std::map<std::string, Attribute> attrs, bool roi, bool scales, bool sizes) {
  Node n;
  n.name = "r";
  n.op_type = "Resize";
  n.inputs = {"X", roi ? "roi" : "", scales ? "scales" : "", sizes ? "sizes" : ""};
  n.outputs = {"Y"};
  n.attrs = std::move(attrs);
  return n;
}

void expect_near_all(const Tensor& y, const std::vector<float>& want, float tol, const std::string& what) {
  ASSERT_EQ((size_t)y.numel(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(y.data<float>()[i], want[i], tol) << what << " element " << i;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Hand-computable cases.

TEST(Resize, NearestAsymmetricFloorUpsample) {
  Node n = resize_node({{"mode", sattr("nearest")}, {"coordinate_transformation_mode", sattr("asymmetric")},
                        {"nearest_mode", sattr("floor")}}, false, true, false);
  Tensor x = f32({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor s = f32({4}, {1, 1, 2, 1.5f});
  auto y = run_node(n, 13, {&x, nullptr, &s, nullptr});
  EXPECT_EQ(y[0].shape(), (Shape{1, 1, 4, 3}));
  // x_in = x_out / scale, floored: rows 0,0,1,1; cols 0,0,1 (1/1.5=0.67, 2/1.5=1.33).
  expect_near_all(y[0], {1, 1, 2, 1, 1, 2, 3, 3, 4, 3, 3, 4}, 0, "nearest");
}

TEST(Resize, LinearAlignCornersAndHalfPixel) {
  Tensor x = f32({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor sz = i64({1, 1, 3, 3});
  Node ac = resize_node({{"mode", sattr("linear")}, {"coordinate_transformation_mode", sattr("align_corners")}}, false, false, true);
  auto y = run_node(ac, 13, {&x, nullptr, nullptr, &sz});
  expect_near_all(y[0], {1, 1.5f, 2, 2, 2.5f, 3, 3, 3.5f, 4}, 1e-6f, "align_corners");
  // half_pixel, 1-D [0, 1] -> 4: x_in = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (edges clamp).
  Tensor x1 = f32({1, 2}, {0, 1});
  Tensor s1 = f32({2}, {1, 2});
  Node hp = resize_node({{"mode", sattr("linear")}}, false, true, false);
  y = run_node(hp, 13, {&x1, nullptr, &s1, nullptr});
  expect_near_all(y[0], {0, 0.25f, 0.75f, 1}, 1e-6f, "half_pixel");
}

TEST(Resize, CubicOnAConstantIsExactAndLinearRampIsReproduced) {
  // Keys' kernel sums to one and reproduces linear functions away from the clamped border.
  std::vector<float> ramp(8);
  for (int i = 0; i < 8; ++i) ramp[i] = (float)i;
  Tensor x = f32({1, 8}, ramp);
  Tensor s = f32({2}, {1, 2});
  Node n = resize_node({{"mode", sattr("cubic")}, {"coordinate_transformation_mode", sattr("asymmetric")}}, false, true, false);
  auto y = run_node(n, 13, {&x, nullptr, &s, nullptr});
  ASSERT_EQ(y[0].shape(), (Shape{1, 16}));
  for (int o = 2; o < 12; ++o) EXPECT_NEAR(y[0].data<float>()[o], o / 2.0f, 1e-5f) << o;
}

TEST(Resize, TfCropAndResizeExtrapolates) {
  // roi [0.5, 1.5] on a length-3 axis maps outputs to x_in = 1 + x * 2 / (out - 1): 1, 2, 3(out of range).
  Tensor x = f32({1, 3}, {10, 20, 30});
  Tensor roi = f32({2}, {0.5f, 1.5f});
  Tensor sz = i64({3});
  Node n = resize_node({{"mode", sattr("linear")}, {"coordinate_transformation_mode", sattr("tf_crop_and_resize")},
                        {"extrapolation_value", fattr(-7)}, {"axes", intsattr({1})}}, true, false, true);
  auto y = run_node(n, 18, {&x, &roi, nullptr, &sz});
  expect_near_all(y[0], {20, 30, -7}, 1e-6f, "crop");
}

TEST(Resize, KeepAspectRatioPolicies) {
  Tensor x(DType::Float32, {1, 1, 4, 8});
  Tensor sz = i64({2, 2});
  auto shape_for = [&](const char* policy) {
    Node n = resize_node({{"axes", intsattr({2, 3})}, {"keep_aspect_ratio_policy", sattr(policy)}}, false, false, true);
    return run_node(n, 18, {&x, nullptr, nullptr, &sz})[0].shape();
  };
  EXPECT_EQ(shape_for("stretch"), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(shape_for("not_larger"), (Shape{1, 1, 1, 2}));   // scale min(2/4, 2/8) = 0.25
  EXPECT_EQ(shape_for("not_smaller"), (Shape{1, 1, 2, 4}));  // scale max = 0.5
}

TEST(Resize, ShapeInference) {
  Node n = resize_node({{"mode", sattr("linear")}}, false, true, false);
  Tensor s = f32({4}, {1, 1, 0.6f, 2.5f});
  TensorType x;
  x.dtype = DType::Float32;
  x.has_shape = true;
  x.dims = {Dim::sym("batch"), Dim::of(3), Dim::of(5), Dim()};
  TensorType st = TensorType::of(DType::Float32, {4});
  auto k = registry().find("", "Resize", 13)->make(n, 13);
  {
    InferContext ctx(n, {&x, nullptr, &st, nullptr}, {nullptr, nullptr, &s, nullptr});
    k->infer(ctx);
    const TensorType& y = ctx.output(0);
    ASSERT_EQ(y.rank(), 4);
    EXPECT_EQ(y.dims[0].symbol, "batch");  // scale 1 keeps the symbol
    EXPECT_EQ(y.dims[1].value, 3);
    EXPECT_EQ(y.dims[2].value, 3);         // floor(5 * 0.6)
    EXPECT_FALSE(y.dims[3].known());
  }
  {  // scales not known at plan time: every resized axis unknown, rank known
    InferContext ctx(n, {&x, nullptr, &st, nullptr}, {nullptr, nullptr, nullptr, nullptr});
    k->infer(ctx);
    EXPECT_EQ(ctx.output(0).rank(), 4);
    EXPECT_FALSE(ctx.output(0).dims[2].known());
  }
}

TEST(Resize, BadInputsThrow) {
  Tensor x(DType::Float32, {1, 1, 2, 2});
  Tensor s3 = f32({3}, {1, 2, 2});
  Node n = resize_node({}, false, true, false);
  EXPECT_THROW(run_node(n, 13, {&x, nullptr, &s3, nullptr}), Error);  // wrong scales length
  Tensor sneg = f32({4}, {1, 1, -2, 2});
  EXPECT_THROW(run_node(n, 13, {&x, nullptr, &sneg, nullptr}), Error);
  Node bad = resize_node({{"mode", sattr("area")}}, false, true, false);
  EXPECT_THROW(registry().find("", "Resize", 13)->make(bad, 13), Error);
  Node badct = resize_node({{"coordinate_transformation_mode", sattr("nope")}}, false, true, false);
  EXPECT_THROW(registry().find("", "Resize", 13)->make(badct, 13), Error);
  Node none = resize_node({}, false, false, false);
  EXPECT_THROW(run_node(none, 13, {&x, nullptr, nullptr, nullptr}), Error);  // neither scales nor sizes
  Node ax = resize_node({{"axes", intsattr({5})}}, false, true, false);
  Tensor s1 = f32({1}, {2});
  EXPECT_THROW(run_node(ax, 18, {&x, nullptr, &s1, nullptr}), Error);  // axis out of range
}

TEST(Upsample, Opset7AttributeAndOpset9Input) {
  Tensor x = f32({1, 1, 1, 2}, {1, 2});
  Node n7;
  n7.name = "u";
  n7.op_type = "Upsample";
  n7.inputs = {"X"};
  n7.outputs = {"Y"};
  Attribute sc;
  sc.kind = Attribute::Floats;
  sc.floats = {1, 1, 2, 2};
  n7.attrs["scales"] = sc;
  auto y = run_node(n7, 7, {&x});
  EXPECT_EQ(y[0].shape(), (Shape{1, 1, 2, 4}));
  expect_near_all(y[0], {1, 1, 2, 2, 1, 1, 2, 2}, 0, "upsample7");
  Node n9 = n7;
  n9.attrs.clear();
  n9.attrs["mode"] = sattr("linear");
  n9.inputs = {"X", "scales"};
  Tensor s = f32({4}, {1, 1, 1, 2});
  y = run_node(n9, 9, {&x, &s});
  expect_near_all(y[0], {1, 1.5f, 2, 2}, 1e-6f, "upsample9 linear asymmetric");
}

// ---------------------------------------------------------------------------------------------------------
// PyTorch references. Tolerance 1e-5 absolute: inputs lie in [0, 1); kiln accumulates at most 4x4x4 float
// products with float weights (relative error ~1e-7 each), and PyTorch derives its source coordinates in
// float32 (error <= ~1e-6 in position, which moves an interpolated value by at most that much times a slope
// below 1 per pixel, or ~1.3 for cubic overshoot) - both well under 1e-5.

TEST(Resize, MatchesPyTorchInterpolate) {
  std::ifstream f(std::string(KILN_SOURCE_DIR) + "/tests/unit/data/resize_refs.txt");
  ASSERT_TRUE(f.good()) << "missing tests/unit/data/resize_refs.txt (run tests/unit/gen_resize_refs.py)";
  std::string line;
  int cases = 0;
  auto read_line = [&](const char* tag) {
    std::getline(f, line);
    std::istringstream is(line);
    std::string t;
    is >> t;
    EXPECT_EQ(t, tag);
    std::vector<double> v;
    double d;
    while (is >> d) v.push_back(d);
    return v;
  };
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    std::istringstream is(line);
    std::string tag, name, mode, coord, nm, a, by;
    is >> tag >> name >> mode >> coord >> nm >> a >> by;
    ASSERT_EQ(tag, "case");
    auto in = read_line("in");
    auto out = read_line("out");
    auto spec = read_line(by.c_str());
    spec.erase(spec.begin());  // the count
    auto xv = read_line("x");
    auto yv = read_line("y");
    Shape is_(in.begin() + 1, in.end()), os(out.begin() + 1, out.end());
    Tensor x(DType::Float32, is_);
    ASSERT_EQ((size_t)x.numel(), xv.size()) << name;
    for (size_t i = 0; i < xv.size(); ++i) x.data<float>()[i] = (float)xv[i];
    std::map<std::string, Attribute> attrs = {{"mode", sattr(mode)}, {"coordinate_transformation_mode", sattr(coord)},
                                              {"nearest_mode", sattr(nm)}, {"cubic_coeff_a", fattr(std::stof(a))}};
    const bool by_scales = by == "scales";
    Node n = resize_node(attrs, false, by_scales, !by_scales);
    Tensor s(DType::Float32, {(int64_t)spec.size()});
    for (size_t i = 0; i < spec.size(); ++i) s.data<float>()[i] = (float)spec[i];
    std::vector<int64_t> szv(spec.begin(), spec.end());
    Tensor sz = i64(szv);
    auto y = run_node(n, 13, {&x, nullptr, by_scales ? &s : nullptr, by_scales ? nullptr : &sz});
    ASSERT_EQ(y[0].shape(), os) << name;
    expect_near_all(y[0], std::vector<float>(yv.begin(), yv.end()), 1e-5f, name);
    ++cases;
  }
  EXPECT_GE(cases, 18);
}

// ---------------------------------------------------------------------------------------------------------
// Fast kernels against the reference kernel.

namespace {

struct FastCase {
  Shape in, out;
  cpu::ResizeOptions o;
  std::vector<double> rs, re;  // roi per dim (empty: 0..1)
};

void check_fast(const FastCase& c, bool expect_fast = true) {
  const int rank = (int)c.in.size();
  std::vector<double> scales(rank);
  for (int d = 0; d < rank; ++d) scales[d] = (double)c.out[d] / (double)c.in[d];
  std::vector<double> rs = c.rs.empty() ? std::vector<double>(rank, 0.0) : c.rs;
  std::vector<double> re = c.re.empty() ? std::vector<double>(rank, 1.0) : c.re;
  cpu::ResizePlan p = cpu::make_resize_plan(c.in, c.out, scales, rs, re, c.o);
  Tensor x(DType::Float32, c.in), yr(DType::Float32, c.out), yf(DType::Float32, c.out);
  std::mt19937 g(7);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = u(g);
  cpu::resize_reference(p, x.data<float>(), yr.data<float>());
  bool fast = cpu::resize_fast_f32(p, x.data<float>(), yf.data<float>());
  ASSERT_EQ(fast, expect_fast) << shape_str(c.in) << " -> " << shape_str(c.out);
  if (!fast) return;
  // Same float taps; the fast kernel sums in float, the reference in double: 1e-5 covers 64-term float sums of
  // |values| <= 1 with |weights| <= 1.3.
  for (int64_t i = 0; i < yr.numel(); ++i)
    ASSERT_NEAR(yf.data<float>()[i], yr.data<float>()[i], 1e-5f) << shape_str(c.in) << " -> " << shape_str(c.out) << " at " << i;
  if (p.nearest && !p.any_extrap) {  // byte gather must equal the reference exactly
    Tensor yb(DType::Float32, c.out);
    ASSERT_TRUE(cpu::resize_nearest_bytes(p, x.raw(), yb.raw(), 4));
    for (int64_t i = 0; i < yr.numel(); ++i) ASSERT_EQ(yb.data<float>()[i], yr.data<float>()[i]);
  }
}

}  // namespace

TEST(ResizeFast, MatchesReference) {
  using cpu::CoordMode;
  using cpu::ResizeMode;
  std::vector<cpu::ResizeOptions> opts;
  for (ResizeMode m : {ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic})
    for (CoordMode c : {CoordMode::HalfPixel, CoordMode::PytorchHalfPixel, CoordMode::AlignCorners, CoordMode::Asymmetric}) {
      cpu::ResizeOptions o;
      o.mode = m;
      o.coord = c;
      opts.push_back(o);
    }
  cpu::ResizeOptions aa;
  aa.mode = ResizeMode::Cubic;
  aa.antialias = true;
  aa.exclude_outside = true;
  opts.push_back(aa);
  aa.mode = ResizeMode::Linear;
  opts.push_back(aa);
  std::vector<std::pair<Shape, Shape>> shapes = {
      {{2, 3, 5, 7}, {2, 3, 10, 14}}, {{2, 3, 9, 8}, {2, 3, 4, 3}},   {{1, 2, 3, 4, 5}, {1, 2, 6, 8, 10}},
      {{1, 2, 6, 5, 4}, {1, 2, 3, 7, 2}}, {{3, 4, 5, 6}, {3, 4, 5, 11}}, {{3, 4, 5, 6}, {3, 4, 9, 6}},
      {{7, 9}, {7, 4}},                {{1, 1, 1, 1}, {1, 1, 3, 5}}};
  for (auto& o : opts)
    for (auto& [in, out] : shapes) check_fast({in, out, o, {}, {}});
  // Extrapolation on both the row and the column axes.
  cpu::ResizeOptions tf;
  tf.mode = ResizeMode::Linear;
  tf.coord = CoordMode::TfCropAndResize;
  tf.extrapolation_value = 5.f;
  check_fast({{1, 2, 6, 6}, {1, 2, 5, 7}, tf, {0, 0, -0.2, 0.3}, {1, 1, 0.9, 1.4}});
  tf.mode = ResizeMode::Nearest;
  check_fast({{1, 2, 6, 6}, {1, 2, 5, 7}, tf, {0, 0, -0.2, 0.3}, {1, 1, 0.9, 1.4}});
  // More than three trailing resized axes: the fast kernel declines, the reference handles it.
  cpu::ResizeOptions lin;
  lin.mode = ResizeMode::Linear;
  check_fast({{2, 3, 4, 5}, {4, 3, 4, 5}, lin, {}, {}}, false);
}

TEST(ResizeFast, BilinearX2Timing) {
  // Not a pass/fail benchmark: prints the time of a typical decoder upsample for the record.
  cpu::ResizeOptions o;
  o.mode = cpu::ResizeMode::Linear;
  o.coord = cpu::CoordMode::PytorchHalfPixel;
  Shape in{1, 64, 128, 128}, out{1, 64, 256, 256};
  cpu::ResizePlan p = cpu::make_resize_plan(in, out, {1, 1, 2, 2}, {0, 0, 0, 0}, {1, 1, 1, 1}, o);
  Tensor x(DType::Float32, in), y(DType::Float32, out);
  ASSERT_TRUE(cpu::resize_fast_f32(p, x.data<float>(), y.data<float>()));
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) cpu::resize_fast_f32(p, x.data<float>(), y.data<float>());
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 5;
  std::printf("bilinear x2 [1,64,128,128] -> [1,64,256,256]: %.2f ms\n", ms);
}

// ---------------------------------------------------------------------------------------------------------
// NonMaxSuppression and the random ops.

TEST(NonMaxSuppression, DataDependentOutput) {
  Node n;
  n.name = "nms";
  n.op_type = "NonMaxSuppression";
  n.inputs = {"boxes", "scores", "max", "iou", "score_th"};
  n.outputs = {"sel"};
  // Box 1 overlaps box 0 heavily (IoU 0.81); box 2 is disjoint; box 3 is below the score threshold.
  Tensor boxes = f32({1, 4, 4}, {0, 0, 1, 1, 0, 0, 0.9f, 0.9f, 5, 5, 6, 6, 10, 10, 11, 11});
  Tensor scores = f32({1, 1, 4}, {0.9f, 0.95f, 0.5f, 0.05f});
  Tensor mx = i64({10});
  Tensor iou = f32({1}, {0.5f});
  Tensor sth = f32({1}, {0.1f});
  std::vector<TensorType> inferred;
  auto y = run_node(n, 11, {&boxes, &scores, &mx, &iou, &sth}, &inferred);
  EXPECT_FALSE(inferred[0].fully_known());
  ASSERT_EQ(y[0].shape(), (Shape{2, 3}));
  const int64_t* s = y[0].data<int64_t>();
  EXPECT_EQ(s[2], 1);  // highest score first
  EXPECT_EQ(s[5], 2);
  Tensor bad = f32({1, 4, 3}, std::vector<float>(12, 0));
  EXPECT_THROW(run_node(n, 11, {&bad, &scores, &mx, &iou, &sth}), Error);
}

TEST(RandomOps, ShapesDtypesAndSeededRepeatability) {
  Node n;
  n.name = "rn";
  n.op_type = "RandomNormal";
  n.outputs = {"y"};
  n.attrs["shape"] = intsattr({2, 3});
  n.attrs["seed"] = fattr(3);
  n.attrs["dtype"] = iattr((int64_t)DType::Float64);
  auto a = run_node(n, 1, {});
  auto b = run_node(n, 1, {});
  ASSERT_EQ(a[0].shape(), (Shape{2, 3}));
  ASSERT_EQ(a[0].dtype(), DType::Float64);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a[0].data<double>()[i], b[0].data<double>()[i]);  // same seed, fresh kernel
  EXPECT_TRUE(registry().find("", "RandomNormal", 1)->flags.nondeterministic);

  Node bn;
  bn.name = "b";
  bn.op_type = "Bernoulli";
  bn.inputs = {"p"};
  bn.outputs = {"y"};
  Tensor p = f32({1000}, std::vector<float>(1000, 0.25f));
  auto y = run_node(bn, 15, {&p});
  ASSERT_EQ(y[0].dtype(), DType::Float32);
  int ones = 0;
  for (int i = 0; i < 1000; ++i) {
    float v = y[0].data<float>()[i];
    ASSERT_TRUE(v == 0.f || v == 1.f);
    ones += v == 1.f;
  }
  EXPECT_GT(ones, 150);  // 250 expected; 150 and 350 are > 7 standard deviations away
  EXPECT_LT(ones, 350);
  Tensor badp = f32({1}, {1.5f});
  EXPECT_THROW(run_node(bn, 15, {&badp}), Error);
}
