// Loader, validation and session tests on models built here with the ONNX protobuf classes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "kiln/session.h"
#include "kiln_proto/onnx.pb.h"
#include "onnx/loader.h"
#include "onnx/wire.h"
#include "onnx_build.h"
#include "test_util.h"

using namespace kiln;
namespace fs = std::filesystem;

using namespace kiln::testing_util;
using kiln::testing_onnx::add_node;

namespace {

void set_type(onnx::ValueInfoProto* v, const std::string& name, int elem, std::vector<std::string> dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* sh = tt->mutable_shape();
  for (auto& d : dims) {
    auto* dim = sh->add_dim();
    if (!d.empty() && std::isdigit((unsigned char)d[0])) dim->set_dim_value(std::stoll(d));
    else dim->set_dim_param(d);
  }
}

// x[batch, 4] -> Identity chain of `len` -> y
onnx::ModelProto identity_chain(int len, std::vector<std::string> xdims = {"batch", "4"}, const std::string& op = "Identity") {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("chain");
  set_type(g->add_input(), "x", 1, xdims);
  set_type(g->add_output(), "y", 1, xdims);
  std::string prev = "x";
  for (int i = 0; i < len; ++i) {
    std::string out = i + 1 == len ? "y" : "t" + std::to_string(i);
    add_node(g, op, {prev}, {out});
    prev = out;
  }
  return m;
}

Status load(const onnx::ModelProto& m, std::unique_ptr<Session>* s, const std::string& dir = ".", bool optimize = true) {
  SessionOptions opt;
  opt.optimize = optimize;
  return Session::load_from_bytes(m.SerializeAsString(), dir, opt, s);
}

Tensor filled(Shape s, float v0) {
  Tensor t(DType::Float32, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = v0 + (float)i;
  return t;
}

}  // namespace

TEST(Loader, RunsAtSeveralBatchSizes) {
  std::unique_ptr<Session> s;
  ASSERT_TRUE(load(identity_chain(3), &s).ok());
  EXPECT_EQ(s->inputs()[0].shape_str(), "[batch, 4]");
  for (int64_t b : {1, 3, 7}) {
    std::vector<Tensor> out;
    Tensor x = filled({b, 4}, 1.0f);
    ASSERT_TRUE(s->run({{"x", x}}, &out).ok());
    ASSERT_EQ(out[0].shape(), (Shape{b, 4}));
    for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(out[0].data<float>()[i], x.data<float>()[i]);
  }
}

TEST(Loader, MemoryPlanReusesBuffers) {
  std::unique_ptr<Session> s;
  // Unoptimised, so the identities stay (the passes would remove them) and the planner itself is tested.
  ASSERT_TRUE(load(identity_chain(4, {"1024", "256"}, "Relu"), &s, ".", false).ok());
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({{"x", filled({1024, 256}, 0)}}, &out).ok());
  // Three 1 MiB intermediates with lifetimes [0,1], [1,2], [2,3]: the first and last share.
  EXPECT_EQ(s->stats().arena_bytes, 2u * 1024 * 256 * 4);
  // The same chain of Identity nodes: each output is a view of its input's buffer, so all three share one.
  ASSERT_TRUE(load(identity_chain(4, {"1024", "256"}), &s, ".", false).ok());
  Tensor x = filled({1024, 256}, 0);
  ASSERT_TRUE(s->run({{"x", x}}, &out).ok());
  EXPECT_EQ(s->stats().arena_bytes, 1u * 1024 * 256 * 4);
  for (int64_t i = 0; i < x.numel(); i += 4099) EXPECT_EQ(out[0].data<float>()[i], x.data<float>()[i]);
}

TEST(Loader, InputValidationNamesTheProblem) {
  std::unique_ptr<Session> s;
  ASSERT_TRUE(load(identity_chain(1), &s).ok());
  std::vector<Tensor> out;
  Status st = s->run({{"z", filled({1, 4}, 0)}}, &out);
  EXPECT_EQ(st.code(), ErrorCode::InvalidArgument);
  EXPECT_NE(st.message().find("no input named 'z'"), std::string::npos) << st.message();
  st = s->run({}, &out);
  EXPECT_NE(st.message().find("missing input 'x'"), std::string::npos) << st.message();
  st = s->run({{"x", filled({1, 4, 1}, 0)}}, &out);
  EXPECT_NE(st.message().find("rank 3"), std::string::npos) << st.message();
  st = s->run({{"x", filled({1, 5}, 0)}}, &out);
  EXPECT_NE(st.message().find("axis 1 must be 4"), std::string::npos) << st.message();
  st = s->run({{"x", Tensor(DType::Int64, {1, 4})}}, &out);
  EXPECT_NE(st.message().find("has type int64, expected float32"), std::string::npos) << st.message();
}

TEST(Loader, ListsEveryUnsupportedOpAtLoad) {
  auto m = identity_chain(1);
  auto* g = m.mutable_graph();
  add_node(g, "FancyOp", {"x"}, {"f1"}, "fancy_a");
  add_node(g, "OtherOp", {"f1"}, {"f2"}, "other_b")->set_domain("com.example");
  set_type(g->add_output(), "f2", 1, {"batch", "4"});  // live, so dead-node removal cannot hide them
  m.add_opset_import()->set_domain("com.example");
  m.mutable_opset_import(1)->set_version(3);
  std::unique_ptr<Session> s;
  Status st = load(m, &s);
  EXPECT_EQ(st.code(), ErrorCode::Unsupported);
  EXPECT_NE(st.message().find("FancyOp (domain ai.onnx, opset 17) at node 'fancy_a'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("OtherOp (domain com.example, opset 3) at node 'other_b'"), std::string::npos) << st.message();
}

TEST(Loader, TruncatedAndGarbageFilesGiveErrors) {
  std::string bytes = identity_chain(2).SerializeAsString();
  std::unique_ptr<Session> s;
  for (size_t cut : {bytes.size() / 2, bytes.size() - 1, (size_t)3}) {
    Status st = Session::load_from_bytes(bytes.substr(0, cut), ".", {}, &s);
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(st.code(), ErrorCode::InvalidModel) << st.message();
  }
  Status st = Session::load_from_bytes("", ".", {}, &s);
  EXPECT_NE(st.message().find("empty"), std::string::npos);
  st = Session::load("/nonexistent/model.onnx", {}, &s);
  EXPECT_EQ(st.code(), ErrorCode::IoError);
  EXPECT_NE(st.message().find("/nonexistent/model.onnx"), std::string::npos);
}

TEST(Loader, RejectsGraphErrors) {
  auto m = identity_chain(1);
  m.mutable_graph()->mutable_node(0)->set_input(0, "nowhere");
  std::unique_ptr<Session> s;
  Status st = load(m, &s);
  EXPECT_NE(st.message().find("input 'nowhere' is not a graph input"), std::string::npos) << st.message();

  auto c = identity_chain(2);  // x -> t0 -> y ; make t0's producer read y: a cycle
  c.mutable_graph()->mutable_node(0)->set_input(0, "y");
  st = load(c, &s);
  EXPECT_NE(st.message().find("cycle"), std::string::npos) << st.message();
}

TEST(Loader, InitializerSizeMismatchNamesTensor) {
  auto m = identity_chain(1);
  auto* init = m.mutable_graph()->add_initializer();
  init->set_name("w");
  init->set_data_type(1);
  init->add_dims(1000);
  init->set_raw_data(std::string(12, '\0'));
  std::unique_ptr<Session> s;
  Status st = load(m, &s);
  EXPECT_EQ(st.code(), ErrorCode::InvalidModel);
  EXPECT_NE(st.message().find("initializer 'w'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("needs 4000"), std::string::npos) << st.message();
}

// w lives in a side file; y = Identity(w).
onnx::ModelProto external_model(const std::string& location, int64_t offset, int64_t n) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  set_type(g->add_output(), "y", 1, {std::to_string(n)});
  auto* init = g->add_initializer();
  init->set_name("w");
  init->set_data_type(1);
  init->add_dims(n);
  init->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* kv = init->add_external_data();
  kv->set_key("location");
  kv->set_value(location);
  kv = init->add_external_data();
  kv->set_key("offset");
  kv->set_value(std::to_string(offset));
  add_node(g, "Identity", {"w"}, {"y"});
  return m;
}

TEST(Loader, ReadsExternalData) {
  TempDir dir;
  std::vector<float> w(16);
  for (int i = 0; i < 16; ++i) w[i] = 0.5f * i;
  {
    std::ofstream f(dir.path / "weights.bin", std::ios::binary);
    f.write("PAD!PAD!", 8);
    f.write(reinterpret_cast<const char*>(w.data()), 64);
  }
  auto m = external_model("weights.bin", 8, 16);
  std::string path = (dir.path / "model.onnx").string();
  {
    std::ofstream f(path, std::ios::binary);
    f << m.SerializeAsString();
  }
  std::unique_ptr<Session> s;
  Status st = Session::load(path, {}, &s);
  ASSERT_TRUE(st.ok()) << st.message();
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({}, &out).ok());
  for (int i = 0; i < 16; ++i) EXPECT_EQ(out[0].data<float>()[i], w[i]);

  // Too short, escaping the folder, and missing files are all clear errors.
  st = load(external_model("weights.bin", 40, 16), &s, dir.path.string());
  EXPECT_NE(st.message().find("needs 104"), std::string::npos) << st.message();
  st = load(external_model("../weights.bin", 0, 16), &s, dir.path.string());
  EXPECT_NE(st.message().find("leaves the model's folder"), std::string::npos) << st.message();
  st = load(external_model("missing.bin", 0, 16), &s, dir.path.string());
  EXPECT_EQ(st.code(), ErrorCode::IoError);
  EXPECT_NE(st.message().find("missing.bin"), std::string::npos) << st.message();
}

TEST(Loader, ShapeFoldingAtPlanTime) {
  // y = Shape(x): folded per input shape, so its value follows the batch.
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  set_type(g->add_input(), "x", 1, {"n", "3"});
  set_type(g->add_output(), "y", 7, {"2"});
  add_node(g, "Shape", {"x"}, {"y"});
  std::unique_ptr<Session> s;
  ASSERT_TRUE(load(m, &s).ok());
  for (int64_t n : {2, 5}) {
    std::vector<Tensor> out;
    ASSERT_TRUE(s->run({{"x", filled({n, 3}, 0)}}, &out).ok());
    EXPECT_EQ(out[0].data<int64_t>()[0], n);
    EXPECT_EQ(out[0].data<int64_t>()[1], 3);
  }
}

// ---- weights read in place (onnx/wire.h + the loader's split of ModelProto / GraphProto / TensorProto) ----------


TEST(Wire, SplitsFieldsAndRefusesWhatItDoesNotHandle) {
  // field 1 varint 300, field 2 fixed64, field 3 bytes "abc", field 4 fixed32
  const std::string m = std::string("\x08\xac\x02", 3) + std::string("\x11", 1) + std::string(8, 'x') + "\x1a\x03" "abc" +
                        std::string("\x25", 1) + std::string(4, 'y');
  std::vector<wire::Field> f;
  ASSERT_TRUE(wire::split(m.data(), m.size(), &f));
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0].number, 1u);
  EXPECT_EQ(f[1].type, wire::WireType::Fixed64);
  EXPECT_EQ(std::string(f[2].payload, f[2].payload_size), "abc");
  EXPECT_EQ(f[3].end, m.data() + m.size());
  for (size_t cut = 1; cut < m.size(); ++cut) {
    if (cut == 3 || cut == 12 || cut == 17) continue;  // field boundaries: a valid prefix
    EXPECT_FALSE(wire::split(m.data(), cut, &f)) << "cut at " << cut;
  }
  const std::string group("\x0b\x0c", 2), zero_field("\x00\x01", 2), long_varint(11, '\xff');
  EXPECT_FALSE(wire::split(group.data(), group.size(), &f));
  EXPECT_FALSE(wire::split(zero_field.data(), zero_field.size(), &f));
  EXPECT_FALSE(wire::split(long_varint.data(), long_varint.size(), &f));
}

namespace {

// y = a + b + c, with a in raw_data, b in float_data, c in raw_data given twice (protobuf: the last one counts).
onnx::ModelProto three_weights() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("weights");
  set_type(g->add_output(), "y", 1, {"3"});
  auto* a = g->add_initializer();
  a->set_name("a");
  a->set_data_type(1);
  a->add_dims(3);
  const float av[3] = {1.5f, -2.f, 4.f};
  a->set_raw_data(std::string(reinterpret_cast<const char*>(av), 12));
  auto* b = g->add_initializer();
  b->set_name("b");
  b->set_data_type(1);
  b->add_dims(3);
  for (float v : {10.f, 20.f, 30.f}) b->add_float_data(v);
  auto* c = g->add_initializer();
  c->set_name("c");
  c->set_data_type(1);
  c->add_dims(3);
  const float cv[3] = {100.f, 200.f, 300.f};
  c->set_raw_data(std::string(reinterpret_cast<const char*>(cv), 12));
  add_node(g, "Add", {"a", "b"}, {"ab"});
  add_node(g, "Add", {"ab", "c"}, {"y"});
  return m;
}

std::vector<float> run_const(const std::string& bytes) {
  std::unique_ptr<Session> s;
  SessionOptions opt;
  opt.optimize = false;  // keep the Adds: the values must come from the initializers at run time
  Status st = Session::load_from_bytes(bytes, ".", opt, &s);
  EXPECT_TRUE(st.ok()) << st.message();
  if (!st.ok()) return {};
  std::vector<Tensor> out;
  EXPECT_TRUE(s->run({}, &out).ok());
  return std::vector<float>(out[0].data<float>(), out[0].data<float>() + out[0].numel());
}

std::string varint(uint64_t v) {
  std::string r;
  for (; v >= 0x80; v >>= 7) r.push_back((char)((v & 0x7f) | 0x80));
  r.push_back((char)v);
  return r;
}

// `m` with c's TensorProto re-serialized by hand holding two raw_data fields, junk first (protobuf keeps the last).
std::string with_duplicate_raw(const onnx::ModelProto& m) {
  onnx::ModelProto rest = m;
  onnx::TensorProto c = rest.graph().initializer(2);
  rest.mutable_graph()->mutable_initializer()->RemoveLast();
  const std::string last = c.raw_data();
  c.clear_raw_data();
  const float junk[3] = {-7.f, -7.f, -7.f};
  onnx::TensorProto first, second;
  first.set_raw_data(std::string(reinterpret_cast<const char*>(junk), 12));
  second.set_raw_data(last);
  const std::string tensor = c.SerializeAsString() + first.SerializeAsString() + second.SerializeAsString();
  const std::string graph = rest.graph().SerializeAsString() + "\x2a" + varint(tensor.size()) + tensor;  // field 5
  rest.clear_graph();
  const std::string model = rest.SerializeAsString() + "\x3a" + varint(graph.size()) + graph;         // field 7
  onnx::ModelProto check;
  EXPECT_TRUE(check.ParseFromString(model));
  EXPECT_EQ(check.graph().initializer(2).raw_data(), last);  // what protobuf itself reads
  return model;
}

}  // namespace

TEST(Loader, ReadsWeightsInPlaceLikeProtobuf) {
  const std::vector<float> want{111.5f, 218.f, 334.f};
  const onnx::ModelProto m = three_weights();
  EXPECT_EQ(run_const(m.SerializeAsString()), want);
  // The same model from a file (the mapped path, which also hands the pages back).
  TempDir dir;
  const std::string path = (dir.path / "w.onnx").string();
  {
    std::ofstream f(path, std::ios::binary);
    f << m.SerializeAsString();
  }
  std::unique_ptr<Session> s;
  ASSERT_TRUE(Session::load(path, {}, &s).ok());
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({}, &out).ok());
  EXPECT_EQ(std::vector<float>(out[0].data<float>(), out[0].data<float>() + 3), want);
  // raw_data twice in one tensor: the last one, as protobuf reads it.
  EXPECT_EQ(run_const(with_duplicate_raw(m)), want);
  // The graph in two pieces (protobuf merges them): the plain protobuf path.
  onnx::ModelProto head = m, tail;
  auto* inits = head.mutable_graph()->mutable_initializer();
  *tail.mutable_graph()->add_initializer() = inits->Get(2);
  inits->RemoveLast();
  EXPECT_EQ(run_const(head.SerializeAsString() + tail.SerializeAsString()), want);
}
