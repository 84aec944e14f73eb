#include "common.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <set>

namespace kiln::cli {

int exit_code_for(ErrorCode c) {
  switch (c) {
    case ErrorCode::Ok: return kExitOk;
    case ErrorCode::InvalidModel:
    case ErrorCode::InvalidArgument:
    case ErrorCode::IoError: return kExitUsage;
    case ErrorCode::Unsupported:
    case ErrorCode::RuntimeError: return kExitFailure;
  }
  return kExitFailure;
}

void check(const Status& st, const std::string& context) {
  if (st.ok()) return;
  throw CliError{exit_code_for(st.code()), context.empty() ? st.message() : context + ": " + st.message()};
}

void add_command(CLI::App& app, CLI::App* sub, std::function<int()> body, int* rc) {
  std::string name = sub->get_name();
  sub->callback([body, rc, name] {
    auto report = [&](const std::string& msg) {
      std::fflush(stdout);
      std::cerr << "kiln " << name << ": error: " << msg << std::endl;
    };
    try {
      *rc = body();
    } catch (const CliError& e) {
      report(e.message);
      *rc = e.code;
    } catch (const Error& e) {
      report(e.what());
      *rc = exit_code_for(e.code());
    } catch (const std::bad_alloc&) {
      report("out of memory");
      *rc = kExitFailure;
    } catch (const std::exception& e) {
      report(e.what());
      *rc = kExitFailure;
    }
  });
}

std::pair<std::string, std::string> split_assignment(const std::string& s) {
  auto eq = s.find('=');
  if (eq == std::string::npos) return {"", s};
  return {s.substr(0, eq), s.substr(eq + 1)};
}

Shape parse_shape(const std::string& s, const std::string& what) {
  Shape shape;
  if (s.empty() || s == "scalar" || s == "[]") return shape;
  std::string body = s;
  if (body.front() == '[' && body.back() == ']') body = body.substr(1, body.size() - 2);
  size_t i = 0;
  while (i <= body.size()) {
    size_t j = body.find_first_of("x,", i);
    if (j == std::string::npos) j = body.size();
    std::string tok = body.substr(i, j - i);
    while (!tok.empty() && tok.front() == ' ') tok.erase(tok.begin());
    while (!tok.empty() && tok.back() == ' ') tok.pop_back();
    if (tok.empty() || tok.find_first_not_of("0123456789") != std::string::npos || tok.size() > 12)
      usage_error(what + ": '" + s + "' is not a shape (expected dimensions like 1x3x224x224)");
    shape.push_back(std::stoll(tok));
    i = j + 1;
  }
  return shape;
}

std::string input_list(const std::vector<ValueSpec>& specs) {
  std::string r;
  for (auto& s : specs) r += (r.empty() ? "" : ", ") + s.name + ": " + dtype_name(s.dtype) + s.shape_str();
  return r.empty() ? "(none)" : r;
}

std::unique_ptr<Session> load_model(const std::string& path, int threads, double* load_ms) {
  if (threads < 0) usage_error("--threads must be >= 0 (0 = all cores), got " + std::to_string(threads));
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) usage_error(path + ": no such file (expected an .onnx model)");
  if (std::filesystem::is_directory(path, ec)) usage_error(path + ": is a directory (expected an .onnx model file)");
  SessionOptions opt;
  opt.threads = threads;
  std::unique_ptr<Session> s;
  double t0 = now_ms();
  Status st = Session::load(path, opt, &s);
  if (load_ms) *load_ms = now_ms() - t0;
  if (!st.ok()) {
    // Library messages usually start with the file name already.
    std::string msg = st.message();
    if (msg.rfind(path, 0) != 0) msg = path + ": " + msg;
    throw CliError{exit_code_for(st.code()), "cannot load model: " + msg};
  }
  return s;
}

std::vector<std::pair<std::string, std::string>> resolve_named_args(const std::vector<std::string>& args,
                                                                    const std::vector<ValueSpec>& inputs,
                                                                    const std::string& option,
                                                                    const std::string& value_kind,
                                                                    const std::string& what) {
  std::vector<std::pair<std::string, std::string>> out;
  std::set<std::string> seen;
  auto is_input = [&](const std::string& n) {
    for (auto& s : inputs)
      if (s.name == n) return true;
    return false;
  };
  for (auto& a : args) {
    auto [name, value] = split_assignment(a);
    if (!name.empty() && !is_input(name)) {
      // Could be an unnamed value that happens to contain '=' (a path).
      std::error_code ec;
      if (inputs.size() == 1 && std::filesystem::exists(a, ec)) {
        name.clear();
        value = a;
      } else {
        usage_error(option + " " + a + ": the model has no " + what + " named '" + name + "' (its " + what + "s: " + input_list(inputs) + ")");
      }
    }
    if (name.empty()) {
      if (inputs.size() != 1)
        usage_error(option + " " + a + ": a " + value_kind + " without a name is accepted only for single-" + what +
                    " models; this model has " + std::to_string(inputs.size()) + " " + what + "s (" + input_list(inputs) + "); use " +
                    option + " NAME=" + value_kind);
      name = inputs[0].name;
    }
    if (value.empty()) usage_error(option + " " + a + ": empty " + value_kind + " for " + what + " '" + name + "'");
    if (!seen.insert(name).second) usage_error(option + ": " + what + " '" + name + "' is given more than once");
    out.push_back({name, value});
  }
  return out;
}

bool is_float_dtype(DType t) {
  return t == DType::Float32 || t == DType::Float64 || t == DType::Float16 || t == DType::BFloat16;
}

Values::Values(const Tensor& t) : dt_(t.dtype()), p_(t.raw()), n_(t.numel()) {
  switch (dt_) {
    case DType::Float32: case DType::Float64: case DType::Int64: case DType::Int32: case DType::Int16:
    case DType::Int8: case DType::UInt8: case DType::Bool: case DType::UInt16: case DType::UInt32:
    case DType::UInt64: case DType::Float16: case DType::BFloat16: break;
    default: throw Error(ErrorCode::Unsupported, std::string("cannot read values of type ") + dtype_name(dt_));
  }
}

double Values::operator[](int64_t i) const {
  switch (dt_) {
    case DType::Float32: return static_cast<const float*>(p_)[i];
    case DType::Float64: return static_cast<const double*>(p_)[i];
    case DType::Int64: return (double)static_cast<const int64_t*>(p_)[i];
    case DType::Int32: return static_cast<const int32_t*>(p_)[i];
    case DType::Int16: return static_cast<const int16_t*>(p_)[i];
    case DType::Int8: return static_cast<const int8_t*>(p_)[i];
    case DType::UInt8: case DType::Bool: return static_cast<const uint8_t*>(p_)[i];
    case DType::UInt16: return static_cast<const uint16_t*>(p_)[i];
    case DType::UInt32: return static_cast<const uint32_t*>(p_)[i];
    case DType::UInt64: return (double)static_cast<const uint64_t*>(p_)[i];
    case DType::Float16: return half_to_float(static_cast<const uint16_t*>(p_)[i]);
    case DType::BFloat16: return bfloat16_to_float(static_cast<const uint16_t*>(p_)[i]);
    default: return 0;
  }
}

std::vector<double> to_double_values(const Tensor& t) {
  Values v(t);
  std::vector<double> r((size_t)v.size());
  for (int64_t i = 0; i < v.size(); ++i) r[i] = v[i];
  return r;
}

Summary summarize(const Tensor& t) {
  Summary s;
  Values v(t);
  double sum = 0;
  bool first = true;
  for (int64_t i = 0; i < v.size(); ++i) {
    const double x = v[i];
    if (std::isnan(x)) { ++s.nan; continue; }
    if (std::isinf(x)) { ++s.inf; continue; }
    if (first) { s.min = s.max = x; first = false; }
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
    sum += x;
    ++s.count;
  }
  s.mean = s.count ? sum / (double)s.count : 0;
  return s;
}

std::vector<int64_t> argmax_rows(const Tensor& t) {
  std::vector<int64_t> r;
  if (t.rank() != 2) return r;
  Values v(t);
  const int64_t n = t.dim(0), k = t.dim(1);
  for (int64_t i = 0; i < n; ++i) {
    int64_t best = -1;
    for (int64_t j = 0; j < k; ++j) {
      double x = v[i * k + j];
      if (std::isnan(x)) continue;
      if (best < 0 || x > v[i * k + best]) best = j;
    }
    r.push_back(best);
  }
  return r;
}

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = (size_t)std::ceil(p / 100.0 * (double)v.size());
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

std::string fmt_ms(double ms) {
  char b[64];
  if (ms < 0.1) std::snprintf(b, sizeof b, "%.1f us", ms * 1000.0);
  else if (ms < 1) std::snprintf(b, sizeof b, "%.3f ms", ms);
  else if (ms < 100) std::snprintf(b, sizeof b, "%.2f ms", ms);
  else std::snprintf(b, sizeof b, "%.1f ms", ms);
  return b;
}

std::string fmt_count(double v) {
  const char* units[] = {"", " K", " M", " G", " T"};
  int u = 0;
  while (std::fabs(v) >= 1000 && u < 4) { v /= 1000; ++u; }
  char b[64];
  std::snprintf(b, sizeof b, u ? "%.2f%s" : "%.0f%s", v, units[u]);
  return b;
}

std::string fmt_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) { bytes /= 1024; ++u; }
  char b[64];
  std::snprintf(b, sizeof b, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
  return b;
}

std::string fmt_num(double v) {
  char b[64];
  if (std::isnan(v)) return "nan";
  if (v == std::floor(v) && std::fabs(v) < 1e15) std::snprintf(b, sizeof b, "%.0f", v);
  else std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0;  // Linux reports KiB
}

}  // namespace kiln::cli
