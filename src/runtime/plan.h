// Compiled model: value table + one kernel per node, and per-input-shape execution plans
// (shapes inferred, shape computations folded, memory planned into one arena).
#pragma once
#include <array>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "graph/graph.h"
#include "kiln/session.h"
#include "ops/registry.h"

namespace kiln {

struct Step {
  int node = -1;              // graph node, or -1 for a layout conversion inserted by the planner
  std::vector<int> in, out;   // value ids, -1 for an absent optional
  bool dynamic = false;       // output shapes known only at run time
  Layout convert_to = Layout::Plain;     // for conversions: the target layout of out[0]
  bool physical_views = false;           // LayoutRule::Elementwise in ChannelsLast: hand physical-order views
  std::vector<Layout> in_layout, out_layout;
};

// Everything that depends on the concrete input shapes.
struct ShapePlan {
  std::vector<Shape> signature;        // input shapes this plan is for
  std::vector<TensorType> types;       // per value
  std::vector<Tensor> constants;       // per value: known before running (initializers, folded)
  std::vector<Step> steps;             // nodes that run, in order
  std::vector<int64_t> offset;         // per value: arena offset, or -1
  std::vector<int> last_use;           // per value: last step index reading it
  std::vector<bool> is_output;         // per value
  std::vector<Layout> layout;          // per value (values added by the planner come after the graph's)
  std::vector<int> output_ids;         // graph outputs (after any conversion back to Plain)
  int conversions = 0;                 // layout conversion steps inserted
  size_t arena_bytes = 0;              // taken from the plan's Arena at run time
  int folded_nodes = 0;
  bool release_checked = false;        // owned constants looked for after this plan's first run
  bool prepared = false;               // Kernel::prepare done (before the first run)
};

class Plan {
 public:
  Plan(const Graph& g, int threads, bool channels_last = true);
  // Symbolic pass over the declared input types: fills `types` for show/validation. Throws on errors.
  ShapePlan analyze(const std::vector<TensorType>& input_types, bool fold) const;
  // Runs with inputs in graph-input order.
  std::vector<Tensor> run(const std::vector<const Tensor*>& inputs);
  size_t last_arena_bytes() const { return last_arena_bytes_; }
  // Where value `name` lies in the arena in the most recently used shape plan (-1: not in the arena, or unknown).
  int64_t last_arena_offset(const std::string& name) const;
  // Layout statistics of the most recently used shape plan: {steps, channels-last steps, conversions}.
  std::array<int, 3> last_layout_stats() const { return last_layout_stats_; }
  int value_id(const std::string& name) const;
  const std::vector<std::string>& value_names() const { return names_; }
  // Lets the plan free initializers of `g` (the graph it was built from) once every kernel reading one holds its
  // own prepared copy (Kernel::owns_constant), checked after each shape plan's first run. The graph keeps the
  // tensor's dtype and shape with no storage.
  void enable_constant_release(Graph& g);
  // Whether every reader of initializer `name` takes it deferred (Kernel::takes_deferred); false for a graph output
  // or a value nothing reads.
  bool takes_deferred(const std::string& name) const;
  // Where runs take their intermediate memory (default: an arena of this plan's own).
  void set_arena(std::shared_ptr<Arena> arena) { arena_ = std::move(arena); }
  size_t released_bytes() const { return released_bytes_; }
  // Per-node timing hook (profiling): called after each step when set.
  std::function<void(const Node&, double ms)> on_step;

 private:
  ShapePlan& plan_for(const std::vector<const Tensor*>& inputs);
  void plan_layouts(ShapePlan& sp) const;
  void plan_memory(ShapePlan& sp) const;
  bool release_if_owned(int id);  // frees initializer `id` when every reader owns a copy (see enable_constant_release)
  // Before a shape plan's first run: every step's Kernel::prepare, spread over the plan's threads.
  void prepare_kernels(ShapePlan& sp, const std::vector<const Tensor*>& inputs, uint8_t* arena);

  const Graph& g_;
  int threads_;
  bool channels_last_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, int> ids_;
  std::vector<std::unique_ptr<Kernel>> kernels_;   // per node
  std::vector<const OpEntry*> entries_;
  std::vector<std::vector<int>> node_in_, node_out_;
  std::vector<int> input_ids_, output_ids_;
  std::list<ShapePlan> cache_;                      // most recent first
  size_t last_arena_bytes_ = 0;
  Graph* owner_ = nullptr;          // set by enable_constant_release
  std::shared_ptr<Arena> arena_ = std::make_shared<Arena>();
  std::unordered_map<int, std::vector<std::pair<int, int>>> readers_;  // value id -> (node, input position)
  size_t released_bytes_ = 0;
  std::array<int, 3> last_layout_stats_{0, 0, 0};
};

// Kernels for every node; throws one Unsupported error listing every node kiln cannot run.
std::vector<std::unique_ptr<Kernel>> create_kernels(const Graph& g, std::vector<const OpEntry*>* entries);

}  // namespace kiln
