#include "graph/passes/passes.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <unordered_set>

#include "backends/cpu/conv_postops.h"
#include "ops/registry.h"
#include "runtime/plan.h"

namespace kiln::passes {

namespace {

using cpu::PostKind;
using cpu::PostOp;

// Names read by nodes of subgraphs (If/Loop/Scan bodies), recursively, and the subgraphs' outputs: these may refer
// to outer-scope values, which must then keep their names and producers.
void collect_subgraph_refs(const Graph& g, std::unordered_set<std::string>& out) {
  for (auto& n : g.nodes)
    for (auto& [k, a] : n.attrs) {
      std::vector<const Graph*> subs;
      if (a.g) subs.push_back(a.g.get());
      for (auto& sg : a.graphs)
        if (sg) subs.push_back(sg.get());
      for (const Graph* s : subs) {
        for (auto& sn : s->nodes)
          for (auto& i : sn.inputs) out.insert(i);
        for (auto& o : s->outputs) out.insert(o.name);
        collect_subgraph_refs(*s, out);
      }
    }
}

bool has_subgraph(const Node& n) {
  for (auto& [k, a] : n.attrs)
    if (a.g || !a.graphs.empty()) return true;
  return false;
}

// Use counts and producers of the current graph.
struct Uses {
  std::unordered_map<std::string, int> count;            // node input slots reading the value
  std::unordered_map<std::string, std::vector<int>> consumers;
  std::unordered_map<std::string, int> producer;          // node index
  std::unordered_set<std::string> outputs, pinned;        // graph outputs; referenced from subgraphs

  explicit Uses(const Graph& g) {
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      for (auto& in : g.nodes[i].inputs)
        if (!in.empty()) {
          ++count[in];
          consumers[in].push_back((int)i);
        }
      for (auto& o : g.nodes[i].outputs)
        if (!o.empty()) producer[o] = (int)i;
    }
    for (auto& o : g.outputs) outputs.insert(o.name);
    collect_subgraph_refs(g, pinned);
  }
  int uses(const std::string& v) const {
    auto it = count.find(v);
    return it == count.end() ? 0 : it->second;
  }
  // The value is read by exactly `k` node input slots and nothing else (no graph output, no subgraph).
  bool private_value(const std::string& v, int k) const { return uses(v) == k && !outputs.count(v) && !pinned.count(v); }
  // Distinct consumer nodes.
  std::vector<int> users(const std::string& v) const {
    std::vector<int> r;
    auto it = consumers.find(v);
    if (it == consumers.end()) return r;
    for (int i : it->second)
      if (r.empty() || r.back() != i) r.push_back(i);
    return r;
  }
};

bool is_op(const Node& n, const char* op) { return n.op_type == op && canonical_domain(n.domain).empty(); }

void drop_removed(Graph& g, const std::vector<bool>& removed) {
  std::vector<Node> keep;
  keep.reserve(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (!removed[i]) keep.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(keep);
}

// A float scalar (any rank, one element) held by an initializer.
bool scalar_const(const Graph& g, const std::string& name, double* v) {
  auto it = g.initializers.find(name);
  if (it == g.initializers.end() || it->second.numel() != 1) return false;
  const Tensor& t = it->second;
  if (t.dtype() == DType::Float32) *v = t.data<float>()[0];
  else if (t.dtype() == DType::Float64) *v = t.data<double>()[0];
  else return false;
  return true;
}
bool near(double a, double b, double tol = 1e-5) { return std::fabs(a - b) <= tol * std::max(1.0, std::fabs(b)); }

bool is_float32(const TypeMap& types, const std::string& v) {
  auto it = types.find(v);
  return it != types.end() && it->second.dtype == DType::Float32;
}

bool same_type(const TypeMap& types, const std::string& a, const std::string& b) {
  auto ia = types.find(a), ib = types.find(b);
  if (ia == types.end() || ib == types.end()) return false;
  const TensorType &x = ia->second, &y = ib->second;
  if (x.dtype != y.dtype || !x.has_shape || !y.has_shape || x.rank() != y.rank()) return false;
  for (int i = 0; i < x.rank(); ++i)
    if (!(x.dims[i] == y.dims[i])) return false;
  return true;
}

}  // namespace

// ---- cleanup ------------------------------------------------------------------------------------------------------

bool eliminate_identity(Graph& g) {
  Uses u(g);
  std::unordered_set<std::string> inits_or_inputs;
  for (auto& in : g.inputs) inits_or_inputs.insert(in.name);
  for (auto& [k, t] : g.initializers) inits_or_inputs.insert(k);
  std::unordered_map<std::string, std::string> alias;  // eliminated value -> its source
  std::vector<bool> removed(g.nodes.size(), false);
  bool changed = false;
  auto resolve = [&](std::string v) {
    for (auto it = alias.find(v); it != alias.end(); it = alias.find(v)) v = it->second;
    return v;
  };
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& n = g.nodes[i];
    bool identity = is_op(n, "Identity");
    if (is_op(n, "Dropout")) {
      // Inference: output 0 is the input. Only when the mask is not needed and training_mode is absent or false.
      bool mask_used = n.outputs.size() > 1 && !n.outputs[1].empty() &&
                       (u.uses(n.outputs[1]) > 0 || u.outputs.count(n.outputs[1]) || u.pinned.count(n.outputs[1]));
      bool training = false;
      if (n.has_input(2)) {
        auto it = g.initializers.find(n.inputs[2]);
        training = it == g.initializers.end() || it->second.numel() != 1 || it->second.dtype() != DType::Bool ||
                   it->second.data<uint8_t>()[0] != 0;
      }
      // Training mode with a constant ratio of 0 drops nothing and scales by 1: still the identity
      // (torchvision's swin_t exports its attention dropout that way).
      double ratio = -1;
      if (training && n.has_input(1) && scalar_const(g, n.inputs[1], &ratio) && ratio == 0) training = false;
      identity = !mask_used && !training;
    }
    if (is_op(n, "Pad")) {
      // Zero padding on every side, whatever the mode (DenseNet's transitions export AvgPool as Pad(0) + AvgPool).
      std::vector<int64_t> pads;
      if (g.opset("") < 11) {
        pads = n.attr_ints("pads", {});
      } else if (n.has_input(1)) {
        auto it = g.initializers.find(n.inputs[1]);
        if (it != g.initializers.end() && it->second.dtype() == DType::Int64 && it->second.raw())
          pads.assign(it->second.data<int64_t>(), it->second.data<int64_t>() + it->second.numel());
      }
      identity = !pads.empty() && std::all_of(pads.begin(), pads.end(), [](int64_t p) { return p == 0; });
    }
    if (!identity || n.inputs.empty() || !n.has_input(0) || n.outputs.empty() || n.outputs[0].empty()) continue;
    const std::string x = resolve(n.inputs[0]), y = n.outputs[0];
    if (u.pinned.count(y)) continue;
    if (!u.outputs.count(y)) {
      alias[y] = x;
      removed[i] = true;
      changed = true;
      continue;
    }
    // y is a graph output: the producer of x may produce y directly when x is read by this node only.
    auto pit = u.producer.find(x);
    if (x != n.inputs[0] || pit == u.producer.end() || removed[pit->second] || inits_or_inputs.count(x) ||
        !u.private_value(x, 1))
      continue;
    for (auto& o : g.nodes[pit->second].outputs)
      if (o == x) o = y;
    removed[i] = true;
    changed = true;
  }
  if (!changed) return false;
  drop_removed(g, removed);
  for (auto& n : g.nodes)
    for (auto& in : n.inputs)
      if (!in.empty()) in = resolve(in);
  return true;
}

bool eliminate_dead(Graph& g) {
  std::unordered_set<std::string> live;
  for (auto& o : g.outputs) live.insert(o.name);
  collect_subgraph_refs(g, live);
  std::vector<bool> removed(g.nodes.size(), false);
  bool changed = false;
  for (size_t r = g.nodes.size(); r-- > 0;) {
    const Node& n = g.nodes[r];
    bool used = false;
    for (auto& o : n.outputs) used = used || (!o.empty() && live.count(o));
    if (!used) {
      removed[r] = true;
      changed = true;
      continue;
    }
    for (auto& in : n.inputs)
      if (!in.empty()) live.insert(in);
  }
  if (changed) drop_removed(g, removed);
  for (auto it = g.initializers.begin(); it != g.initializers.end();) {
    if (!live.count(it->first)) {
      it = g.initializers.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  return changed;
}

// ---- constant folding ---------------------------------------------------------------------------------------------

bool fold_constants(Graph& g) {
  constexpr size_t kMaxFoldBytes = size_t(64) << 20;  // larger results stay computed at plan time
  const Registry& reg = registry();
  std::vector<bool> removed(g.nodes.size(), false);
  bool changed = false;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.outputs.empty() || has_subgraph(n)) continue;
    bool all_const = true;
    for (auto& in : n.inputs) all_const = all_const && (in.empty() || g.initializers.count(in));
    if (!all_const) continue;
    const int64_t opset = g.opset(n.domain);
    const OpEntry* e = reg.find(n.domain, n.op_type, opset);
    if (!e || e->flags.nondeterministic) continue;
    try {
      std::unique_ptr<Kernel> k = e->make(n, (int)opset);
      std::vector<TensorType> tin_store(n.inputs.size());
      std::vector<const TensorType*> tin;
      std::vector<const Tensor*> vin;
      for (size_t j = 0; j < n.inputs.size(); ++j) {
        if (n.inputs[j].empty()) { tin.push_back(nullptr); vin.push_back(nullptr); continue; }
        const Tensor& t = g.initializers.at(n.inputs[j]);
        tin_store[j] = TensorType::of(t.dtype(), t.shape());
        tin.push_back(&tin_store[j]);
        vin.push_back(&t);
      }
      InferContext ictx(n, tin, vin);
      k->infer(ictx);
      bool ok = true;
      size_t bytes = 0;
      for (size_t o = 0; o < n.outputs.size(); ++o) {
        const TensorType& t = ictx.outputs()[o];
        if (n.outputs[o].empty()) continue;
        ok = ok && t.fully_known() && dtype_supported(t.dtype) && t.dtype != DType::String;
        if (ok) bytes += (size_t)shape_numel(t.concrete()) * dtype_size(t.dtype);
      }
      if (!ok || bytes > kMaxFoldBytes) continue;
      std::vector<Tensor> results(n.outputs.size());
      std::vector<Tensor*> pout;
      for (size_t o = 0; o < n.outputs.size(); ++o) {
        if (n.outputs[o].empty()) { pout.push_back(nullptr); continue; }
        results[o] = Tensor(ictx.outputs()[o].dtype, ictx.outputs()[o].concrete());
        pout.push_back(&results[o]);
      }
      RunContext rctx(n, vin, pout);
      k->run(rctx);
      for (size_t o = 0; o < n.outputs.size(); ++o)
        if (!n.outputs[o].empty()) g.initializers[n.outputs[o]] = std::move(results[o]);
      removed[i] = true;
      changed = true;
    } catch (const std::exception&) {
      // Left in the graph: the planner reports the problem with full context.
    }
  }
  if (changed) drop_removed(g, removed);
  return changed;
}

// ---- types --------------------------------------------------------------------------------------------------------

TypeMap infer_types(const Graph& g) {
  TypeMap r;
  try {
    Plan plan(g, 1);
    std::vector<TensorType> in;
    for (auto& i : g.inputs) in.push_back(i.type);
    ShapePlan sp = plan.analyze(in, true);
    const auto& names = plan.value_names();
    for (size_t id = 0; id < names.size(); ++id) r[names[id]] = sp.types[id];
  } catch (const std::exception&) {
    r.clear();  // dynamic shapes the planner can only resolve at run time, or an invalid graph: no fusions
  }
  return r;
}

// ---- fusions ------------------------------------------------------------------------------------------------------

bool fuse_matmul_bias(Graph& g, const TypeMap& types) {
  Uses u(g);
  std::vector<bool> removed(g.nodes.size(), false);
  bool changed = false;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& m = g.nodes[i];
    if (!is_op(m, "MatMul") || m.inputs.size() != 2 || m.outputs.size() != 1) continue;
    auto bit = g.initializers.find(m.inputs[1]);
    if (bit == g.initializers.end() || bit->second.rank() < 2) continue;
    const std::string& y = m.outputs[0];
    auto yt = types.find(y);
    if (!u.private_value(y, 1) || yt == types.end() || yt->second.dtype != DType::Float32 || !yt->second.has_shape ||
        yt->second.rank() < 2 || !yt->second.dims.back().known())
      continue;
    const int ai = u.consumers.at(y)[0];
    Node& a = g.nodes[ai];
    if (removed[ai] || !is_op(a, "Add") || a.inputs.size() != 2 || a.outputs.size() != 1) continue;
    const std::string& bias = a.inputs[0] == y ? a.inputs[1] : a.inputs[0];
    auto cit = g.initializers.find(bias);
    if (cit == g.initializers.end() || cit->second.dtype() != DType::Float32) continue;
    const Tensor& b = cit->second;
    bool ok = b.rank() >= 1 && b.rank() <= yt->second.rank() && b.dim(-1) == yt->second.dims.back().value;
    for (int d = 0; ok && d + 1 < b.rank(); ++d) ok = b.dim(d) == 1;
    if (!ok) continue;
    m.op_type = "FusedMatMul";
    m.domain = "kiln";
    m.inputs.push_back(bias);
    m.outputs[0] = a.outputs[0];
    removed[ai] = true;
    changed = true;
  }
  if (!changed) return false;
  g.opsets["kiln"] = 1;
  drop_removed(g, removed);
  return true;
}

bool split_concat_conv(Graph& g, const TypeMap& types) {
  Uses u(g);
  std::vector<bool> removed(g.nodes.size(), false);
  std::vector<Node> added;
  std::unordered_set<std::string> taken;
  auto fresh = [&](const std::string& base) {
    for (int i = 0;; ++i) {
      std::string n = base + "/kiln_split" + std::to_string(i);
      if (!g.initializers.count(n) && !types.count(n) && !u.count.count(n) && !u.producer.count(n) && taken.insert(n).second)
        return n;
    }
  };
  bool changed = false;
  for (size_t ci = 0; ci < g.nodes.size(); ++ci) {
    const Node& c = g.nodes[ci];
    if (!is_op(c, "Conv") || c.outputs.size() != 1 || c.inputs.size() < 2 || c.inputs.size() > 3) continue;
    if (c.attr_int("group", 1) != 1 || !cpu::post_ops_of(c).empty()) continue;
    const std::string& x = c.inputs[0];
    auto pit = u.producer.find(x);
    auto wit = g.initializers.find(c.inputs[1]);
    if (pit == u.producer.end() || removed[pit->second] || wit == g.initializers.end()) continue;
    const Node& k = g.nodes[pit->second];
    if (!is_op(k, "Concat") || k.outputs.size() != 1 || k.inputs.size() < 2 || k.inputs.size() > 4) continue;
    if (!u.private_value(x, 1) || !is_float32(types, x) || !u.private_value(c.inputs[1], 1)) continue;
    const TensorType& xt = types.at(x);
    const Tensor& w = wit->second;
    if (!xt.has_shape || (xt.rank() != 4 && xt.rank() != 5) || w.dtype() != DType::Float32 || w.rank() != xt.rank() ||
        (!w.raw() && !w.is_deferred()))
      continue;
    int64_t axis = k.attr_int("axis", 0);
    if (axis < 0) axis += xt.rank();
    if (axis != 1) continue;
    std::vector<int64_t> parts;  // channels of each Concat input
    int64_t total = 0;
    for (const std::string& in : k.inputs) {
      auto it = types.find(in);
      if (in.empty() || it == types.end() || !it->second.has_shape || it->second.dtype != DType::Float32 ||
          it->second.rank() != xt.rank() || !it->second.dims[1].known() || it->second.dims[1].value < 16) {
        total = -1;
        break;
      }
      parts.push_back(it->second.dims[1].value);
      total += parts.back();
    }
    if (total < 0 || total != w.dim(1) || w.dim(0) > total) continue;
    int64_t ksize = 1;
    for (int i = 2; i < w.rank(); ++i) ksize *= w.dim(i);
    if (ksize == 1) continue;
    // W [M, C, k...] -> one [M, C_i, k...] per part, read as bytes (a weight still deferred in the model file is
    // copied straight out of it: no whole copy first).
    const uint8_t* wb = static_cast<const uint8_t*>(w.is_deferred() ? w.source() : w.raw());
    const int64_t M = w.dim(0), C = w.dim(1);
    std::string prev;
    int64_t c0 = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      Shape ws = w.shape();
      ws[1] = parts[i];
      Tensor wi(DType::Float32, ws);
      for (int64_t m = 0; m < M; ++m)
        std::memcpy(wi.data<float>() + m * parts[i] * ksize, wb + (m * C + c0) * ksize * sizeof(float),
                    (size_t)(parts[i] * ksize) * sizeof(float));
      c0 += parts[i];
      const std::string wname = fresh(c.inputs[1]);
      g.initializers[wname] = std::move(wi);
      Node piece;
      piece.name = c.name.empty() ? "" : c.name + "/part" + std::to_string(i);
      piece.op_type = "Conv";
      piece.domain = c.domain;
      piece.attrs = c.attrs;
      piece.inputs = {k.inputs[i], wname};
      if (i == 0) {
        if (c.inputs.size() > 2) piece.inputs.push_back(c.inputs[2]);
      } else {
        piece.inputs.push_back("");
        piece.inputs.push_back(prev);
        cpu::set_post_ops(piece, {{PostKind::Sum, 0, 0}});
        Attribute from;  // names the Concat in shape errors (its inputs meet only here now)
        from.kind = Attribute::String;
        from.s = k.name.empty() ? k.outputs[0] : k.name;
        piece.attrs["kiln.split_concat"] = from;
      }
      prev = i + 1 == parts.size() ? c.outputs[0] : fresh(c.outputs[0]);
      piece.outputs = {prev};
      added.push_back(std::move(piece));
    }
    g.initializers.erase(c.inputs[1]);  // by name: adding the parts may have rehashed the map
    removed[ci] = true;
    removed[pit->second] = true;
    changed = true;
  }
  if (changed) {
    drop_removed(g, removed);
    for (auto& n : added) g.nodes.push_back(std::move(n));
    g.topo_sort();
  }
  return changed;
}

bool fuse_conv_add(Graph& g, const TypeMap& types) {
  Uses u(g);
  std::vector<bool> removed(g.nodes.size(), false), touched(g.nodes.size(), false);
  bool changed = false;
  for (size_t ai = 0; ai < g.nodes.size(); ++ai) {
    Node& a = g.nodes[ai];
    if (!is_op(a, "Add") || a.inputs.size() != 2 || a.outputs.size() != 1 || a.inputs[0] == a.inputs[1]) continue;
    int best = -1, best_k = -1;
    for (int k = 0; k < 2; ++k) {
      const std::string& v = a.inputs[k];
      auto pit = u.producer.find(v);
      if (pit == u.producer.end()) continue;
      const Node& p = g.nodes[pit->second];
      if (touched[pit->second] || !(is_op(p, "Conv") || is_op(p, "ConvTranspose")) || p.outputs.size() != 1) continue;
      if (!u.private_value(v, 1) || !is_float32(types, v) || !same_type(types, v, a.inputs[1 - k]) ||
          !same_type(types, v, a.outputs[0]))
        continue;
      if (cpu::has_sum(cpu::post_ops_of(p))) continue;
      if (pit->second > best) { best = pit->second; best_k = k; }  // the later conv: its summand is ready earlier
    }
    if (best < 0) continue;
    Node& p = g.nodes[best];
    std::vector<PostOp> post = cpu::post_ops_of(p);
    post.push_back({PostKind::Sum, 0, 0});
    cpu::set_post_ops(p, post);
    while (p.inputs.size() < 3) p.inputs.push_back("");
    p.inputs.resize(4);
    p.inputs[3] = a.inputs[1 - best_k];
    p.outputs[0] = a.outputs[0];
    touched[best] = true;
    removed[ai] = true;
    changed = true;
  }
  if (changed) {
    drop_removed(g, removed);
    g.topo_sort();  // the summand may be produced after the conv in the old order
  }
  return changed;
}

namespace {

// A single-node activation reading `v` as its input 0, as a post-op.
bool activation_of(const Graph& g, const Node& n, PostOp* op) {
  if (!canonical_domain(n.domain).empty() || n.outputs.size() != 1) return false;
  const std::string& t = n.op_type;
  if (t == "Relu") { *op = {PostKind::Relu, 0, 0}; return true; }
  if (t == "LeakyRelu") { *op = {PostKind::LeakyRelu, n.attr_float("alpha", 0.01f), 0}; return true; }
  if (t == "Sigmoid") { *op = {PostKind::Sigmoid, 0, 0}; return true; }
  if (t == "Tanh") { *op = {PostKind::Tanh, 0, 0}; return true; }
  if (t == "Elu") { *op = {PostKind::Elu, n.attr_float("alpha", 1.0f), 0}; return true; }
  if (t == "HardSigmoid") { *op = {PostKind::HardSigmoid, n.attr_float("alpha", 0.2f), n.attr_float("beta", 0.5f)}; return true; }
  if (t == "HardSwish") { *op = {PostKind::HardSwish, 0, 0}; return true; }
  if (t == "Gelu") {
    if (n.attr_string("approximate", "none") != "none") return false;
    *op = {PostKind::Gelu, 0, 0};
    return true;
  }
  if (t == "Clip") {
    double lo = -INFINITY, hi = INFINITY;
    if (g.opset("") < 11) {
      lo = n.attr_float("min", -3.4028234663852886e38f);
      hi = n.attr_float("max", 3.4028234663852886e38f);
    } else {
      if (n.has_input(1) && !scalar_const(g, n.inputs[1], &lo)) return false;
      if (n.has_input(2) && !scalar_const(g, n.inputs[2], &hi)) return false;
    }
    *op = {PostKind::Clip, (float)std::fmax(lo, -3.4028234663852886e38), (float)std::fmin(hi, 3.4028234663852886e38)};
    return true;
  }
  return false;
}

// Mul(v, w) or Mul(w, v): the other operand, or "".
std::string mul_other(const Node& n, const std::string& v) {
  if (!is_op(n, "Mul") || n.inputs.size() != 2 || n.outputs.size() != 1) return "";
  if (n.inputs[0] == v && n.inputs[1] != v) return n.inputs[1];
  if (n.inputs[1] == v && n.inputs[0] != v) return n.inputs[0];
  return "";
}

}  // namespace

bool fuse_activation(Graph& g, const TypeMap& types) {
  Uses u(g);
  std::vector<bool> removed(g.nodes.size(), false);
  bool changed = false;
  auto node_of = [&](const std::string& v, int k) -> Node* {  // the single consumer node of v (read k times)
    if (!u.private_value(v, k)) return nullptr;
    auto us = u.users(v);
    if (us.size() != 1 || removed[us[0]]) return nullptr;
    return &g.nodes[us[0]];
  };
  for (size_t pi = 0; pi < g.nodes.size(); ++pi) {
    if (removed[pi]) continue;
    Node& p = g.nodes[pi];
    const bool conv = is_op(p, "Conv") || is_op(p, "ConvTranspose");
    const bool mm = is_op(p, "MatMul") || (p.op_type == "FusedMatMul" && p.domain == "kiln");
    // Inference-mode BatchNormalization (one output) followed by an activation: one pass over the data instead of
    // two (DenseNet's pre-activation BN -> ReLU before every convolution).
    const bool bn = is_op(p, "BatchNormalization") && p.attr_int("training_mode", 0) == 0;
    // InstanceNormalization -> LeakyReLU: every nnU-Net stage.
    const bool in = is_op(p, "InstanceNormalization");
    if ((!conv && !mm && !bn && !in) || p.outputs.size() != 1) continue;
    const std::string y = p.outputs[0];
    if (!is_float32(types, y) || u.outputs.count(y) || u.pinned.count(y)) continue;
    PostOp op;
    std::vector<int> gone;
    std::string out;
    auto us = u.users(y);
    for (int c : us)
      if (removed[c]) us.clear();
    if (us.size() == 1 && u.uses(y) == 1 && activation_of(g, g.nodes[us[0]], &op) && g.nodes[us[0]].inputs[0] == y) {
      gone = {us[0]};
      out = g.nodes[us[0]].outputs[0];
    } else if (us.size() == 2 && u.uses(y) == 2) {
      // x * Sigmoid(x) (SiLU), x * HardSigmoid(x) (HardSwish), GELU's Erf expansion.
      for (int k = 0; k < 2 && gone.empty(); ++k) {
        Node& f = g.nodes[us[k]];
        Node& s = g.nodes[us[1 - k]];
        if (f.outputs.size() != 1 || f.inputs.empty() || f.inputs[0] != y) continue;
        const std::string fo = f.outputs[0];
        if (is_op(f, "Sigmoid") || is_op(f, "HardSigmoid")) {
          if (mul_other(s, y) != fo || !u.private_value(fo, 1)) continue;
          if (is_op(f, "Sigmoid")) op = {PostKind::Swish, 1.f, 0};
          else if (near(f.attr_float("alpha", 0.2f), 1.0 / 6) && near(f.attr_float("beta", 0.5f), 0.5)) op = {PostKind::HardSwish, 0, 0};
          else continue;
          gone = {us[k], us[1 - k]};
          out = s.outputs[0];
        } else if (is_op(f, "Div") || is_op(f, "Mul")) {
          double c;
          if (f.inputs.size() != 2 || f.inputs[1] == y || !scalar_const(g, f.inputs[1], &c)) continue;
          if (!(is_op(f, "Div") ? near(c, std::sqrt(2.0)) : near(c, 1 / std::sqrt(2.0)))) continue;
          Node* erf = node_of(fo, 1);
          if (!erf || !is_op(*erf, "Erf") || erf->outputs.size() != 1) continue;
          Node* add = node_of(erf->outputs[0], 1);
          double one;
          if (!add || !is_op(*add, "Add") || add->inputs.size() != 2 || add->outputs.size() != 1) continue;
          const std::string& addc = add->inputs[0] == erf->outputs[0] ? add->inputs[1] : add->inputs[0];
          if (!scalar_const(g, addc, &one) || !near(one, 1.0)) continue;
          if (mul_other(s, y) != add->outputs[0] || !u.private_value(add->outputs[0], 1) || !u.private_value(s.outputs[0], 1))
            continue;
          Node* half = node_of(s.outputs[0], 1);
          double h;
          if (!half || !is_op(*half, "Mul") || half->inputs.size() != 2 || half->outputs.size() != 1) continue;
          const std::string& hc = half->inputs[0] == s.outputs[0] ? half->inputs[1] : half->inputs[0];
          if (!scalar_const(g, hc, &h) || !near(h, 0.5)) continue;
          op = {PostKind::Gelu, 0, 0};
          gone = {us[k], (int)(erf - g.nodes.data()), (int)(add - g.nodes.data()), us[1 - k], (int)(half - g.nodes.data())};
          out = half->outputs[0];
        }
      }
    }
    if (gone.empty()) continue;
    // Scalar constants feeding the pattern must broadcast to nothing larger than y: they are scalars (checked).
    std::vector<PostOp> post = cpu::post_ops_of(p);
    post.push_back(op);
    cpu::set_post_ops(p, post);
    if (is_op(p, "MatMul")) {
      p.op_type = "FusedMatMul";
      p.domain = "kiln";
      g.opsets["kiln"] = 1;
    }
    p.outputs[0] = out;
    for (int r : gone) removed[r] = true;
    changed = true;
  }
  if (changed) {
    drop_removed(g, removed);
    g.topo_sort();
  }
  return changed;
}

bool fuse_channel_shuffle(Graph& g) {
  Uses u(g);
  std::vector<bool> removed(g.nodes.size(), false);
  bool changed = false;
  auto plain_reshape = [](const Node& n) {
    return is_op(n, "Reshape") && n.inputs.size() == 2 && n.outputs.size() == 1 && n.attr_int("allowzero", 0) == 0;
  };
  for (size_t ti = 0; ti < g.nodes.size(); ++ti) {
    const Node& t = g.nodes[ti];
    if (!is_op(t, "Transpose") || t.inputs.size() != 1 || t.outputs.size() != 1 ||
        t.attr_ints("perm", {}) != std::vector<int64_t>{0, 2, 1, 3, 4})
      continue;
    auto pit = u.producer.find(t.inputs[0]);
    if (pit == u.producer.end() || removed[pit->second] || !plain_reshape(g.nodes[pit->second]) ||
        !u.private_value(t.inputs[0], 1) || !u.private_value(t.outputs[0], 1))
      continue;
    const int ri = u.consumers.at(t.outputs[0])[0];
    if (removed[ri] || !plain_reshape(g.nodes[ri]) || g.nodes[ri].inputs[0] != t.outputs[0]) continue;
    const Node& r1 = g.nodes[pit->second];
    Node& r2 = g.nodes[ri];
    r2.op_type = "ChannelShuffle";
    r2.domain = "kiln";
    r2.inputs = {r1.inputs[0], r1.inputs[1], r2.inputs[1]};
    r2.attrs.clear();
    removed[pit->second] = removed[ti] = true;
    changed = true;
  }
  if (!changed) return false;
  g.opsets["kiln"] = 1;
  drop_removed(g, removed);
  return true;
}

// ---- driver -------------------------------------------------------------------------------------------------------

PassStats optimize(Graph& g) {
  PassStats st;
  // KILN_PASSES=0 turns the passes off (for measuring their effect).
  if (const char* v = std::getenv("KILN_PASSES"); v && !std::strcmp(v, "0")) return st;
  const size_t before = g.nodes.size();
  try {
    g.topo_sort();
  } catch (const Error&) {
    return st;  // an invalid graph: the planner reports it
  }
  for (int it = 0; it < 16; ++it) {
    bool c = eliminate_identity(g);
    c = fold_constants(g) || c;
    c = eliminate_dead(g) || c;
    if (!c) break;
  }
  TypeMap types = infer_types(g);
  if (!types.empty()) {
    for (int it = 0; it < 16; ++it) {
      bool c = fuse_matmul_bias(g, types);
      c = split_concat_conv(g, types) || c;
      c = fuse_conv_add(g, types) || c;
      c = fuse_activation(g, types) || c;
      c = fuse_channel_shuffle(g) || c;
      st.fused = st.fused || c;
      if (!c) break;
    }
  }
  st.removed_nodes = (int)before - (int)g.nodes.size();
  return st;
}

}  // namespace kiln::passes
