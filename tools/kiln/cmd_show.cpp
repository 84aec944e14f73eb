// kiln show MODEL: what is in a model file — metadata, inputs/outputs, op histogram, parameters,
// estimated FLOPs (from shape inference) and, if kiln cannot run it, every unsupported op.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "common.h"
#include "graph/graph.h"
#include "onnx/loader.h"
#include "ops/registry.h"
#include "runtime/plan.h"

namespace kiln::cli {

namespace {

struct ShowOptions {
  std::string model;
  std::vector<std::string> shapes;
  bool nodes = false;
};

std::string op_key(const Node& n) { return n.domain.empty() ? n.op_type : n.domain + ":" + n.op_type; }

// FLOPs of one node: 2 per multiply-add for Conv/ConvTranspose/MatMul/Gemm, else 1 per output element.
double node_flops(const Node& n, const std::vector<const TensorType*>& in, const std::vector<const TensorType*>& out) {
  auto numel = [](const TensorType* t) -> double {
    if (!t || !t->fully_known()) return 0;
    double r = 1;
    for (auto& d : t->dims) r *= (double)d.value;
    return r;
  };
  auto known = [](const TensorType* t) { return t && t->fully_known(); };
  const bool std_domain = n.domain.empty();
  if (std_domain && n.op_type == "Conv" && in.size() >= 2 && known(in[1]) && !out.empty() && known(out[0])) {
    double k = 1;  // per output element: C_in/group * prod(kernel)
    for (size_t d = 1; d < in[1]->dims.size(); ++d) k *= (double)in[1]->dims[d].value;
    return 2 * numel(out[0]) * k;
  }
  if (std_domain && n.op_type == "ConvTranspose" && in.size() >= 2 && known(in[0]) && known(in[1])) {
    double k = 1;  // per input element: C_out/group * prod(kernel)
    for (size_t d = 1; d < in[1]->dims.size(); ++d) k *= (double)in[1]->dims[d].value;
    return 2 * numel(in[0]) * k;
  }
  if (std_domain && n.op_type == "MatMul" && in.size() >= 2 && known(in[0]) && !out.empty() && known(out[0])) {
    double k = in[0]->dims.empty() ? 1 : (double)in[0]->dims.back().value;
    return 2 * numel(out[0]) * k;
  }
  if (std_domain && n.op_type == "Gemm" && in.size() >= 2 && known(in[0]) && in[0]->rank() == 2 && !out.empty() && known(out[0])) {
    double k = (double)in[0]->dims[n.attr_int("transA", 0) ? 0 : 1].value;
    return 2 * numel(out[0]) * k;
  }
  double r = 0;
  for (auto* t : out) r += numel(t);
  return r;
}

int show_command(const ShowOptions& o) {
  std::error_code ec;
  if (!std::filesystem::exists(o.model, ec)) usage_error(o.model + ": no such file (expected an .onnx model)");
  if (std::filesystem::is_directory(o.model, ec)) usage_error(o.model + ": is a directory (expected an .onnx model file)");
  std::unique_ptr<Graph> g;
  try {
    g = load_onnx_file(o.model);
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.rfind(o.model, 0) != 0) msg = o.model + ": " + msg;
    throw CliError{exit_code_for(e.code()), "cannot load model: " + msg};
  }

  std::printf("file        %s (%s)\n", o.model.c_str(), fmt_bytes((double)std::filesystem::file_size(o.model, ec)).c_str());
  std::printf("ir version  %lld\n", (long long)g->ir_version);
  std::printf("producer    %s\n", g->producer.empty() ? "(not set)" : g->producer.c_str());
  if (!g->name.empty()) std::printf("graph       %s\n", g->name.c_str());
  std::string opsets;
  for (auto& [d, v] : g->opsets) opsets += (opsets.empty() ? "" : ", ") + (d.empty() ? std::string("ai.onnx") : d) + " " + std::to_string(v);
  std::printf("opsets      %s\n", opsets.c_str());

  std::printf("\ninputs\n");
  for (auto& in : g->inputs) std::printf("  %-24s %s\n", in.name.c_str(), in.type.str().c_str());
  std::printf("outputs\n");
  for (auto& out : g->outputs) std::printf("  %-24s %s\n", out.name.c_str(), out.type.str().c_str());

  // Parameters: initializers plus tensors held by Constant nodes.
  double params = 0, weight_bytes = 0;
  for (auto& [name, t] : g->initializers) {
    params += (double)t.numel();
    weight_bytes += (double)t.nbytes();
  }
  size_t constant_tensors = 0;
  for (auto& n : g->nodes)
    if (n.op_type == "Constant" && n.domain.empty())
      if (const Tensor* t = n.attr_tensor("value")) {
        params += (double)t->numel();
        weight_bytes += (double)t->nbytes();
        ++constant_tensors;
      }

  std::map<std::string, int> hist;
  for (auto& n : g->nodes) ++hist[op_key(n)];
  std::vector<std::pair<std::string, int>> ops(hist.begin(), hist.end());
  std::stable_sort(ops.begin(), ops.end(), [](auto& a, auto& b) { return a.second > b.second; });
  std::printf("\nnodes       %zu (%zu op types)\n", g->nodes.size(), ops.size());
  for (auto& [op, count] : ops) std::printf("  %-24s %6d\n", op.c_str(), count);
  std::printf("\nparameters  %s (%zu initializer%s%s)\n", fmt_count(params).c_str(), g->initializers.size(),
              g->initializers.size() == 1 ? "" : "s",
              constant_tensors ? (", " + std::to_string(constant_tensors) + " Constant tensors").c_str() : "");
  std::printf("weights     %s\n", fmt_bytes(weight_bytes).c_str());

  // Kernels for every node: an Unsupported error lists each op kiln lacks.
  std::unique_ptr<Plan> plan;
  try {
    plan = std::make_unique<Plan>(*g, 1);
  } catch (const Error& e) {
    // One line per missing operator first, then the library's per-node list.
    std::map<std::string, int> missing;
    for (auto& n : g->nodes) {
      int64_t opset = g->opset(n.domain);
      if (!registry().find(n.domain, n.op_type, opset))
        ++missing[n.op_type + " (" + (n.domain.empty() ? std::string("ai.onnx") : n.domain) + ", opset " + std::to_string(opset) + ")"];
    }
    if (!missing.empty()) {
      std::printf("\nunsupported %zu operator%s:\n", missing.size(), missing.size() == 1 ? "" : "s");
      for (auto& [op, count] : missing) std::printf("  %-40s %4d node%s\n", op.c_str(), count, count == 1 ? "" : "s");
    }
    std::printf("\nkiln cannot run this model:\n%s\n", e.what());
    std::fflush(stdout);
    return e.code() == ErrorCode::Unsupported ? kExitFailure : exit_code_for(e.code());
  }

  // Shapes: declared types with dynamic dims set to 1 or to --shape.
  std::vector<ValueSpec> specs;
  for (auto& in : g->inputs) {
    ValueSpec v;
    v.name = in.name;
    v.dtype = in.type.dtype;
    specs.push_back(v);
  }
  auto named = resolve_named_args(o.shapes, specs, "--shape", "SHAPE");
  std::vector<TensorType> types;
  std::string used;
  for (auto& in : g->inputs) {
    TensorType t = in.type;
    auto it = std::find_if(named.begin(), named.end(), [&](auto& p) { return p.first == in.name; });
    if (it != named.end()) {
      Shape s = parse_shape(it->second, "--shape " + it->first);
      if (t.has_shape && (size_t)t.rank() != s.size())
        usage_error("--shape " + it->first + "=" + it->second + ": rank " + std::to_string(s.size()) + ", but input '" +
                    in.name + "' is declared " + in.type.str());
      for (size_t d = 0; t.has_shape && d < s.size(); ++d)
        if (t.dims[d].known() && t.dims[d].value != s[d])
          usage_error("--shape " + it->first + "=" + it->second + ": axis " + std::to_string(d) + " must be " +
                      std::to_string(t.dims[d].value) + " for input '" + in.name + "' (" + in.type.str() + ")");
      t = TensorType::of(t.dtype, s);
    } else if (t.has_shape) {
      for (auto& d : t.dims)
        if (!d.known()) d = Dim::of(1);
    }
    used += (used.empty() ? "" : ", ") + in.name + " " + t.str();
    types.push_back(t);
  }
  ShapePlan sp;
  try {
    sp = plan->analyze(types, true);
  } catch (const Error& e) {
    std::printf("\nflops       unknown: shape inference failed for %s:\n  %s\n", used.c_str(), e.what());
    return kExitOk;
  }
  double total = 0, macs_flops = 0;
  int unknown = 0;
  std::map<std::string, double> by_op;
  std::vector<std::pair<const Node*, double>> per_node;
  for (auto& step : sp.steps) {
    const Node& n = g->nodes[step.node];
    std::vector<const TensorType*> in, out;
    for (int id : step.in) in.push_back(id < 0 ? nullptr : &sp.types[id]);
    bool all_known = true;
    for (int id : step.out) {
      out.push_back(id < 0 ? nullptr : &sp.types[id]);
      if (id >= 0 && !sp.types[id].fully_known()) all_known = false;
    }
    if (!all_known) ++unknown;
    double f = node_flops(n, in, out);
    total += f;
    by_op[op_key(n)] += f;
    if (n.domain.empty() && (n.op_type == "Conv" || n.op_type == "ConvTranspose" || n.op_type == "MatMul" || n.op_type == "Gemm"))
      macs_flops += f;
    per_node.push_back({&n, f});
  }
  std::printf("\nflops       %s  (%s MACs x2 in Conv/ConvTranspose/MatMul/Gemm; other ops 1 per output element)\n",
              fmt_count(total).c_str(), fmt_count(macs_flops / 2).c_str());
  std::printf("            for %s; %zu node%s run, %d folded at load\n", used.c_str(), sp.steps.size(),
              sp.steps.size() == 1 ? "" : "s", sp.folded_nodes);
  if (unknown) std::printf("            %d node(s) have data-dependent output shapes and are not counted\n", unknown);
  std::vector<std::pair<std::string, double>> fo(by_op.begin(), by_op.end());
  std::stable_sort(fo.begin(), fo.end(), [](auto& a, auto& b) { return a.second > b.second; });
  for (auto& [op, f] : fo)
    if (f > 0) std::printf("  %-24s %12s  %5.1f%%\n", op.c_str(), fmt_count(f).c_str(), total > 0 ? 100.0 * f / total : 0.0);
  if (o.nodes) {
    std::printf("\nper node\n");
    for (auto& [n, f] : per_node) {
      std::string outs;
      for (auto& name : n->outputs) {
        int id = plan->value_id(name);
        if (id >= 0) outs += (outs.empty() ? "" : ", ") + sp.types[id].str();
      }
      std::printf("  %-28s %-16s %12s  -> %s\n", n->name.c_str(), op_key(*n).c_str(), fmt_count(f).c_str(), outs.c_str());
    }
  }
  return kExitOk;
}

}  // namespace

void add_show_command(CLI::App& app, int* rc) {
  auto o = std::make_shared<ShowOptions>();
  auto* sub = app.add_subcommand(
      "show", "Describe a model: metadata, inputs/outputs, op histogram, parameters, FLOPs, unsupported ops (exit 1 if any)");
  sub->add_option("model", o->model, "ONNX model file")->required();
  sub->add_option("-s,--shape", o->shapes, "NAME=DIMS input shape for the FLOP estimate (default: dynamic dims = 1)")->allow_extra_args(false);
  sub->add_flag("--nodes", o->nodes, "list every node that runs with its output types and FLOPs");
  add_command(app, sub, [o] { return show_command(*o); }, rc);
}

}  // namespace kiln::cli
