// kiln verify DIR: runs an ONNX test-case folder (model.onnx + test_data_set_*/input_*.pb, output_*.pb)
// and compares every output with its reference: |got - want| <= atol + rtol * |want| for floats
// (NaN matches NaN, infinities must match exactly), exact equality for integers and bools.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "common.h"
#include "onnx/loader.h"

namespace fs = std::filesystem;

namespace kiln::cli {

namespace {

struct VerifyOptions {
  std::string dir;
  double rtol = 1e-3;
  double atol = 1e-5;
  double scale_atol = 0;  // adds scale_atol * max|want| of each output to atol
  int threads = 0;
  bool argmax = false;
};

// Files or folders named <prefix><number><suffix> in `dir`, ordered by number.
std::vector<std::pair<int64_t, fs::path>> numbered(const fs::path& dir, const std::string& prefix, const std::string& suffix,
                                                   bool dirs) {
  std::vector<std::pair<int64_t, fs::path>> r;
  std::regex re(prefix + "([0-9]{1,9})" + suffix);
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    if (dirs != e.is_directory()) continue;
    std::smatch m;
    std::string name = e.path().filename().string();
    if (std::regex_match(name, m, re)) r.push_back({std::stoll(m[1]), e.path()});
  }
  std::sort(r.begin(), r.end());
  return r;
}

std::string index_str(int64_t flat, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int d = (int)shape.size() - 1; d >= 0; --d) {
    if (shape[d] > 0) {
      idx[d] = flat % shape[d];
      flat /= shape[d];
    }
  }
  return shape_str(idx);
}

struct Comparison {
  bool pass = true;
  std::string detail;  // why it failed, or extra notes
  double max_abs = 0, max_rel = 0;
  int64_t bad = 0;
  int64_t argmax_positions = -1, argmax_diff = 0;
  int64_t argmax_decisive = 0;  // differing positions where the reference's top-2 gap exceeds 2 * atol
  double atol = 0;              // effective absolute tolerance used
};

// Argmax over axis 1 for every (outer, inner) position; first maximum wins, NaN never wins.
// `gap` (optional) receives the difference between the largest and second-largest value.
std::vector<int64_t> argmax_axis1(const std::vector<double>& v, const Shape& s, std::vector<double>* gap = nullptr) {
  int64_t outer = s[0], k = s[1], inner = 1;
  for (size_t d = 2; d < s.size(); ++d) inner *= s[d];
  std::vector<int64_t> r((size_t)(outer * inner), -1);
  if (gap) gap->assign(r.size(), INFINITY);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      int64_t best = -1;
      double bv = 0, second = -INFINITY;
      for (int64_t j = 0; j < k; ++j) {
        double x = v[(o * k + j) * inner + i];
        if (std::isnan(x)) continue;
        if (best < 0 || x > bv) {
          if (best >= 0) second = bv;
          best = j;
          bv = x;
        } else if (x > second) {
          second = x;
        }
      }
      r[o * inner + i] = best;
      if (gap) (*gap)[o * inner + i] = bv - second;
    }
  return r;
}

Comparison compare(const Tensor& got, const Tensor& want, const VerifyOptions& o) {
  Comparison c;
  if (got.dtype() != want.dtype()) {
    c.pass = false;
    c.detail = std::string("type ") + dtype_name(got.dtype()) + ", expected " + dtype_name(want.dtype());
    return c;
  }
  if (got.shape() != want.shape()) {
    c.pass = false;
    c.detail = "shape " + shape_str(got.shape()) + ", expected " + shape_str(want.shape());
    return c;
  }
  auto g = to_double_values(got), w = to_double_values(want);
  const bool exact = !is_float_dtype(want.dtype());
  double scale = 0;
  for (double b : w)
    if (std::isfinite(b)) scale = std::max(scale, std::fabs(b));
  const double atol = o.atol + o.scale_atol * scale;
  c.atol = atol;
  int64_t worst = -1;
  double worst_excess = -1;
  for (size_t i = 0; i < g.size(); ++i) {
    double a = g[i], b = w[i];
    bool ok;
    double d;
    if (std::isnan(a) || std::isnan(b)) {
      ok = std::isnan(a) && std::isnan(b);
      d = ok ? 0 : INFINITY;
    } else if (std::isinf(a) || std::isinf(b)) {
      ok = a == b;
      d = ok ? 0 : INFINITY;
    } else {
      d = std::fabs(a - b);
      ok = exact ? a == b : d <= atol + o.rtol * std::fabs(b);
    }
    c.max_abs = std::max(c.max_abs, d);
    if (b != 0 && !std::isnan(b)) c.max_rel = std::max(c.max_rel, d / std::fabs(b));
    else if (d > 0) c.max_rel = INFINITY;
    if (!ok) {
      ++c.bad;
      double excess = std::isinf(d) ? INFINITY : d - (atol + o.rtol * std::fabs(b));
      if (worst < 0 || excess > worst_excess) { worst = (int64_t)i; worst_excess = excess; }
    }
  }
  if (c.bad) {
    c.pass = false;
    c.detail = std::to_string(c.bad) + " of " + std::to_string(g.size()) + " elements " +
               (exact ? "differ" : "outside tolerance") + "; worst at " + index_str(worst, want.shape()) + ": got " +
               fmt_num(g[worst]) + ", want " + fmt_num(w[worst]);
  }
  if (want.rank() >= 2 && want.dim(1) > 0 && want.numel() > 0) {
    std::vector<double> gap;
    auto ag = argmax_axis1(g, want.shape()), aw = argmax_axis1(w, want.shape(), &gap);
    c.argmax_positions = (int64_t)ag.size();
    // A flip where the reference's two best scores are within 2 * atol of each other is a numerical tie:
    // two implementations each within atol of the truth may legitimately rank them either way.
    for (size_t i = 0; i < ag.size(); ++i) {
      if (ag[i] == aw[i]) continue;
      ++c.argmax_diff;
      if (!(gap[i] <= 2 * atol)) ++c.argmax_decisive;
    }
    if (o.argmax && c.argmax_decisive) {
      c.pass = false;
      c.detail += std::string(c.detail.empty() ? "" : "; ") + "argmax over axis 1 differs at " + std::to_string(c.argmax_decisive) +
                  " of " + std::to_string(c.argmax_positions) + " positions where the reference's top-2 gap exceeds 2 * atol";
    }
  }
  return c;
}

std::string fmt_err(double v) {
  if (std::isinf(v)) return "inf";
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

int verify_command(const VerifyOptions& o) {
  if (!(o.rtol >= 0) || !(o.atol >= 0) || !(o.scale_atol >= 0)) usage_error("--rtol, --atol and --scale-atol must be >= 0");
  fs::path dir(o.dir);
  std::error_code ec;
  if (!fs::exists(dir, ec)) usage_error(o.dir + ": no such folder (expected an ONNX test case: model.onnx + test_data_set_*/)");
  if (!fs::is_directory(dir, ec)) usage_error(o.dir + ": not a folder (expected an ONNX test case: model.onnx + test_data_set_*/)");
  fs::path model = dir / "model.onnx";
  if (!fs::exists(model, ec)) usage_error(o.dir + ": has no model.onnx");
  auto sets = numbered(dir, "test_data_set_", "", true);
  if (sets.empty()) usage_error(o.dir + ": has no test_data_set_<N> folders");

  double load_ms = 0;
  auto session = load_model(model.string(), o.threads, &load_ms);
  const auto& in_specs = session->inputs();
  const auto& out_specs = session->outputs();
  std::string atol_str = fmt_err(o.atol) +
                         (o.scale_atol > 0 ? " + " + fmt_err(o.scale_atol) + " * max|ref|" : "");
  std::printf("verify    %s  (%zu data set%s, rtol %g, atol %s%s, %d thread%s)\n", o.dir.c_str(), sets.size(),
              sets.size() == 1 ? "" : "s", o.rtol, atol_str.c_str(), o.argmax ? ", argmax required" : "", session->threads(),
              session->threads() == 1 ? "" : "s");

  int checked = 0, failed = 0;
  for (auto& [num, set_dir] : sets) {
    const std::string set_name = set_dir.filename().string();
    std::printf("%s\n", set_name.c_str());
    // Inputs: by the name stored in the .pb when it names a model input, else by position.
    auto in_files = numbered(set_dir, "input_", "\\.pb", false);
    std::vector<std::pair<std::string, Tensor>> feeds;
    for (size_t i = 0; i < in_files.size(); ++i) {
      std::string stored;
      Tensor t;
      try {
        t = load_tensor_file(in_files[i].second.string(), &stored);
      } catch (const Error& e) {
        throw CliError{kExitUsage, e.what()};
      }
      bool known = false;
      for (auto& s : in_specs) known = known || s.name == stored;
      std::string name = known ? stored : (i < in_specs.size() ? in_specs[i].name : "");
      if (name.empty())
        usage_error(in_files[i].second.string() + ": the model has only " + std::to_string(in_specs.size()) +
                    " inputs (" + input_list(in_specs) + ")");
      feeds.push_back({name, t});
    }
    std::vector<Tensor> outputs;
    Status st = session->run(feeds, &outputs);
    if (!st.ok()) {
      std::printf("  FAIL  the model did not run: %s\n", st.message().c_str());
      ++failed;
      ++checked;
      continue;
    }
    auto out_files = numbered(set_dir, "output_", "\\.pb", false);
    if (out_files.empty()) {
      std::printf("  FAIL  no output_<N>.pb reference files in %s\n", set_dir.string().c_str());
      ++failed;
      ++checked;
      continue;
    }
    for (size_t i = 0; i < out_files.size(); ++i) {
      std::string stored;
      Tensor want;
      try {
        want = load_tensor_file(out_files[i].second.string(), &stored);
      } catch (const Error& e) {
        throw CliError{kExitUsage, e.what()};
      }
      int idx = -1;
      for (size_t k = 0; k < out_specs.size(); ++k)
        if (out_specs[k].name == stored) idx = (int)k;
      if (idx < 0) idx = (int)i;
      ++checked;
      if (idx >= (int)outputs.size()) {
        std::printf("  FAIL  %s: the model has only %zu outputs\n", out_files[i].second.filename().string().c_str(), outputs.size());
        ++failed;
        continue;
      }
      Comparison c = compare(outputs[idx], want, o);
      std::string line = "  " + std::string(c.pass ? "PASS" : "FAIL") + "  " + out_specs[idx].name + "  " +
                         dtype_name(want.dtype()) + shape_str(want.shape());
      if (c.detail.rfind("type ", 0) != 0 && c.detail.rfind("shape ", 0) != 0) {
        line += "  max abs err " + fmt_err(c.max_abs) + "  max rel err " + fmt_err(c.max_rel);
        if (c.argmax_positions >= 0 && (o.argmax || c.argmax_diff))
          line += "  argmax diff " + std::to_string(c.argmax_diff) + "/" + std::to_string(c.argmax_positions) +
                  (c.argmax_diff ? " (" + std::to_string(c.argmax_diff - c.argmax_decisive) + " at near-ties)" : "");
      }
      std::printf("%s\n", line.c_str());
      if (!c.pass) {
        std::printf("        %s\n", c.detail.c_str());
        ++failed;
      }
    }
  }
  if (failed) {
    std::printf("result    FAIL: %d of %d output check%s failed\n", failed, checked, checked == 1 ? "" : "s");
    return kExitFailure;
  }
  std::printf("result    PASS: %d output check%s in %zu data set%s\n", checked, checked == 1 ? "" : "s", sets.size(),
              sets.size() == 1 ? "" : "s");
  return kExitOk;
}

}  // namespace

void add_verify_command(CLI::App& app, int* rc) {
  auto o = std::make_shared<VerifyOptions>();
  auto* sub = app.add_subcommand("verify", "Check a model against an ONNX test-case folder (model.onnx + test_data_set_*/)");
  sub->add_option("dir", o->dir, "test-case folder")->required();
  sub->add_option("--rtol", o->rtol, "relative tolerance: pass if |got - want| <= atol + rtol * |want|")->capture_default_str();
  sub->add_option("--atol", o->atol, "absolute tolerance")->capture_default_str();
  sub->add_option("--scale-atol", o->scale_atol,
                 "add S * max|reference| (per output) to atol: a tolerance relative to the output's scale")
      ->capture_default_str();
  sub->add_option("-t,--threads", o->threads, "threads (0 = all available cores)")->capture_default_str();
  sub->add_flag("--argmax", o->argmax,
                "also require the same argmax over axis 1 (classifier/segmenter outputs) wherever the reference's "
                "top-2 gap exceeds 2 * atol (closer gaps are numerical ties); reports all differing positions");
  add_command(app, sub, [o] { return verify_command(*o); }, rc);
}

}  // namespace kiln::cli
