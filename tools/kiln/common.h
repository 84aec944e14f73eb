// Shared helpers for the kiln subcommands: error handling and exit codes, argument parsing,
// model loading, tensor summaries and formatting.
#pragma once
#include <CLI/CLI.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/session.h"
#include "kiln/status.h"
#include "kiln/tensor.h"

namespace kiln::cli {

// Exit codes.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // verification mismatch, runtime error
constexpr int kExitUsage = 2;    // bad arguments or bad input files

// Raised by the helpers below; the command wrapper prints it and exits with `code`.
struct CliError {
  int code;
  std::string message;
};
[[noreturn]] inline void usage_error(const std::string& msg) { throw CliError{kExitUsage, msg}; }
[[noreturn]] inline void failure(const std::string& msg) { throw CliError{kExitFailure, msg}; }

// Exit code for a library error: bad input files / arguments are usage errors, the rest failures.
int exit_code_for(ErrorCode c);
// Throws CliError for a non-ok status, with `context` prepended when not empty.
void check(const Status& st, const std::string& context = "");

// Registers a subcommand whose body runs inside the error wrapper; the exit code lands in *rc.
void add_command(CLI::App& app, CLI::App* sub, std::function<int()> body, int* rc);

// Subcommand registration (one file each).
void add_run_command(CLI::App& app, int* rc);
void add_verify_command(CLI::App& app, int* rc);
void add_bench_command(CLI::App& app, int* rc);
void add_show_command(CLI::App& app, int* rc);

// "name=value" -> {name, value}; no '=' -> {"", s}.
std::pair<std::string, std::string> split_assignment(const std::string& s);
// "1x3x224x224" (also "1,3,224,224"; "" or "scalar" for rank 0) -> shape; `what` names it in errors.
Shape parse_shape(const std::string& s, const std::string& what);

// Loads a model; the error names the file. *load_ms receives the Session::load time.
std::unique_ptr<Session> load_model(const std::string& path, int threads, double* load_ms = nullptr);

// Resolves `--input`/`--shape` style "name=value" arguments against the model's inputs.
// A bare value is accepted when the model has exactly one input (`what` = "output" for outputs).
std::vector<std::pair<std::string, std::string>> resolve_named_args(const std::vector<std::string>& args,
                                                                    const std::vector<ValueSpec>& inputs,
                                                                    const std::string& option,
                                                                    const std::string& value_kind,
                                                                    const std::string& what = "input");

std::string input_list(const std::vector<ValueSpec>& specs);  // "input: float32[batch, 1, 8, 8], ..."

// Any numeric tensor as doubles (float16/bfloat16/bool included).
std::vector<double> to_double_values(const Tensor& t);
// Element-wise read access as double without copying the tensor (outputs can be large).
class Values {
 public:
  explicit Values(const Tensor& t);  // throws for types without numeric values
  double operator[](int64_t i) const;
  int64_t size() const { return n_; }

 private:
  DType dt_;
  const void* p_;
  int64_t n_;
};
bool is_float_dtype(DType t);

struct Summary {
  double min = 0, max = 0, mean = 0;
  int64_t nan = 0, inf = 0, count = 0;
};
Summary summarize(const Tensor& t);

// Argmax over the last axis of a [N, K] tensor (first maximum wins; NaN never wins).
std::vector<int64_t> argmax_rows(const Tensor& t);

double now_ms();
double median(std::vector<double> v);
double percentile(std::vector<double> v, double p);  // nearest rank
std::string fmt_ms(double ms);
std::string fmt_count(double v);       // 1.23 M, 4.5 G
std::string fmt_bytes(double bytes);   // 12.3 KiB
std::string fmt_num(double v);         // compact %g-ish
double peak_rss_mb();

}  // namespace kiln::cli
