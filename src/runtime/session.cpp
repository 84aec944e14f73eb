#include "kiln/session.h"

#include <sched.h>

#include <cstdlib>

#include <map>
#include <set>

#include "graph/graph.h"
#include "graph/passes/passes.h"
#include "onnx/loader.h"
#include "runtime/plan.h"

namespace kiln {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

std::string ValueSpec::shape_str() const {
  if (!has_shape) return "[?]";
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += dims[i] >= 0 ? std::to_string(dims[i]) : (symbols[i].empty() ? "?" : symbols[i]);
  }
  return s + "]";
}

static ValueSpec spec_of(const GraphIO& io) {
  ValueSpec v;
  v.name = io.name;
  v.dtype = io.type.dtype;
  v.has_shape = io.type.has_shape;
  for (auto& d : io.type.dims) {
    v.dims.push_back(d.value);
    v.symbols.push_back(d.symbol);
  }
  return v;
}

Session::Session() = default;
Session::~Session() = default;

template <class F>
static Status guarded(F&& f) {
  try {
    f();
    return {};
  } catch (const Error& e) {
    return Status(e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::RuntimeError, "out of memory");
  } catch (const std::exception& e) {
    return Status(ErrorCode::RuntimeError, e.what());
  }
}

namespace {

// The values read only as the weights (input 1) of Conv, MatMul and Gemm nodes: ops whose kernels take deferred
// weights (Kernel::takes_deferred) and whose weights the passes never read as values. None in a graph with
// subgraphs (which may read any outer value); graph outputs never.
std::set<std::string> packed_weights_only(const Graph& g) {
  std::set<std::string> packed, other;
  for (auto& n : g.nodes) {
    for (auto& [k, a] : n.attrs)
      if (a.kind == Attribute::GraphV || a.kind == Attribute::Graphs) return {};
    const bool packs = (n.op_type == "Conv" || n.op_type == "MatMul" || n.op_type == "Gemm") && canonical_domain(n.domain).empty();
    for (size_t j = 0; j < n.inputs.size(); ++j) (packs && j == 1 ? packed : other).insert(n.inputs[j]);
  }
  for (auto& o : g.outputs) other.insert(o.name);
  for (auto& name : other) packed.erase(name);
  return packed;
}

}  // namespace

Status Session::load(const std::string& path, const SessionOptions& options, std::unique_ptr<Session>* out) {
  std::unique_ptr<Session> s(new Session());
  // Large weights stay in the mapped file until the kernels pack them (KILN_DEFER_WEIGHTS=0 copies them all at load,
  // for comparisons).
  const char* defer_env = std::getenv("KILN_DEFER_WEIGHTS");
  const bool defer = !(defer_env && std::string(defer_env) == "0");
  Status st = guarded([&] { s->graph_ = load_onnx_file(path, defer); });
  if (!st.ok()) return st;
  st = s->init(options);
  if (st.ok()) *out = std::move(s);
  return st;
}

Status Session::load_from_bytes(const std::string& bytes, const std::string& base_dir, const SessionOptions& options,
                                std::unique_ptr<Session>* out) {
  std::unique_ptr<Session> s(new Session());
  Status st = guarded([&] { s->graph_ = load_onnx_bytes(bytes, base_dir, "<memory>"); });
  if (!st.ok()) return st;
  st = s->init(options);
  if (st.ok()) *out = std::move(s);
  return st;
}

Status Session::init(const SessionOptions& options) {
  threads_ = options.threads > 0 ? options.threads : available_cores();
  return guarded([&] {
    for (auto& in : graph_->inputs) inputs_.push_back(spec_of(in));
    for (auto& o : graph_->outputs) outputs_.push_back(spec_of(o));
    const std::string& file = graph_->source_path;
    for (auto& in : graph_->inputs)
      if (!dtype_supported(in.type.dtype))
        throw Error(ErrorCode::Unsupported, file + ": input '" + in.name + "' has type " + dtype_name(in.type.dtype) + ", which kiln does not support");
    // The passes read constants as values: only weights whose readers all pack them stay deferred through them.
    const std::set<std::string> packed = packed_weights_only(*graph_);
    graph_->settle_deferred([&](const std::string& name) { return packed.count(name) > 0; });
    if (options.optimize) passes::optimize(*graph_);
    try {
      // ChannelsLast propagation is part of optimisation; KILN_LAYOUT=plain turns it off (for comparisons).
      const char* layout_env = std::getenv("KILN_LAYOUT");
      bool channels_last = options.optimize && !(layout_env && std::string(layout_env) == "plain");
      plan_ = std::make_unique<Plan>(*graph_, threads_, channels_last);
      graph_->settle_deferred([&](const std::string& name) { return plan_->takes_deferred(name); });
      for (auto& [name, t] : graph_->initializers)
        if (t.is_deferred()) deferred_bytes_ += t.nbytes();
      if (options.arena) plan_->set_arena(options.arena);
      // Weights the kernels copy into prepared layouts are freed after the first run (KILN_KEEP_WEIGHTS=1 keeps
      // them, for comparisons).
      const char* keep_env = std::getenv("KILN_KEEP_WEIGHTS");
      if (!(keep_env && std::string(keep_env) == "1")) plan_->enable_constant_release(*graph_);
    } catch (const Error& e) {
      throw Error(e.code(), file + ": " + e.what());
    }
    // Validate the whole graph once with the declared (possibly symbolic) input types.
    std::vector<TensorType> types;
    for (auto& in : graph_->inputs) types.push_back(in.type);
    bool static_inputs = true;
    for (auto& t : types) static_inputs = static_inputs && t.fully_known();
    try {
      plan_->analyze(types, options.optimize);
    } catch (const Error& e) {
      if (static_inputs) throw Error(e.code(), file + ": " + e.what());
      // With dynamic axes some checks can only happen once real shapes are known.
    }
  });
}

Status Session::check_inputs(const std::vector<std::pair<std::string, Tensor>>& inputs,
                             std::vector<const Tensor*>* ordered) const {
  std::map<std::string, const Tensor*> by_name;
  for (auto& [name, t] : inputs) {
    bool known = false;
    for (auto& s : inputs_) known = known || s.name == name;
    if (!known) {
      std::string names;
      for (auto& s : inputs_) names += (names.empty() ? "" : ", ") + s.name;
      return Status(ErrorCode::InvalidArgument, "model has no input named '" + name + "' (its inputs: " + names + ")");
    }
    if (by_name.count(name)) return Status(ErrorCode::InvalidArgument, "input '" + name + "' is given twice");
    by_name[name] = &t;
  }
  std::map<std::string, int64_t> symbols;
  ordered->clear();
  for (auto& s : inputs_) {
    auto it = by_name.find(s.name);
    if (it == by_name.end())
      return Status(ErrorCode::InvalidArgument, "missing input '" + s.name + "': expected " + dtype_name(s.dtype) + s.shape_str());
    const Tensor& t = *it->second;
    std::string expected = std::string(dtype_name(s.dtype)) + s.shape_str();
    std::string got = std::string(dtype_name(t.dtype())) + shape_str(t.shape());
    if (t.dtype() != s.dtype)
      return Status(ErrorCode::InvalidArgument, "input '" + s.name + "' has type " + dtype_name(t.dtype()) + ", expected " + expected);
    if (s.has_shape) {
      if ((size_t)t.rank() != s.dims.size())
        return Status(ErrorCode::InvalidArgument, "input '" + s.name + "' has rank " + std::to_string(t.rank()) + " (shape " +
                                                      got + "), expected rank " + std::to_string(s.dims.size()) + ": " + expected);
      for (size_t d = 0; d < s.dims.size(); ++d) {
        if (s.dims[d] >= 0 && t.shape()[d] != s.dims[d])
          return Status(ErrorCode::InvalidArgument, "input '" + s.name + "' has shape " + got + ", expected " + expected +
                                                        " (axis " + std::to_string(d) + " must be " + std::to_string(s.dims[d]) + ")");
        if (s.dims[d] < 0 && !s.symbols[d].empty()) {
          auto [sit, fresh] = symbols.emplace(s.symbols[d], t.shape()[d]);
          if (!fresh && sit->second != t.shape()[d])
            return Status(ErrorCode::InvalidArgument, "input '" + s.name + "' axis " + std::to_string(d) + " ('" + s.symbols[d] +
                                                          "') is " + std::to_string(t.shape()[d]) + ", but another input set '" +
                                                          s.symbols[d] + "' to " + std::to_string(sit->second));
        }
      }
    }
    if (t.numel() > 0 && t.raw() == nullptr)
      return Status(ErrorCode::InvalidArgument, "input '" + s.name + "' has no data");
    ordered->push_back(&t);
  }
  return {};
}

Status Session::run(const std::vector<std::pair<std::string, Tensor>>& inputs, std::vector<Tensor>* outputs) {
  std::vector<const Tensor*> ordered;
  Status st = check_inputs(inputs, &ordered);
  if (!st.ok()) return st;
  return guarded([&] { *outputs = plan_->run(ordered); });
}

RunStats Session::stats() const {
  RunStats r;
  r.arena_bytes = plan_ ? plan_->last_arena_bytes() : 0;
  if (plan_) {
    auto ls = plan_->last_layout_stats();
    r.steps = ls[0];
    r.channels_last_steps = ls[1];
    r.layout_conversions = ls[2];
  }
  for (auto& [k, t] : graph_->initializers) r.weight_bytes += t.nbytes();
  if (plan_) r.released_weight_bytes = plan_->released_bytes();
  r.deferred_weight_bytes = deferred_bytes_;
  return r;
}

}  // namespace kiln
