// Loader, validation and session tests on models built here with the ONNX protobuf classes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "kiln/session.h"
#include "kiln_proto/onnx.pb.h"
#include "onnx/loader.h"

using namespace kiln;
namespace fs = std::filesystem;

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

onnx::NodeProto* add_node(onnx::GraphProto* g, const std::string& op, std::vector<std::string> in,
                          std::vector<std::string> out, const std::string& name = "") {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(name.empty() ? op + "_" + out[0] : name);
  for (auto& s : in) n->add_input(s);
  for (auto& s : out) n->add_output(s);
  return n;
}

// x[batch, 4] -> Identity chain of `len` -> y
onnx::ModelProto identity_chain(int len, std::vector<std::string> xdims = {"batch", "4"}) {
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
    add_node(g, "Identity", {prev}, {out});
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

struct TempDir {
  fs::path p;
  TempDir() {
    p = fs::temp_directory_path() / ("kiln_test_" + std::to_string(::getpid()) + "_" + std::to_string(rand()));
    fs::create_directories(p);
  }
  ~TempDir() { fs::remove_all(p); }
};

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
  ASSERT_TRUE(load(identity_chain(4, {"1024", "256"}), &s, ".", false).ok());
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({{"x", filled({1024, 256}, 0)}}, &out).ok());
  // Three 1 MiB intermediates with lifetimes [0,1], [1,2], [2,3]: the first and last share.
  EXPECT_EQ(s->stats().arena_bytes, 2u * 1024 * 256 * 4);
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
    std::ofstream f(dir.p / "weights.bin", std::ios::binary);
    f.write("PAD!PAD!", 8);
    f.write(reinterpret_cast<const char*>(w.data()), 64);
  }
  auto m = external_model("weights.bin", 8, 16);
  std::string path = (dir.p / "model.onnx").string();
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
  st = load(external_model("weights.bin", 40, 16), &s, dir.p.string());
  EXPECT_NE(st.message().find("needs 104"), std::string::npos) << st.message();
  st = load(external_model("../weights.bin", 0, 16), &s, dir.p.string());
  EXPECT_NE(st.message().find("leaves the model's folder"), std::string::npos) << st.message();
  st = load(external_model("missing.bin", 0, 16), &s, dir.p.string());
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
