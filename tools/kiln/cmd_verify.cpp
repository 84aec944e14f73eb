// kiln verify DIR: runs an ONNX test-case folder (model.onnx + test_data_set_*/input_*.pb, output_*.pb)
// and compares every output with its reference: |got - want| <= atol + rtol * |want| for floats
// (NaN matches NaN, infinities must match exactly), exact equality for integers and bools.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "common.h"
#include "compare.h"
#include "onnx/loader.h"

namespace fs = std::filesystem;

namespace kiln::cli {

namespace {

struct VerifyOptions {
  std::string dir;
  Tolerance tol;
  int threads = 0;
  int runs = 2;
};

// Files or folders named <prefix><number><suffix> in `dir`, ordered by number.
std::vector<std::pair<int64_t, fs::path>> numbered(const fs::path& dir, const std::string& prefix, const std::string& suffix,
                                                   bool dirs) {
  std::vector<std::pair<int64_t, fs::path>> r;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    if (dirs != e.is_directory()) continue;
    std::string name = e.path().filename().string();
    if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    r.push_back({std::stoll(digits), e.path()});
  }
  std::sort(r.begin(), r.end());
  return r;
}

// A tensor file of the test case; an unreadable one is a usage error naming the file.
Tensor load_case_tensor(const fs::path& path, std::string* stored_name) {
  try {
    return load_tensor_file(path.string(), stored_name);
  } catch (const Error& e) {
    throw CliError{kExitUsage, e.what()};
  }
}

int verify_command(const VerifyOptions& o) {
  if (!(o.tol.rtol >= 0) || !(o.tol.atol >= 0) || !(o.tol.scale_atol >= 0))
    usage_error("--rtol, --atol and --scale-atol must be >= 0");
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
  char atol_str[96];
  if (o.tol.scale_atol > 0) std::snprintf(atol_str, sizeof atol_str, "%g + %g * max|ref|", o.tol.atol, o.tol.scale_atol);
  else std::snprintf(atol_str, sizeof atol_str, "%g", o.tol.atol);
  std::printf("verify    %s  (%zu data set%s, rtol %g, atol %s%s, %d thread%s)\n", o.dir.c_str(), sets.size(),
              sets.size() == 1 ? "" : "s", o.tol.rtol, atol_str, o.tol.argmax ? ", argmax required" : "", session->threads(),
              session->threads() == 1 ? "" : "s");

  int checked = 0, failed = 0;
  for (auto& [num, set_dir] : sets) {
    const std::string set_name = set_dir.filename().string();
    std::printf("%s\n", set_name.c_str());
    // Inputs: by the name stored in the .pb when it names a model input, else by position.
    auto in_files = numbered(set_dir, "input_", ".pb", false);
    std::vector<std::pair<std::string, Tensor>> feeds;
    for (size_t i = 0; i < in_files.size(); ++i) {
      std::string stored;
      Tensor t = load_case_tensor(in_files[i].second, &stored);
      bool known = false;
      for (auto& s : in_specs) known = known || s.name == stored;
      std::string name = known ? stored : (i < in_specs.size() ? in_specs[i].name : "");
      if (name.empty())
        usage_error(in_files[i].second.string() + ": the model has only " + std::to_string(in_specs.size()) +
                    " inputs (" + input_list(in_specs) + ")");
      feeds.push_back({name, t});
    }
    // Each data set runs o.runs times, every run checked: a shape's first run and the later ones may take different
    // kernels (e.g. Winograd convolution from the second run on, see backends/cpu/conv_dnnl.cpp). The references are
    // read once, after the first run that succeeds.
    struct Reference {
      fs::path file;
      std::string stored;  // the tensor name in the file
      Tensor want;
    };
    std::vector<Reference> refs;
    bool refs_read = false;
    for (int run = 1; run <= o.runs; ++run) {
      const std::string run_label = o.runs > 1 ? "run " + std::to_string(run) + "  " : "";
      std::vector<Tensor> outputs;
      Status st = session->run(feeds, &outputs);
      if (!st.ok()) {
        std::printf("  FAIL  %sthe model did not run: %s\n", run_label.c_str(), st.message().c_str());
        ++failed;
        ++checked;
        continue;
      }
      if (!refs_read) {
        refs_read = true;
        for (auto& [num, file] : numbered(set_dir, "output_", ".pb", false)) {
          Reference r{file, "", Tensor()};
          r.want = load_case_tensor(file, &r.stored);
          refs.push_back(std::move(r));
        }
      }
      if (refs.empty()) {
        std::printf("  FAIL  no output_<N>.pb reference files in %s\n", set_dir.string().c_str());
        ++failed;
        ++checked;
        break;
      }
      for (size_t i = 0; i < refs.size(); ++i) {
        const Tensor& want = refs[i].want;
        int idx = -1;
        for (size_t k = 0; k < out_specs.size(); ++k)
          if (out_specs[k].name == refs[i].stored) idx = (int)k;
        if (idx < 0) idx = (int)i;
        ++checked;
        if (idx >= (int)outputs.size()) {
          std::printf("  FAIL  %s%s: the model has only %zu outputs\n", run_label.c_str(),
                      refs[i].file.filename().string().c_str(), outputs.size());
          ++failed;
          continue;
        }
        Comparison c = compare(outputs[idx], want, o.tol);
        std::string line = "  " + std::string(c.pass ? "PASS" : "FAIL") + "  " + run_label + out_specs[idx].name + "  " +
                           dtype_name(want.dtype()) + shape_str(want.shape());
        if (c.comparable) line += "  " + error_summary(c, o.tol);
        std::printf("%s\n", line.c_str());
        if (!c.pass) {
          std::printf("        %s\n", c.detail.c_str());
          ++failed;
        }
      }
    }
  }
  if (failed) {
    std::printf("result    FAIL: %d of %d output check%s failed\n", failed, checked, checked == 1 ? "" : "s");
    return kExitFailure;
  }
  std::printf("result    PASS: %d output check%s in %zu data set%s (%d run%s each)\n", checked, checked == 1 ? "" : "s",
              sets.size(), sets.size() == 1 ? "" : "s", o.runs, o.runs == 1 ? "" : "s");
  return kExitOk;
}

}  // namespace

void add_verify_command(CLI::App& app, int* rc) {
  auto o = std::make_shared<VerifyOptions>();
  auto* sub = app.add_subcommand("verify", "Check a model against an ONNX test-case folder (model.onnx + test_data_set_*/)");
  sub->add_option("dir", o->dir, "test-case folder")->required();
  sub->add_option("--rtol", o->tol.rtol, "relative tolerance: pass if |got - want| <= atol + rtol * |want|")->capture_default_str();
  sub->add_option("--atol", o->tol.atol, "absolute tolerance")->capture_default_str();
  sub->add_option("-t,--threads", o->threads, "threads (0 = all available cores)")->capture_default_str();
  sub->add_option("--runs", o->runs,
                  "runs per data set, each one checked (a shape's first run and the later ones may use different "
                  "kernels, e.g. Winograd convolution from the second run on)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--scale-atol", o->tol.scale_atol,
                 "add S * max|reference| (per output) to atol: a tolerance relative to the output's scale")
      ->capture_default_str();
  sub->add_flag("--argmax", o->tol.argmax,
                "also require the same argmax over axis 1 (classifier/segmenter outputs) wherever the reference's "
                "top-2 gap exceeds 2 * atol (closer gaps are numerical ties); reports all differing positions");
  add_command(app, sub, [o] { return verify_command(*o); }, rc);
}

}  // namespace kiln::cli
