// The public entry point: load an ONNX model once, run it many times.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/status.h"
#include "kiln/tensor.h"

namespace kiln {

// The memory that holds a run's intermediate values. A session has its own by default, shared by all its shape
// plans (one buffer, grown to the largest); sessions that never run at the same time -- e.g. the folds of an
// ensemble evaluated one after the other -- can share one through SessionOptions::arena. Not thread-safe: two
// sessions sharing an arena must not run concurrently.
class Arena {
 public:
  // A buffer of at least `bytes` bytes (64-byte aligned), valid until the next call; its contents are not kept.
  uint8_t* get(size_t bytes);
  size_t capacity() const { return capacity_; }

 private:
  std::shared_ptr<void> buf_;
  size_t capacity_ = 0;
};

struct SessionOptions {
  int threads = 0;        // 0: every core this process may use
  bool optimize = true;   // graph passes (constant folding etc.)
  std::shared_ptr<Arena> arena;  // intermediate memory shared with other sessions (see Arena); null: own
};

// A model input or output as declared: dims < 0 are dynamic, with `symbols` naming them.
struct ValueSpec {
  std::string name;
  DType dtype = DType::Undefined;
  bool has_shape = false;
  std::vector<int64_t> dims;
  std::vector<std::string> symbols;
  std::string shape_str() const;  // "[batch, 3, 224, 224]"
};

struct RunStats {
  size_t arena_bytes = 0;      // intermediate memory of the current plan
  size_t weight_bytes = 0;     // initializers
  size_t released_weight_bytes = 0;  // of which freed: the kernels keep prepared copies (e.g. oneDNN's layouts)
  size_t deferred_weight_bytes = 0;  // of which left in the model file at load, unaligned, for the kernels that
                                     // pack them to copy out (Tensor::deferred)
  int steps = 0;               // kernels the current plan runs
  int channels_last_steps = 0; // of which produce channels-last data
  int layout_conversions = 0;  // layout conversions the planner inserted
};

class Graph;
class Plan;

class Session {
 public:
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Loads and validates; every unsupported op is reported in one error.
  static Status load(const std::string& path, const SessionOptions& options, std::unique_ptr<Session>* out);
  static Status load_from_bytes(const std::string& bytes, const std::string& base_dir,
                                const SessionOptions& options, std::unique_ptr<Session>* out);

  const std::vector<ValueSpec>& inputs() const { return inputs_; }
  const std::vector<ValueSpec>& outputs() const { return outputs_; }

  // Named inputs in any order; outputs in graph order. Not safe to call concurrently.
  Status run(const std::vector<std::pair<std::string, Tensor>>& inputs, std::vector<Tensor>* outputs);

  RunStats stats() const;
  const Graph& graph() const { return *graph_; }
  // Internal execution plan (for tools: profiling hooks, shape analysis).
  Plan& plan() { return *plan_; }
  int threads() const { return threads_; }

 private:
  Session();
  Status init(const SessionOptions& options);
  Status check_inputs(const std::vector<std::pair<std::string, Tensor>>& inputs,
                      std::vector<const Tensor*>* ordered) const;

  std::unique_ptr<Graph> graph_;
  std::vector<ValueSpec> inputs_, outputs_;
  std::unique_ptr<Plan> plan_;
  int threads_ = 1;
  size_t deferred_bytes_ = 0;
};

// Number of cores this process may use (affinity mask), at least 1.
int available_cores();

}  // namespace kiln
