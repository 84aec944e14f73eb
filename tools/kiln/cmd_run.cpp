// kiln run MODEL --input name=file.npy ...: runs a model on .npy inputs, summarises the outputs
// (argmax predictions and accuracy for classifiers), optionally writes them, and times it.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "common.h"
#include "compare.h"
#include "graph/graph.h"
#include "io/npy.h"

namespace kiln::cli {

namespace {

struct RunOptions {
  std::string model;
  std::vector<std::string> inputs;
  std::string output_dir;
  std::string labels;
  int threads = 0;
  int repeat = 10;
  std::vector<std::string> expect;
  Tolerance tol;
};

// Checks a loaded array against the declared input; messages name the input and the file.
void check_input(const ValueSpec& spec, const Tensor& t, const std::string& file) {
  const std::string expected = std::string(dtype_name(spec.dtype)) + spec.shape_str();
  const std::string got = std::string(dtype_name(t.dtype())) + shape_str(t.shape());
  const std::string where = "input '" + spec.name + "' (" + file + ")";
  if (t.dtype() != spec.dtype) {
    std::string hint;
    if (!npy::descr_of(spec.dtype).empty())
      hint = "; convert it with arr.astype(np." + std::string(spec.dtype == DType::Bool ? "bool_" : dtype_name(spec.dtype)) + ")";
    usage_error(where + " has type " + dtype_name(t.dtype()) + ", expected " + expected + hint);
  }
  if (!spec.has_shape) return;
  if ((size_t)t.rank() != spec.dims.size())
    usage_error(where + " has rank " + std::to_string(t.rank()) + " (shape " + got + "), expected rank " +
                std::to_string(spec.dims.size()) + ": " + expected);
  for (size_t d = 0; d < spec.dims.size(); ++d)
    if (spec.dims[d] >= 0 && t.shape()[d] != spec.dims[d])
      usage_error(where + " has shape " + got + ", expected " + expected + " (axis " + std::to_string(d) + " must be " +
                  std::to_string(spec.dims[d]) + ")");
}

std::string safe_file_name(const std::string& name) {
  std::string r = name.empty() ? "output" : name;
  for (auto& c : r)
    if (!(std::isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-')) c = '_';
  if (r == "." || r == "..") r = "_" + r;
  return r;
}

// A row of small integers aligned to a common width.
std::string int_row(const std::vector<int64_t>& v, size_t n, int width) {
  std::string s;
  char b[32];
  for (size_t i = 0; i < n && i < v.size(); ++i) {
    std::snprintf(b, sizeof b, "%*lld", width, (long long)v[i]);
    s += (i ? " " : "") + std::string(b);
  }
  return s;
}

int run_command(const RunOptions& o) {
  if (o.repeat < 1) usage_error("--repeat must be at least 1, got " + std::to_string(o.repeat));
  if (!(o.tol.rtol >= 0) || !(o.tol.atol >= 0)) usage_error("--rtol and --atol must be >= 0");
  double load_ms = 0;
  auto session = load_model(o.model, o.threads, &load_ms);
  const auto& specs = session->inputs();

  // Inputs: resolve names, load, validate against the declared types.
  auto named = resolve_named_args(o.inputs, specs, "--input", "FILE.npy");
  std::vector<std::pair<std::string, Tensor>> feeds;
  std::vector<std::string> files;
  for (auto& spec : specs) {
    auto it = std::find_if(named.begin(), named.end(), [&](auto& p) { return p.first == spec.name; });
    if (it == named.end())
      usage_error("missing input '" + spec.name + "': expected " + dtype_name(spec.dtype) + spec.shape_str() +
                  "; pass --input " + (specs.size() == 1 ? "" : spec.name + "=") + "FILE.npy");
    Tensor t;
    try {
      t = npy::load(it->second);
    } catch (const Error& e) {
      throw CliError{kExitUsage, "input '" + spec.name + "': " + e.what()};
    }
    check_input(spec, t, it->second);
    feeds.push_back({spec.name, t});
    files.push_back(it->second);
  }

  // Labels are checked before running so a bad file fails fast.
  Tensor labels;
  if (!o.labels.empty()) {
    try {
      labels = npy::load(o.labels);
    } catch (const Error& e) {
      throw CliError{kExitUsage, std::string("--labels: ") + e.what()};
    }
    if ((labels.dtype() != DType::Int64 && labels.dtype() != DType::Int32) || labels.rank() != 1)
      usage_error("--labels " + o.labels + ": expected int64[N] or int32[N] class indices, got " + dtype_name(labels.dtype()) +
                  shape_str(labels.shape()));
  }

  // Reference outputs (--expect), loaded before running so a bad file fails fast.
  auto expect_named = resolve_named_args(o.expect, session->outputs(), "--expect", "FILE.npy", "output");
  std::vector<std::pair<std::string, Tensor>> expected;
  for (auto& [name, file] : expect_named) {
    try {
      expected.push_back({name, npy::load(file)});
    } catch (const Error& e) {
      throw CliError{kExitUsage, "--expect " + name + ": " + e.what()};
    }
  }

  const Graph& g = session->graph();
  std::printf("model     %s  (%zu node%s, opset %lld, %s of weights)\n", o.model.c_str(), g.nodes.size(),
              g.nodes.size() == 1 ? "" : "s",
              (long long)g.opset(""), fmt_bytes((double)session->stats().weight_bytes).c_str());
  for (size_t i = 0; i < feeds.size(); ++i)
    std::printf("input     %s  %s%s  <- %s\n", feeds[i].first.c_str(), dtype_name(feeds[i].second.dtype()),
                shape_str(feeds[i].second.shape()).c_str(), files[i].c_str());

  // First run (warm-up), then the timed repeats.
  std::vector<Tensor> outputs;
  double t0 = now_ms();
  check(session->run(feeds, &outputs), "running " + o.model);
  const double first_ms = now_ms() - t0;
  std::vector<double> times;
  for (int r = 0; r < o.repeat; ++r) {
    t0 = now_ms();
    check(session->run(feeds, &outputs), "running " + o.model);
    times.push_back(now_ms() - t0);
  }

  // Outputs.
  const auto& out_specs = session->outputs();
  int classifier = -1;  // first [N, K] float output: its argmax rows are the predictions
  std::vector<int64_t> predictions;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& t = outputs[i];
    const std::string name = i < out_specs.size() ? out_specs[i].name : "output" + std::to_string(i);
    std::printf("\noutput    %s  %s%s\n", name.c_str(), dtype_name(t.dtype()), shape_str(t.shape()).c_str());
    if (t.numel() == 0) {
      std::printf("          (empty)\n");
    } else if (dtype_size(t.dtype()) > 0 && t.dtype() != DType::String) {
      Summary s = summarize(t);
      std::printf("          min %.5g  max %.5g  mean %.5g", s.min, s.max, s.mean);
      if (s.nan) std::printf("  NaN: %lld", (long long)s.nan);
      if (s.inf) std::printf("  Inf: %lld", (long long)s.inf);
      std::printf("\n");
      if (t.numel() <= 8) {
        auto v = to_double_values(t);
        std::printf("          values");
        for (double x : v) std::printf(" %s", fmt_num(x).c_str());
        std::printf("\n");
      }
    }
    if (t.rank() == 2 && is_float_dtype(t.dtype()) && t.dim(0) > 0 && t.dim(1) > 0) {
      auto am = argmax_rows(t);
      if (classifier < 0) {
        classifier = (int)i;
        predictions = am;
      }
      const size_t shown = std::min<size_t>(am.size(), 32);
      const bool with_labels = (int)i == classifier && labels.numel() > 0 && labels.dim(0) == (int64_t)am.size();
      std::vector<int64_t> li;
      if (with_labels) {
        auto lv = to_double_values(labels);
        li.assign(lv.begin(), lv.end());
      }
      int64_t maxv = 0;
      for (size_t k = 0; k < shown; ++k) maxv = std::max({maxv, am[k], with_labels ? li[k] : int64_t(0)});
      const int width = (int)std::to_string(maxv).size();
      std::printf("          predicted  %s   (argmax over %lld classes%s)\n", int_row(am, shown, width).c_str(), (long long)t.dim(1),
                  am.size() > shown ? ("; first " + std::to_string(shown) + " of " + std::to_string(am.size()) + " rows").c_str() : "");
      if (with_labels) {
        std::string marks;
        for (size_t k = 0; k < shown; ++k) marks += (k ? " " : "") + std::string(width - 1, ' ') + (am[k] == li[k] ? " " : "^");
        while (!marks.empty() && marks.back() == ' ') marks.pop_back();
        std::printf("          labels     %s\n", int_row(li, shown, width).c_str());
        if (!marks.empty()) std::printf("                     %s   (^ = wrong)\n", marks.c_str());
      }
    }
    if (!o.output_dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(o.output_dir, ec);
      if (ec) failure("--output-dir " + o.output_dir + ": cannot create the folder (" + ec.message() + ")");
      std::string path = (std::filesystem::path(o.output_dir) / (safe_file_name(name) + ".npy")).string();
      try {
        npy::save(path, t);
      } catch (const Error& e) {
        failure(std::string("writing output '") + name + "': " + e.what());
      }
      std::printf("          wrote %s\n", path.c_str());
    }
  }

  // Accuracy.
  if (labels.numel() > 0 || !o.labels.empty()) {
    std::printf("\n");
    if (classifier < 0)
      usage_error("--labels needs a float output of shape [N, K] to take the argmax of; the model's outputs have none");
    if (labels.dim(0) != (int64_t)predictions.size())
      usage_error("--labels " + o.labels + " has " + std::to_string(labels.dim(0)) + " labels, but output '" +
                  out_specs[classifier].name + "' has " + std::to_string(predictions.size()) + " rows");
    auto lv = to_double_values(labels);
    int64_t correct = 0;
    std::vector<size_t> wrong;
    for (size_t k = 0; k < predictions.size(); ++k) {
      if ((int64_t)lv[k] == predictions[k]) ++correct;
      else wrong.push_back(k);
    }
    std::printf("accuracy  %lld / %zu = %.1f%%  (labels: %s)\n", (long long)correct, predictions.size(),
                predictions.empty() ? 0.0 : 100.0 * (double)correct / (double)predictions.size(), o.labels.c_str());
    if (!wrong.empty()) {
      std::printf("          misclassified:");
      for (size_t k = 0; k < wrong.size() && k < 8; ++k)
        std::printf("%s #%zu (predicted %lld, label %lld)", k ? "," : "", wrong[k], (long long)predictions[wrong[k]],
                    (long long)lv[wrong[k]]);
      if (wrong.size() > 8) std::printf(", ... %zu more", wrong.size() - 8);
      std::printf("\n");
    }
  }

  // Comparison with reference outputs.
  int mismatches = 0;
  if (!expected.empty()) std::printf("\n");
  for (size_t e = 0; e < expected.size(); ++e) {
    const auto& [name, want] = expected[e];
    size_t idx = 0;
    while (idx < out_specs.size() && out_specs[idx].name != name) ++idx;
    Comparison c = compare(outputs[idx], want, o.tol);
    std::printf("expect    %s  %s  vs %s  (rtol %g, atol %g)\n", c.pass ? "PASS" : "FAIL", name.c_str(),
                expect_named[e].second.c_str(), o.tol.rtol, o.tol.atol);
    if (c.comparable) std::printf("          %s\n", error_summary(c, o.tol).c_str());
    if (!c.pass) {
      std::printf("          %s\n", c.detail.c_str());
      ++mismatches;
    }
  }

  // Timing.
  const double med = median(times);
  std::printf("\nload      %s\n", fmt_ms(load_ms).c_str());
  std::printf("latency   %s median of %d run%s (first run %s, %d thread%s)\n", fmt_ms(med).c_str(), o.repeat,
              o.repeat == 1 ? "" : "s",
              fmt_ms(first_ms).c_str(), session->threads(), session->threads() == 1 ? "" : "s");
  int64_t batch = 0;
  for (auto& f : feeds)
    if (f.second.rank() >= 1) { batch = f.second.dim(0); break; }
  if (batch > 1) std::printf("          %s per sample (batch %lld)\n", fmt_ms(med / (double)batch).c_str(), (long long)batch);
  if (mismatches) {
    std::fflush(stdout);
    std::fprintf(stderr, "kiln run: %d output%s did not match the --expect reference\n", mismatches, mismatches == 1 ? "" : "s");
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

void add_run_command(CLI::App& app, int* rc) {
  auto o = std::make_shared<RunOptions>();
  auto* sub = app.add_subcommand("run", "Run a model on .npy inputs and summarise its outputs");
  sub->add_option("model", o->model, "ONNX model file")->required();
  sub->add_option("-i,--input", o->inputs,
                  "NAME=FILE.npy for each model input (just FILE.npy when the model has one input)")->allow_extra_args(false);
  sub->add_option("-o,--output-dir", o->output_dir, "write every output to DIR/<output name>.npy");
  sub->add_option("-t,--threads", o->threads, "threads (0 = all available cores)")->capture_default_str();
  sub->add_option("--labels", o->labels, "int64/int32 [N] class labels: prints the accuracy of the argmax predictions");
  sub->add_option("--repeat", o->repeat, "timed runs after one warm-up run; the median is reported")->capture_default_str();
  sub->add_option("--expect", o->expect,
                  "NAME=FILE.npy reference output to compare with (just FILE.npy when the model has one output); exit 1 on mismatch")
      ->allow_extra_args(false);
  sub->add_option("--rtol", o->tol.rtol, "--expect: relative tolerance, |got - want| <= atol + rtol * |want|")->capture_default_str();
  sub->add_option("--atol", o->tol.atol, "--expect: absolute tolerance")->capture_default_str();
  sub->add_flag("--argmax", o->tol.argmax, "--expect: also require the same argmax over axis 1");
  add_command(app, sub, [o] { return run_command(*o); }, rc);
}

}  // namespace kiln::cli
