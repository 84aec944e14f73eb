// The kiln binary as a user sees it: runs it as a subprocess on the tiny models in tests/data/cli
// (made by tests/unit/make_cli_models.py) and checks exit codes and messages. Every bad input must
// exit with a non-zero code below 128 (no signal, no crash) and a message naming the culprit.
#include <gtest/gtest.h>

#include <chrono>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/npy.h"
#include "onnx/loader.h"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

const std::string kBinary = KILN_BINARY_DIR "/kiln";
const std::string kData = KILN_SOURCE_DIR "/tests/data/cli";

struct Result {
  int code = -1;
  bool signaled = false;
  std::string out;  // stdout and stderr together
};

std::string quote(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

Result kiln_cli(const std::vector<std::string>& args) {
  std::string cmd = quote(kBinary);
  for (auto& a : args) cmd += " " + quote(a);
  cmd += " 2>&1";
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.signaled = WIFSIGNALED(status);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  // Sanitizer builds exit with 1 on a memory error, which a test expecting failure would accept.
  if (r.out.find("Sanitizer") != std::string::npos || r.out.find("runtime error:") != std::string::npos)
    ADD_FAILURE() << "sanitizer report from: " << cmd << "\n" << r.out;
  return r;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kBinary)) << kBinary << " is missing: build the kiln_cli target first";
    tmp_ = fs::temp_directory_path() / ("kiln_cli_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(tmp_);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  std::string tmp(const std::string& name) const { return (tmp_ / name).string(); }

  std::string save_floats(const std::string& name, Shape shape, std::vector<float> values) {
    Tensor t(DType::Float32, shape);
    for (size_t i = 0; i < values.size(); ++i) t.data<float>()[i] = values[i];
    npy::save(tmp(name), t);
    return tmp(name);
  }
  std::string save_tensor(const std::string& name, const Tensor& t) {
    npy::save(tmp(name), t);
    return tmp(name);
  }
  std::string write_bytes(const std::string& name, const std::string& bytes) {
    std::ofstream(tmp(name), std::ios::binary) << bytes;
    return tmp(name);
  }

  fs::path tmp_;
};

// A failed command: clean non-zero exit, message containing every fragment.
void expect_clean_failure(const Result& r, int code, std::initializer_list<std::string> fragments) {
  EXPECT_FALSE(r.signaled) << r.out;
  EXPECT_LT(r.code, 128) << "killed by a signal? output:\n" << r.out;
  if (code >= 0) EXPECT_EQ(r.code, code) << r.out;
  else EXPECT_NE(r.code, 0) << r.out;
  for (auto& f : fragments) EXPECT_NE(r.out.find(f), std::string::npos) << "missing '" << f << "' in:\n" << r.out;
}

std::string identity_model() { return kData + "/identity.onnx"; }

}  // namespace

TEST_F(Cli, HelpForEverySubcommand) {
  for (std::string sub : {"run", "verify", "bench", "show"}) {
    Result r = kiln_cli({sub, "--help"});
    EXPECT_EQ(r.code, 0) << sub << ":\n" << r.out;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
  }
  EXPECT_NE(kiln_cli({"run", "--help"}).out.find("--labels"), std::string::npos);
  EXPECT_NE(kiln_cli({"bench", "--help"}).out.find("--trace"), std::string::npos);
  expect_clean_failure(kiln_cli({}), 2, {"subcommand"});
  expect_clean_failure(kiln_cli({"frobnicate"}), 2, {});
  expect_clean_failure(kiln_cli({"run"}), 2, {"model"});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--repeat", "abc"}), 2, {"--repeat"});
}

TEST_F(Cli, RunIdentityWritesOutputs) {
  std::string x = save_floats("x.npy", {2, 3}, {0, 1, 2, 5, 4, 3});
  Result r = kiln_cli({"run", identity_model(), "--input", "x=" + x, "--output-dir", tmp("out"), "--repeat", "3"});
  ASSERT_EQ(r.code, 0) << r.out;
  for (std::string f : {"float32[2, 3]", "min 0", "max 5", "mean 2.5", "latency", "load", "per sample (batch 2)"})
    EXPECT_NE(r.out.find(f), std::string::npos) << "missing '" << f << "' in:\n" << r.out;
  // argmax per row of [[0,1,2],[5,4,3]] is [2, 0]
  EXPECT_NE(r.out.find("predicted  2 0 "), std::string::npos) << r.out;
  Tensor y = npy::load(tmp("out") + "/y.npy");
  ASSERT_EQ(y.shape(), Shape({2, 3}));
  EXPECT_EQ(y.data<float>()[3], 5.0f);
  // Bare file name: the model has exactly one input. Options may precede the model.
  EXPECT_EQ(kiln_cli({"run", identity_model(), "--input", x}).code, 0);
  EXPECT_EQ(kiln_cli({"run", "--input", x, identity_model()}).code, 0);
}

TEST_F(Cli, RunAccuracyFromLabels) {
  std::string x = save_floats("x.npy", {3, 3}, {0, 1, 2, 5, 4, 3, 0, 9, 1});  // predictions 2 0 1
  Tensor labels(DType::Int64, {3});
  labels.data<int64_t>()[0] = 2;
  labels.data<int64_t>()[1] = 1;
  labels.data<int64_t>()[2] = 1;
  Result r = kiln_cli({"run", identity_model(), "--input", x, "--labels", save_tensor("labels.npy", labels)});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("2 / 3 = 66.7%"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("labels     2 1 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("#1 (predicted 0, label 1)"), std::string::npos) << r.out;

  Tensor wrong_count(DType::Int64, {4});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", x, "--labels", save_tensor("l4.npy", wrong_count)}), 2,
                       {"l4.npy", "4 labels", "3 rows"});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", x, "--labels", x}), 2, {"--labels", "int64", "float32[3, 3]"});
}

TEST_F(Cli, RunExpectComparesOutputs) {
  std::string x = save_floats("x.npy", {2, 3}, {0, 1, 2, 5, 4, 3});
  Result r = kiln_cli({"run", identity_model(), "--input", x, "--expect", "y=" + x, "--repeat", "1"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("PASS  y"), std::string::npos) << r.out;
  // 5 -> 5.01 is outside atol 1e-5 + rtol 1e-3 * 5.01, inside rtol 1e-2.
  std::string off = save_floats("off.npy", {2, 3}, {0, 1, 2, 5.01f, 4, 3});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", x, "--expect", off, "--repeat", "1"}), 1,
                       {"FAIL  y", "1 of 6 elements", "[1, 0]", "did not match"});
  EXPECT_EQ(kiln_cli({"run", identity_model(), "--input", x, "--expect", off, "--rtol", "1e-2", "--repeat", "1"}).code, 0);
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", x, "--expect", "q=" + off}), 2, {"no output named 'q'"});
  std::string other = save_floats("other.npy", {3, 2}, {});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", x, "--expect", other, "--repeat", "1"}), 1,
                       {"shape [2, 3], expected [3, 2]"});
}

TEST_F(Cli, WrongInputName) {
  std::string x = save_floats("x.npy", {2, 3}, {});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", "bogus=" + x}), 2, {"'bogus'", "x: float32[batch, 3]"});
}

TEST_F(Cli, WrongRank) {
  std::string x = save_floats("flat.npy", {6}, {});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", "x=" + x}), 2, {"'x'", "flat.npy", "rank 1", "expected rank 2"});
}

TEST_F(Cli, WrongShape) {
  std::string x = save_floats("wide.npy", {2, 4}, {});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", "x=" + x}), 2, {"'x'", "wide.npy", "[2, 4]", "axis 1 must be 3"});
}

TEST_F(Cli, WrongDtype) {
  std::string x = save_tensor("ints.npy", Tensor(DType::Int64, {2, 3}));
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", "x=" + x}), 2, {"'x'", "ints.npy", "int64", "expected float32"});
}

TEST_F(Cli, MissingInput) {
  std::string a = save_floats("a.npy", {2}, {1, 2});
  expect_clean_failure(kiln_cli({"run", kData + "/two_inputs.onnx", "--input", "a=" + a}), 2, {"missing input 'b'", "int64[2]"});
  // An unnamed file is ambiguous with two inputs.
  expect_clean_failure(kiln_cli({"run", kData + "/two_inputs.onnx", "--input", a}), 2, {"2 inputs", "NAME=FILE.npy"});
  expect_clean_failure(kiln_cli({"run", kData + "/two_inputs.onnx", "--input", "a=" + a, "--input", "a=" + a}), 2, {"more than once"});
}

TEST_F(Cli, BadNpyFiles) {
  std::string good = npy::serialize(Tensor(DType::Float32, {2, 3}));
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", write_bytes("cut.npy", good.substr(0, good.size() - 5))}), 2,
                       {"cut.npy", "truncated"});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", "x=" + tmp("nope.npy")}), 2, {"nope.npy"});
  expect_clean_failure(kiln_cli({"run", identity_model(), "--input", identity_model()}), 2, {"identity.onnx", "not a .npy file"});
}

TEST_F(Cli, UnsupportedOpsAreListed) {
  std::string x = save_floats("x.npy", {1}, {1});
  for (std::string sub : {"run", "bench"}) {
    std::vector<std::string> args = {sub, kData + "/unsupported.onnx"};
    if (sub == "run") args.insert(args.end(), {"--input", x});
    expect_clean_failure(kiln_cli(args), 1,
                         {"unsupported.onnx", "NotARealOp", "ai.onnx", "opset 17", "mystery_node", "FancyOp", "com.example",
                          "opset 3", "fancy_node"});
  }
  Result r = kiln_cli({"show", kData + "/unsupported.onnx"});
  expect_clean_failure(r, 1, {"NotARealOp", "mystery_node", "com.example:FancyOp", "fancy_node"});
}

TEST_F(Cli, NonexistentFile) {
  for (std::string sub : {"run", "bench", "show"})
    expect_clean_failure(kiln_cli({sub, tmp("missing.onnx")}), 2, {"missing.onnx", "no such file"});
  expect_clean_failure(kiln_cli({"verify", tmp("no_case")}), 2, {"no_case", "no such folder"});
}

TEST_F(Cli, GarbageModel) {
  std::string bytes(512, '\0');
  uint32_t s = 12345;
  for (auto& c : bytes) c = (char)((s = s * 1103515245u + 12345u) >> 16);
  std::string path = write_bytes("garbage.onnx", bytes);
  for (std::string sub : {"run", "bench", "show"}) expect_clean_failure(kiln_cli({sub, path}), -1, {"garbage.onnx"});
  expect_clean_failure(kiln_cli({"run", write_bytes("empty.onnx", "")}), -1, {"empty.onnx"});
}

TEST_F(Cli, TruncatedModel) {
  std::string bytes = read_file_bytes(kData + "/shape.onnx");
  // Cut in the middle of a field: must be refused, naming the file.
  expect_clean_failure(kiln_cli({"show", write_bytes("half.onnx", bytes.substr(0, bytes.size() / 2))}), -1, {"half.onnx"});
  expect_clean_failure(kiln_cli({"bench", write_bytes("half.onnx", bytes.substr(0, bytes.size() / 2))}), -1, {"half.onnx"});
  // Every prefix: never a crash (some prefixes end on a field boundary and are valid, smaller models).
  for (size_t n = 0; n < bytes.size(); n += 3) {
    Result r = kiln_cli({"bench", write_bytes("cut.onnx", bytes.substr(0, n)), "--runs", "1", "--warmup", "0"});
    EXPECT_FALSE(r.signaled) << "prefix " << n << ":\n" << r.out;
    EXPECT_LT(r.code, 128) << "prefix " << n << ":\n" << r.out;
    if (r.code != 0) EXPECT_NE(r.out.find("cut.onnx"), std::string::npos) << "prefix " << n << ":\n" << r.out;
  }
}

TEST_F(Cli, BenchJson) {
  Result r = kiln_cli({"bench", kData + "/shape.onnx", "--json", "--runs", "5", "--warmup", "1", "--threads", "1"});
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << "stdout is not exactly one JSON object:\n" << r.out;
  for (std::string k : {"median_ms", "p90_ms", "load_ms", "peak_rss_mb", "first_run_ms", "arena_mb", "threads", "runs", "min_ms", "mean_ms"})
    EXPECT_TRUE(j.contains(k)) << "missing key " << k << " in " << r.out;
  EXPECT_EQ(j["runs"], 5);
  EXPECT_EQ(j["threads"], 1);
  EXPECT_GE(j["p90_ms"].get<double>(), j["median_ms"].get<double>());
  EXPECT_GE(j["median_ms"].get<double>(), j["min_ms"].get<double>());
  EXPECT_GT(j["peak_rss_mb"].get<double>(), 0.0);
  // Dynamic dim defaults to 1; --shape overrides it.
  EXPECT_EQ(j["inputs"]["x"]["shape"], nlohmann::json::array({1, 4}));
  r = kiln_cli({"bench", kData + "/shape.onnx", "--json", "--runs", "2", "--shape", "x=7x4"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["inputs"]["x"]["shape"], nlohmann::json::array({7, 4}));
  expect_clean_failure(kiln_cli({"bench", kData + "/shape.onnx", "--shape", "x=7x5"}), 2, {"axis 1 must be 4", "'x'"});
  expect_clean_failure(kiln_cli({"bench", kData + "/shape.onnx", "--shape", "x=7xq"}), 2, {"not a shape"});
  expect_clean_failure(kiln_cli({"bench", kData + "/shape.onnx", "--shape", "y=7x4"}), 2, {"no input named 'y'"});
}

TEST_F(Cli, BenchStartupFields) {
  // Spawn time "now" (ns since the epoch, CLOCK_REALTIME): the start-up span is positive and contains the parts.
  const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  ::setenv("KILN_BENCH_SPAWN_NS", std::to_string(now_ns).c_str(), 1);
  Result r = kiln_cli({"bench", kData + "/shape.onnx", "--json", "--runs", "2", "--warmup", "1"});
  ::setenv("KILN_BENCH_SPAWN_NS", "12abc", 1);
  Result bad = kiln_cli({"bench", kData + "/shape.onnx", "--json", "--runs", "2"});
  ::unsetenv("KILN_BENCH_SPAWN_NS");
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j = nlohmann::json::parse(r.out);
  for (std::string k : {"boot_ms", "first_output_ms_since_spawn", "input_gen_ms", "startup_ms"})
    ASSERT_TRUE(j.contains(k)) << "missing key " << k << " in " << r.out;
  EXPECT_GE(j["boot_ms"].get<double>(), 0.0);
  EXPECT_GT(j["first_output_ms_since_spawn"].get<double>(), j["boot_ms"].get<double>());
  EXPECT_LE(j["startup_ms"].get<double>(), j["first_output_ms_since_spawn"].get<double>());
  EXPECT_GE(j["input_gen_ms"].get<double>(), 0.0);
  // A malformed value: a warning (stderr, merged here), the run goes on without the start-up fields.
  EXPECT_EQ(bad.code, 0) << bad.out;
  EXPECT_NE(bad.out.find("warning: ignoring KILN_BENCH_SPAWN_NS='12abc'"), std::string::npos) << bad.out;
  EXPECT_EQ(bad.out.find("startup_ms"), std::string::npos) << bad.out;
}

TEST_F(Cli, BenchProfileAndTrace) {
  Result r = kiln_cli({"bench", identity_model(), "--profile", "--trace", tmp("trace.json"), "--runs", "4", "--warmup", "1"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("op type"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Identity"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("id0"), std::string::npos) << r.out;
  std::ifstream f(tmp("trace.json"));
  nlohmann::json t = nlohmann::json::parse(f);
  int node_events = 0;
  for (auto& e : t["traceEvents"])
    if (e["ph"] == "X" && e["name"] == "id0") {
      ++node_events;
      EXPECT_GE(e["dur"].get<double>(), 0.0);
    }
  EXPECT_EQ(node_events, 4);  // one per node per timed run
  EXPECT_NE(r.out.find("first run ms"), std::string::npos) << r.out;
  // JSON: per op type and per node, the timed runs' total (4 calls) and the first run's share.
  r = kiln_cli({"bench", identity_model(), "--profile", "--json", "--runs", "4", "--warmup", "1"});
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["profile"]["op_types"].size(), 1u);
  const auto& op = j["profile"]["op_types"][0];
  EXPECT_EQ(op["op"], "Identity");
  EXPECT_EQ(op["count"], 4);
  EXPECT_GT(op["first_run_ms"].get<double>(), 0.0);
  EXPECT_LE(op["first_run_ms"].get<double>(), j["first_run_ms"].get<double>());
  EXPECT_EQ(j["profile"]["nodes"][0]["first_run_ms"], op["first_run_ms"]);
}

TEST_F(Cli, ShowHistogramAndParameters) {
  Result r = kiln_cli({"show", kData + "/shape.onnx"});
  ASSERT_EQ(r.code, 0) << r.out;
  for (std::string f : {"ir version  8", "kiln-tests", "ai.onnx 17", "float32[n, 4]", "int64[2]", "nodes       2", "Identity",
                        "Shape", "parameters  6 ", "24 B", "flops"})
    EXPECT_NE(r.out.find(f), std::string::npos) << "missing '" << f << "' in:\n" << r.out;
  // Identity copies 7x4 = 28 elements; Shape is folded at load time.
  r = kiln_cli({"show", kData + "/shape.onnx", "--shape", "x=7x4"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("flops       28 "), std::string::npos) << r.out;
}

TEST_F(Cli, VerifyPassesAndFailsOnTamperedOutput) {
  Result r = kiln_cli({"verify", kData + "/identity_case"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
  // Each data set runs twice by default, both runs checked (later runs may take other kernels); --runs sets it.
  EXPECT_NE(r.out.find("PASS  run 2  "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(2 runs each)"), std::string::npos) << r.out;
  r = kiln_cli({"verify", kData + "/identity_case", "--runs", "3"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("PASS  run 3  "), std::string::npos) << r.out;
  expect_clean_failure(kiln_cli({"verify", kData + "/identity_case", "--runs", "0"}), 2, {"--runs"});

  // Copy the case and change reference values. Defaults: atol 1e-5, rtol 1e-3; the reference value 7
  // tolerates |d| <= 1e-5 + 7e-3 = 0.00701.
  auto tamper = [&](const std::string& name, int64_t index, float value) {
    fs::path dst = tmp_ / name;
    fs::copy(kData + "/identity_case", dst, fs::copy_options::recursive);
    std::string pb = (dst / "test_data_set_0" / "output_0.pb").string();
    std::string tensor_name;
    Tensor t = load_tensor_file(pb, &tensor_name).clone();
    t.data<float>()[index] = value;
    std::ofstream(pb, std::ios::binary | std::ios::trunc) << serialize_tensor(t, tensor_name);
    return dst.string();
  };
  EXPECT_EQ(kiln_cli({"verify", tamper("within", 4, 7.0069f)}).code, 0);
  r = kiln_cli({"verify", tamper("outside", 4, 7.0072f)});
  expect_clean_failure(r, 1, {"FAIL", "1 of 6 elements", "[1, 1]"});
  // Looser tolerance accepts it.
  EXPECT_EQ(kiln_cli({"verify", tmp("outside"), "--rtol", "1e-2"}).code, 0);
  // Argmax of row 0 ([1, -2.5, 3.25]) changes when element 0 becomes 4. With a tolerance of |want| (rtol 1)
  // every element passes, and the reference's top-2 gap (0.75) exceeds 2 * atol (0), so only --argmax fails.
  std::string moved = tamper("argmax", 0, 4.0f);
  EXPECT_EQ(kiln_cli({"verify", moved, "--atol", "0", "--rtol", "1"}).code, 0);
  r = kiln_cli({"verify", moved, "--atol", "0", "--rtol", "1", "--argmax"});
  expect_clean_failure(r, 1, {"argmax diff 1/2"});
}

TEST_F(Cli, VerifyBadFolders) {
  fs::create_directories(tmp_ / "empty_case");
  expect_clean_failure(kiln_cli({"verify", tmp("empty_case")}), 2, {"empty_case", "model.onnx"});
  fs::copy_file(identity_model(), tmp_ / "empty_case" / "model.onnx");
  expect_clean_failure(kiln_cli({"verify", tmp("empty_case")}), 2, {"test_data_set_"});
  // A reference of the wrong shape fails the check, not the program.
  fs::create_directories(tmp_ / "empty_case" / "test_data_set_0");
  Tensor in(DType::Float32, {2, 3}), out(DType::Float32, {3, 2});
  std::ofstream(tmp("empty_case/test_data_set_0/input_0.pb"), std::ios::binary) << serialize_tensor(in, "x");
  std::ofstream(tmp("empty_case/test_data_set_0/output_0.pb"), std::ios::binary) << serialize_tensor(out, "y");
  expect_clean_failure(kiln_cli({"verify", tmp("empty_case")}), 1, {"FAIL", "shape [2, 3], expected [3, 2]"});
  // A corrupt .pb names the file.
  std::ofstream(tmp("empty_case/test_data_set_0/input_0.pb"), std::ios::binary) << std::string("\xff\xff\xff garbage", 12);
  expect_clean_failure(kiln_cli({"verify", tmp("empty_case")}), 2, {"input_0.pb"});
}
