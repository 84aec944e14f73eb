// Runs the ONNX backend node test cases in-process and compares with their expected outputs.
//   kiln_conformance --root DIR [--filter SUBSTR] [--manifest passing.txt] [--write-manifest F] [--report F.md] [-v]
// With --manifest, exits non-zero if any listed case no longer passes.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "kiln/session.h"
#include "onnx/loader.h"
#include "ops/common.h"

namespace fs = std::filesystem;
using namespace kiln;

enum class Outcome { Pass, Fail, Unsupported };

struct CaseResult {
  std::string name, ops;
  Outcome outcome;
  std::string detail;
};

// Upstream's tolerance for the node tests: numpy assert_allclose(rtol=1e-3, atol=1e-7).
static bool compare(const Tensor& got, const Tensor& want, std::string* why) {
  if (got.dtype() != want.dtype()) {
    *why = std::string("dtype ") + dtype_name(got.dtype()) + ", expected " + dtype_name(want.dtype());
    return false;
  }
  if (got.shape() != want.shape()) {
    *why = "shape " + shape_str(got.shape()) + ", expected " + shape_str(want.shape());
    return false;
  }
  if (is_float(want.dtype())) {
    auto a = to_doubles(got), b = to_doubles(want);
    double worst = 0;
    int64_t at = -1;
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::isnan(a[i]) && std::isnan(b[i])) continue;
      if (std::isinf(b[i]) && a[i] == b[i]) continue;
      double err = std::fabs(a[i] - b[i]);
      double tol = 1e-7 + 1e-3 * std::fabs(b[i]);
      if (!(err <= tol) && (at < 0 || err > worst)) { worst = err; at = (int64_t)i; }
    }
    if (at >= 0) {
      std::ostringstream o;
      o << "max abs error " << worst << " at element " << at << " (got " << a[at] << ", expected " << b[at] << ")";
      *why = o.str();
      return false;
    }
    return true;
  }
  if (std::memcmp(got.raw(), want.raw(), want.nbytes()) != 0) {
    int64_t at = 0;
    size_t es = dtype_size(want.dtype());
    while (at < want.numel() && std::memcmp((const char*)got.raw() + at * es, (const char*)want.raw() + at * es, es) == 0) ++at;
    *why = "values differ, first at element " + std::to_string(at);
    return false;
  }
  return true;
}

static CaseResult run_case(const fs::path& dir, const std::string& ops) {
  CaseResult r{dir.filename().string(), ops, Outcome::Fail, ""};
  std::unique_ptr<Session> s;
  SessionOptions opt;
  opt.threads = 1;
  Status st = Session::load((dir / "model.onnx").string(), opt, &s);
  if (!st.ok()) {
    r.outcome = st.code() == ErrorCode::Unsupported ? Outcome::Unsupported : Outcome::Fail;
    r.detail = st.message();
    return r;
  }
  std::vector<fs::path> sets;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0) sets.push_back(e.path());
  std::sort(sets.begin(), sets.end());
  for (auto& set : sets) {
    std::vector<std::pair<std::string, Tensor>> inputs;
    std::vector<Tensor> expected;
    try {
      for (size_t i = 0; i < s->inputs().size(); ++i) {
        fs::path p = set / ("input_" + std::to_string(i) + ".pb");
        if (!fs::exists(p)) break;
        inputs.push_back({s->inputs()[i].name, load_tensor_file(p.string())});
      }
      for (size_t i = 0;; ++i) {
        fs::path p = set / ("output_" + std::to_string(i) + ".pb");
        if (!fs::exists(p)) break;
        expected.push_back(load_tensor_file(p.string()));
      }
    } catch (const Error& e) {
      r.outcome = e.code() == ErrorCode::Unsupported || e.code() == ErrorCode::InvalidModel ? Outcome::Unsupported : Outcome::Fail;
      r.detail = std::string("test data: ") + e.what();
      return r;
    }
    std::vector<Tensor> outs;
    st = s->run(inputs, &outs);
    if (!st.ok()) {
      r.outcome = st.code() == ErrorCode::Unsupported ? Outcome::Unsupported : Outcome::Fail;
      r.detail = st.message();
      return r;
    }
    if (outs.size() < expected.size()) {
      r.detail = "produced " + std::to_string(outs.size()) + " outputs, expected " + std::to_string(expected.size());
      return r;
    }
    for (size_t i = 0; i < expected.size(); ++i) {
      std::string why;
      if (!compare(outs[i], expected[i], &why)) {
        r.detail = set.filename().string() + " output " + std::to_string(i) + " (" + s->outputs()[i].name + "): " + why;
        return r;
      }
    }
  }
  r.outcome = Outcome::Pass;
  return r;
}

int main(int argc, char** argv) {
  std::string root = "../shared/onnx-node-tests", filter, manifest, write_manifest, report;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { std::cerr << a << " needs a value\n"; std::exit(2); }
      return argv[++i];
    };
    if (a == "--root") root = next();
    else if (a == "--filter") filter = next();
    else if (a == "--manifest") manifest = next();
    else if (a == "--write-manifest") write_manifest = next();
    else if (a == "--report") report = next();
    else if (a == "-v" || a == "--verbose") verbose = true;
    else if (a == "-h" || a == "--help") {
      std::cout << "usage: kiln_conformance --root DIR [--filter SUBSTR] [--manifest F] [--write-manifest F] [--report F.md] [-v]\n";
      return 0;
    } else { std::cerr << "unknown option " << a << "\n"; return 2; }
  }
  std::ifstream index(fs::path(root) / "INDEX.tsv");
  if (!index) { std::cerr << "cannot read " << root << "/INDEX.tsv\n"; return 2; }
  std::vector<std::pair<std::string, std::string>> cases;
  std::string line;
  std::getline(index, line);  // header
  while (std::getline(index, line)) {
    std::istringstream ls(line);
    std::string name, ops;
    std::getline(ls, name, '\t');
    std::getline(ls, ops, '\t');
    if (filter.empty() || name.find(filter) != std::string::npos) cases.push_back({name, ops});
  }
  auto t0 = std::chrono::steady_clock::now();
  std::vector<CaseResult> results;
  int pass = 0, failn = 0, unsup = 0;
  for (auto& [name, ops] : cases) {
    CaseResult r = run_case(fs::path(root) / name, ops);
    (r.outcome == Outcome::Pass ? pass : r.outcome == Outcome::Fail ? failn : unsup)++;
    if (verbose || (r.outcome == Outcome::Fail && !filter.empty()))
      std::cout << (r.outcome == Outcome::Pass ? "PASS " : r.outcome == Outcome::Fail ? "FAIL " : "UNSUP ") << name
                << (r.detail.empty() ? "" : ": " + r.detail.substr(0, 300)) << "\n";
    results.push_back(std::move(r));
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("conformance: %d passed, %d failed, %d unsupported of %zu cases in %.1f s\n", pass, failn, unsup, cases.size(), secs);

  if (!write_manifest.empty()) {
    std::ofstream f(write_manifest);
    f << "# ONNX node test cases kiln passes; CI fails if one stops passing. Regenerate with\n"
         "#   build/kiln_conformance --root ../shared/onnx-node-tests --write-manifest tests/conformance/passing.txt\n";
    for (auto& r : results)
      if (r.outcome == Outcome::Pass) f << r.name << "\n";
  }
  if (!report.empty()) {
    // Per top-level op (a case counts toward each op in its node list's first entry when it is a single op).
    struct Row { int pass = 0, fail = 0, unsup = 0; };
    std::map<std::string, Row> rows;
    for (auto& r : results) {
      std::string key = r.ops.find(',') == std::string::npos ? r.ops : "(function-expanded / multi-op)";
      auto& row = rows[key];
      (r.outcome == Outcome::Pass ? row.pass : r.outcome == Outcome::Fail ? row.fail : row.unsup)++;
    }
    std::ofstream f(report);
    f << "# ONNX backend conformance\n\n"
      << "Generated by `build/kiln_conformance --root ../shared/onnx-node-tests --report docs/CONFORMANCE.md` "
         "over the " << cases.size() << " node test cases in `../shared/onnx-node-tests` (tolerance: rtol 1e-3, atol 1e-7, as upstream).\n\n"
      << "**" << pass << " passed, " << failn << " failed, " << unsup << " unsupported.**\n\n"
      << "| op | passed | failed | unsupported |\n|---|---:|---:|---:|\n";
    for (auto& [op, row] : rows) f << "| " << op << " | " << row.pass << " | " << row.fail << " | " << row.unsup << " |\n";
    f << "\n## Failing cases\n\n";
    for (auto& r : results)
      if (r.outcome == Outcome::Fail) {
        std::string d = r.detail.substr(0, 200);
        std::replace(d.begin(), d.end(), '\n', ' ');
        std::replace(d.begin(), d.end(), '|', '/');
        f << "- `" << r.name << "`: " << d << "\n";
      }
  }
  int rc = 0;
  if (!manifest.empty()) {
    std::ifstream f(manifest);
    if (!f) { std::cerr << "cannot read manifest " << manifest << "\n"; return 2; }
    std::map<std::string, const CaseResult*> by;
    for (auto& r : results) by[r.name] = &r;
    int listed = 0, regressed = 0;
    while (std::getline(f, line)) {
      if (line.empty() || line[0] == '#') continue;
      auto it = by.find(line);
      if (it == by.end()) continue;  // filtered out
      ++listed;
      if (it->second->outcome != Outcome::Pass) {
        ++regressed;
        rc = 1;
        std::cout << "REGRESSION " << line << ": " << it->second->detail.substr(0, 400) << "\n";
      }
    }
    std::printf("manifest: %d of %d listed cases still pass\n", listed - regressed, listed);
  }
  return rc;
}
