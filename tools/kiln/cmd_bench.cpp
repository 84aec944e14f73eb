// kiln bench MODEL: times a model on random inputs (load, first run, median/p90/min/mean over --runs),
// reports peak RSS and arena size; --profile breaks the time down per node and per op type,
// --trace writes a Chrome trace (chrome://tracing, Perfetto) of every node of every timed run.
// Start-up: when the environment variable KILN_BENCH_SPAWN_NS holds the CLOCK_REALTIME time (ns since
// the epoch) at which the caller spawned this process (bench/run.sh sets it), the JSON also reports
// first_output_ms_since_spawn (spawn -> first inference output ready: process start, model load and
// optimisation, input generation, first run with all its lazy initialisation), input_gen_ms (the
// random-input generation inside that span, a benchmark artefact) and startup_ms = the difference.
// bench/ort_bench.js and bench/torch_bench.py report the same fields, measured the same way.
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "common.h"
#include "graph/graph.h"
#include "runtime/plan.h"

namespace kiln::cli {

namespace {

struct BenchOptions {
  std::string model;
  std::vector<std::string> shapes;
  int threads = 0;
  int runs = 20;
  int warmup = 3;
  bool json = false;
  bool profile = false;
  std::string trace;
  int top = 15;
};

Tensor random_input(DType dt, const Shape& shape, std::mt19937& rng) {
  Tensor t(dt, shape);  // zero-initialised: integer and bool inputs stay 0
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t n = t.numel();
  switch (dt) {
    case DType::Float32:
      for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = nd(rng);
      break;
    case DType::Float64:
      for (int64_t i = 0; i < n; ++i) t.data<double>()[i] = nd(rng);
      break;
    case DType::Float16:
      for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = float_to_half(nd(rng));
      break;
    case DType::BFloat16:
      for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = float_to_bfloat16(nd(rng));
      break;
    default: break;
  }
  return t;
}

struct NodeStat {
  std::string name, op;
  double ms = 0;
  int64_t calls = 0;
  double first_ms = 0;  // in the first run (lazy initialisation, first touch of memory included)
};

// Wall-clock time (CLOCK_REALTIME) in ns since the epoch: comparable with the caller's spawn stamp.
int64_t realtime_ns() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
}

// KILN_BENCH_SPAWN_NS, or -1 when unset; a malformed value is reported and ignored.
int64_t spawn_time_ns() {
  const char* v = std::getenv("KILN_BENCH_SPAWN_NS");
  if (!v || !*v) return -1;
  errno = 0;
  char* end = nullptr;
  long long ns = std::strtoll(v, &end, 10);
  if (errno != 0 || *end != '\0' || ns <= 0) {
    std::fprintf(stderr, "warning: ignoring KILN_BENCH_SPAWN_NS='%s' (expected ns since the epoch)\n", v);
    return -1;
  }
  return ns;
}

// The instruction set oneDNN dispatches to on this CPU (its heavy kernels: convolution, matmul).
const char* dnnl_isa_name() {
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
  }
}

struct TraceEvent {
  std::string name, op;
  double start_us, dur_us;
  int run;
};

int bench_command(const BenchOptions& o) {
  if (o.runs < 1) usage_error("--runs must be at least 1, got " + std::to_string(o.runs));
  if (o.warmup < 0) usage_error("--warmup must be >= 0, got " + std::to_string(o.warmup));
  const int64_t spawn_ns = spawn_time_ns();
  const double boot_ms = spawn_ns > 0 ? (double)(realtime_ns() - spawn_ns) / 1e6 : 0.0;
  double load_ms = 0;
  auto session = load_model(o.model, o.threads, &load_ms);
  const auto& specs = session->inputs();

  // Input shapes: --shape, else the declared shape with symbolic/unknown dims set to 1.
  auto named = resolve_named_args(o.shapes, specs, "--shape", "SHAPE");
  std::vector<std::pair<std::string, Tensor>> feeds;
  std::mt19937 rng(42);
  const double gen_t0 = now_ms();
  for (auto& spec : specs) {
    Shape shape;
    auto it = std::find_if(named.begin(), named.end(), [&](auto& p) { return p.first == spec.name; });
    if (it != named.end()) {
      shape = parse_shape(it->second, "--shape " + it->first);
      if (spec.has_shape) {
        if (shape.size() != spec.dims.size())
          usage_error("--shape " + it->first + "=" + it->second + ": rank " + std::to_string(shape.size()) + ", but input '" +
                      spec.name + "' is declared " + dtype_name(spec.dtype) + spec.shape_str());
        for (size_t d = 0; d < shape.size(); ++d)
          if (spec.dims[d] >= 0 && spec.dims[d] != shape[d])
            usage_error("--shape " + it->first + "=" + it->second + ": axis " + std::to_string(d) + " must be " +
                        std::to_string(spec.dims[d]) + " for input '" + spec.name + "' (" + dtype_name(spec.dtype) +
                        spec.shape_str() + ")");
      }
    } else {
      if (!spec.has_shape)
        usage_error("input '" + spec.name + "' has no declared shape; give one with --shape " + spec.name + "=DIMS (e.g. 1x3x224x224)");
      for (auto d : spec.dims) shape.push_back(d >= 0 ? d : 1);
    }
    int64_t numel = 1;
    for (auto d : shape) {
      if (d > 0 && numel > (int64_t(1) << 40) / d) usage_error("input '" + spec.name + "': shape " + shape_str(shape) + " is too large");
      numel *= d;
    }
    feeds.push_back({spec.name, random_input(spec.dtype, shape, rng)});
  }
  const double input_gen_ms = now_ms() - gen_t0;

  // Profiling hooks: the first run (start-up's share) and the timed runs, per node.
  const bool profiling = o.profile || !o.trace.empty();
  std::map<const Node*, NodeStat> per_node;
  std::vector<const Node*> node_order;
  auto stat_of = [&](const Node& n) -> NodeStat& {
    auto [it, fresh] = per_node.try_emplace(&n);
    if (fresh) {
      it->second.name = n.name.empty() ? n.outputs.empty() ? n.op_type : n.outputs[0] : n.name;
      it->second.op = n.domain.empty() ? n.op_type : n.domain + ":" + n.op_type;
      node_order.push_back(&n);
    }
    return it->second;
  };
  Plan& plan = session->plan();
  if (profiling) plan.on_step = [&](const Node& n, double ms) { stat_of(n).first_ms += ms; };
  std::vector<Tensor> outputs;
  double t0 = now_ms();
  check(session->run(feeds, &outputs), "running " + o.model);
  const double first_ms = now_ms() - t0;
  plan.on_step = nullptr;
  // The first output is ready: everything since the spawn (minus the synthetic input) is start-up.
  const double since_spawn_ms = spawn_ns > 0 ? (double)(realtime_ns() - spawn_ns) / 1e6 : 0.0;
  for (int i = 1; i < o.warmup; ++i) check(session->run(feeds, &outputs), "running " + o.model);

  std::vector<TraceEvent> events;
  int current_run = 0;
  const double trace_origin = now_ms();
  if (profiling) {
    plan.on_step = [&](const Node& n, double ms) {
      NodeStat& st = stat_of(n);
      st.ms += ms;
      ++st.calls;
      if (!o.trace.empty()) {
        double end_us = (now_ms() - trace_origin) * 1000.0;
        events.push_back({st.name, st.op, end_us - ms * 1000.0, ms * 1000.0, current_run});
      }
    };
  }
  std::vector<double> times;
  std::vector<std::pair<double, double>> run_spans;  // for the trace
  for (int r = 0; r < o.runs; ++r) {
    current_run = r;
    double s = now_ms();
    check(session->run(feeds, &outputs), "running " + o.model);
    double e = now_ms();
    times.push_back(e - s);
    run_spans.push_back({(s - trace_origin) * 1000.0, (e - s) * 1000.0});
  }
  plan.on_step = nullptr;

  double mean = 0;
  for (double t : times) mean += t;
  mean /= (double)times.size();
  const double med = median(times), p90 = percentile(times, 90), mn = *std::min_element(times.begin(), times.end());
  const double mx = *std::max_element(times.begin(), times.end());
  const RunStats stats = session->stats();
  const double arena_mb = (double)stats.arena_bytes / (1024.0 * 1024.0);
  const double weights_mb = (double)stats.weight_bytes / (1024.0 * 1024.0);
  const double released_mb = (double)stats.released_weight_bytes / (1024.0 * 1024.0);
  const double rss = peak_rss_mb();

  // Profile tables.
  std::vector<NodeStat> nodes;
  for (auto* n : node_order) nodes.push_back(per_node[n]);
  std::stable_sort(nodes.begin(), nodes.end(), [](const NodeStat& a, const NodeStat& b) { return a.ms > b.ms; });
  std::map<std::string, NodeStat> by_op;
  double total_node_ms = 0, total_first_ms = 0;
  for (auto& n : nodes) {
    auto& s = by_op[n.op];
    s.op = n.op;
    s.ms += n.ms;
    s.calls += n.calls;
    s.first_ms += n.first_ms;
    total_node_ms += n.ms;
    total_first_ms += n.first_ms;
  }
  std::vector<NodeStat> ops;
  for (auto& [k, v] : by_op) ops.push_back(v);
  std::stable_sort(ops.begin(), ops.end(), [](const NodeStat& a, const NodeStat& b) { return a.ms > b.ms; });

  if (!o.trace.empty()) {
    nlohmann::json tr;
    auto& ev = tr["traceEvents"] = nlohmann::json::array();
    ev.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", 1}, {"args", {{"name", "kiln " + o.model}}}});
    for (size_t r = 0; r < run_spans.size(); ++r)
      ev.push_back({{"name", "run " + std::to_string(r)}, {"cat", "run"}, {"ph", "X"}, {"ts", run_spans[r].first},
                    {"dur", run_spans[r].second}, {"pid", 1}, {"tid", 0}});
    for (auto& e : events)
      ev.push_back({{"name", e.name}, {"cat", e.op}, {"ph", "X"}, {"ts", e.start_us}, {"dur", e.dur_us}, {"pid", 1},
                    {"tid", 1}, {"args", {{"op", e.op}, {"run", e.run}}}});
    tr["displayTimeUnit"] = "ms";
    std::ofstream f(o.trace);
    if (!f) failure("--trace " + o.trace + ": cannot create the file");
    f << tr.dump() << "\n";
    f.close();
    if (!f) failure("--trace " + o.trace + ": write failed");
  }

  if (o.json) {
    nlohmann::json j;
    j["model"] = o.model;
    nlohmann::json ins = nlohmann::json::object();
    for (auto& [name, t] : feeds) ins[name] = {{"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}};
    j["inputs"] = ins;
    j["threads"] = session->threads();
    j["runs"] = o.runs;
    j["warmup"] = o.warmup;
    j["load_ms"] = load_ms;
    j["first_run_ms"] = first_ms;
    j["input_gen_ms"] = input_gen_ms;
    if (spawn_ns > 0) {
      j["boot_ms"] = boot_ms;
      j["first_output_ms_since_spawn"] = since_spawn_ms;
      j["startup_ms"] = since_spawn_ms - input_gen_ms;
    }
    j["median_ms"] = med;
    j["p90_ms"] = p90;
    j["min_ms"] = mn;
    j["mean_ms"] = mean;
    j["max_ms"] = mx;
    j["peak_rss_mb"] = rss;
    j["arena_mb"] = arena_mb;
    j["weights_mb"] = weights_mb;
    j["released_weights_mb"] = released_mb;
    j["deferred_weights_mb"] = (double)stats.deferred_weight_bytes / (1024.0 * 1024.0);
    const dnnl_version_t* v = dnnl_version();
    j["dnnl_version"] = std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
    j["dnnl_isa"] = dnnl_isa_name();
    if (profiling) {
      nlohmann::json p;
      for (auto& s : ops)
        p["op_types"].push_back({{"op", s.op}, {"total_ms", s.ms}, {"ms_per_run", s.ms / o.runs},
                                 {"percent", total_node_ms > 0 ? 100.0 * s.ms / total_node_ms : 0.0}, {"count", s.calls},
                                 {"first_run_ms", s.first_ms}});
      for (auto& s : nodes)
        p["nodes"].push_back({{"name", s.name}, {"op", s.op}, {"total_ms", s.ms}, {"ms_per_run", s.ms / o.runs},
                              {"percent", total_node_ms > 0 ? 100.0 * s.ms / total_node_ms : 0.0},
                              {"first_run_ms", s.first_ms}});
      j["profile"] = p;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }

  std::printf("model       %s\n", o.model.c_str());
  for (auto& [name, t] : feeds)
    std::printf("input       %s  %s%s (random)\n", name.c_str(), dtype_name(t.dtype()), shape_str(t.shape()).c_str());
  std::printf("threads     %d\n", session->threads());
  std::printf("load        %s\n", fmt_ms(load_ms).c_str());
  std::printf("first run   %s\n", fmt_ms(first_ms).c_str());
  if (spawn_ns > 0)
    std::printf("start-up    %s   (spawn -> first output %s, minus input generation %s)\n",
                fmt_ms(since_spawn_ms - input_gen_ms).c_str(), fmt_ms(since_spawn_ms).c_str(), fmt_ms(input_gen_ms).c_str());
  std::printf("median      %s   (%d runs after %d warm-up)\n", fmt_ms(med).c_str(), o.runs, o.warmup);
  std::printf("p90         %s\n", fmt_ms(p90).c_str());
  std::printf("min / mean  %s / %s\n", fmt_ms(mn).c_str(), fmt_ms(mean).c_str());
  std::printf("memory      peak RSS %.1f MiB, arena %.2f MiB, weights %.2f MiB (%.2f MiB of them held only in prepared "
              "form)\n", rss, arena_mb, weights_mb, released_mb);
  if (profiling) {
    std::printf("\nprofile (%d timed runs; node time sums to %s per run, %.0f%% of the mean run)\n", o.runs,
                fmt_ms(total_node_ms / o.runs).c_str(), mean > 0 ? 100.0 * total_node_ms / o.runs / mean : 0.0);
    std::printf("first run: node time sums to %s (of %s); the rest is planning and preparing the kernels\n",
                fmt_ms(total_first_ms).c_str(), fmt_ms(first_ms).c_str());
    std::printf("\n  %-22s %12s %12s %7s %7s %12s\n", "op type", "total ms", "ms/run", "%", "count", "first run ms");
    for (auto& s : ops)
      std::printf("  %-22s %12.3f %12.4f %6.1f%% %7lld %12.3f\n", s.op.c_str(), s.ms, s.ms / o.runs,
                  total_node_ms > 0 ? 100.0 * s.ms / total_node_ms : 0.0, (long long)s.calls, s.first_ms);
    const size_t top = std::min<size_t>(nodes.size(), (size_t)std::max(o.top, 0));
    std::printf("\n  top %zu of %zu nodes\n  %-32s %-16s %12s %7s %12s\n", top, nodes.size(), "node", "op", "ms/run", "%",
                "first run ms");
    for (size_t i = 0; i < top; ++i) {
      std::string name = nodes[i].name.size() > 32 ? nodes[i].name.substr(0, 29) + "..." : nodes[i].name;
      std::printf("  %-32s %-16s %12.4f %6.1f%% %12.3f\n", name.c_str(), nodes[i].op.c_str(), nodes[i].ms / o.runs,
                  total_node_ms > 0 ? 100.0 * nodes[i].ms / total_node_ms : 0.0, nodes[i].first_ms);
    }
    if (!o.trace.empty()) std::printf("\ntrace       %s (%zu events; open in chrome://tracing or ui.perfetto.dev)\n", o.trace.c_str(), events.size());
  }
  return kExitOk;
}

}  // namespace

void add_bench_command(CLI::App& app, int* rc) {
  auto o = std::make_shared<BenchOptions>();
  auto* sub = app.add_subcommand("bench", "Time a model on random inputs (float: normal(0,1), seeded; integers: zeros)");
  sub->add_option("model", o->model, "ONNX model file")->required();
  sub->add_option("-s,--shape", o->shapes,
                  "NAME=DIMS input shape, e.g. input=1x3x224x224 (default: declared shape, dynamic dims = 1)")->allow_extra_args(false);
  sub->add_option("-t,--threads", o->threads, "threads (0 = all available cores)")->capture_default_str();
  sub->add_option("--runs", o->runs, "timed runs")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "warm-up runs before timing (the first one is reported as first_run)")->capture_default_str();
  sub->add_flag("--json", o->json, "print one JSON object instead of text");
  sub->add_flag("--profile", o->profile, "time every node: op-type table and the slowest nodes");
  sub->add_option("--trace", o->trace, "write a Chrome trace JSON of every node of every timed run (implies --profile)");
  sub->add_option("--top", o->top, "nodes listed by --profile")->capture_default_str();
  add_command(app, sub, [o] { return bench_command(*o); }, rc);
}

}  // namespace kiln::cli
