// Kernel interface and the operator registry: an op is found by (domain, op_type, opset).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace kiln {

// Shape/type inference view of one node. Values of inputs are given when known before running
// (initializers, constants, shape computations folded at plan time).
class InferContext {
 public:
  InferContext(const Node& node, std::vector<const TensorType*> in_types, std::vector<const Tensor*> in_values)
      : node_(node), in_types_(std::move(in_types)), in_values_(std::move(in_values)), out_(node.outputs.size()) {}
  const Node& node() const { return node_; }
  int num_inputs() const { return (int)in_types_.size(); }
  bool has_input(int i) const { return i < num_inputs() && in_types_[i] != nullptr; }
  const TensorType& input_type(int i) const;   // throws if the input is absent
  const Tensor* input_value(int i) const { return i < num_inputs() ? in_values_[i] : nullptr; }
  int num_outputs() const { return (int)out_.size(); }
  void set_output(int i, TensorType t);
  void set_output(int i, DType dtype, const Shape& shape) { set_output(i, TensorType::of(dtype, shape)); }
  TensorType& output(int i) { return out_.at(i); }
  const std::vector<TensorType>& outputs() const { return out_; }

 private:
  const Node& node_;
  std::vector<const TensorType*> in_types_;
  std::vector<const Tensor*> in_values_;
  std::vector<TensorType> out_;
};

// Memory order of a tensor of rank >= 3 with logical shape (N, C, D1..Dk). Shapes are always logical.
//   Plain:        N, C, D1..Dk (row-major over the logical shape)
//   ChannelsLast: N, D1..Dk, C (NHWC / NDHWC)
enum class Layout : uint8_t { Plain = 0, ChannelsLast = 1 };

// How a kernel deals with layouts; asked by the planner once per shape plan.
enum class LayoutRule : uint8_t {
  PlainOnly,     // every input is converted to Plain first; outputs are Plain (the default)
  Elementwise,   // layout-blind: the planner hands the kernel tensors reshaped to their physical order (inputs that
                 // are full-size in one common layout, plus broadcast inputs that stay valid in that order); the
                 // output takes that layout. Only for kernels whose result depends on element positions alone.
  ChannelsLast,  // the kernel reads each input in the layout input_layout(i) reports and writes its outputs
                 // ChannelsLast (rank >= 3) -- e.g. Conv, pooling, Concat on the channel axis
};

// Execution view of one node: inputs bound, outputs preallocated when their shapes were inferred.
class RunContext {
 public:
  RunContext(const Node& node, std::vector<const Tensor*> inputs, std::vector<Tensor*> outputs)
      : node_(node), in_(std::move(inputs)), out_(std::move(outputs)) {}
  RunContext(const Node& node, std::vector<const Tensor*> inputs, std::vector<Tensor*> outputs,
             std::vector<Layout> in_layouts, std::vector<Layout> out_layouts)
      : node_(node), in_(std::move(inputs)), out_(std::move(outputs)), in_layout_(std::move(in_layouts)),
        out_layout_(std::move(out_layouts)) {}
  Layout input_layout(int i) const { return i < (int)in_layout_.size() ? in_layout_[i] : Layout::Plain; }
  Layout output_layout(int i) const { return i < (int)out_layout_.size() ? out_layout_[i] : Layout::Plain; }
  const Node& node() const { return node_; }
  int num_inputs() const { return (int)in_.size(); }
  bool has_input(int i) const { return i < num_inputs() && in_[i] != nullptr; }
  const Tensor& input(int i) const;            // throws if absent
  int num_outputs() const { return (int)out_.size(); }
  bool has_output(int i) const { return i < num_outputs() && out_[i] != nullptr; }
  Tensor& output(int i);                       // throws if not allocated
  // For outputs whose shape only the computation itself reveals.
  Tensor& allocate_output(int i, DType dtype, const Shape& shape);

 private:
  const Node& node_;
  std::vector<const Tensor*> in_;
  std::vector<Tensor*> out_;
  std::vector<Layout> in_layout_, out_layout_;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  // Output types from input types (and values where known). Throw kiln::Error on invalid input.
  virtual void infer(InferContext& ctx) = 0;
  virtual void run(RunContext& ctx) = 0;
  // Layout handling for these concrete input types and layouts (see LayoutRule). Called at plan time only.
  virtual LayoutRule layout_rule(const std::vector<const TensorType*>& types, const std::vector<Layout>& layouts) const {
    return LayoutRule::PlainOnly;
  }
  // Constant inputs (initializers) the kernel has copied into a prepared form of its own (e.g. oneDNN's packed
  // weights) from which it can serve every later run, whatever the shapes. Asked after a shape plan's first run;
  // when every reader of a constant says so, the plan frees the original and from then on hands the kernel a
  // tensor with the constant's dtype and shape but no data (raw() == nullptr).
  virtual bool owns_constant(int input) const { return false; }
  // The plan freed constant input `input`: drop any reference the kernel still holds to its storage.
  virtual void constant_released(int input) {}
  // Whether constant input `input` may come deferred (Tensor::deferred: no data, its bytes still in the model file):
  // the kernel then copies it out itself (core/staging.h) where it needs it, normally only once, into its prepared
  // form. Asked when the plan is made; a constant with any reader that says no is copied out for all of them.
  virtual bool takes_deferred(int input) const { return false; }
  // An input whose storage output 0 may take over (-1: none). The plan gives both one buffer when that input is a
  // computed value read for the last time by this node, read only once by it, with output 0's byte size and
  // layout; the kernel must then compute correctly with the input and output aliased (e.g. a Conv's fused sum
  // accumulates onto its summand in place instead of copying it first).
  virtual int inplace_input() const { return -1; }
  // Called once per shape plan before its first run, possibly on another thread than run() and at the same time as
  // other kernels' prepare (never at the same time as this kernel's own run or prepare). The context is the first
  // run's: shapes, dtypes and layouts are final and constant inputs hold their values, but computed inputs and the
  // outputs may have no data yet (raw() may be null) and must not be read or written. A kernel may create here what
  // its run needs for these shapes (oneDNN primitives, packed weights), so that this work is spread over the threads
  // instead of lying on the first run's path. Errors are ignored (the run redoes the work and reports them).
  virtual void prepare(RunContext& ctx) {}
  // Output 0 is input 0's bytes unchanged under another shape (Reshape, Flatten, Squeeze, Unsqueeze): the plan may
  // let output 0 share input 0's buffer for as long as either is read, and the kernel then copies nothing.
  virtual bool output_views_input() const { return false; }
};

// Creates the kernel for one node (parses and validates attributes once).
using KernelFactory = std::function<std::unique_ptr<Kernel>(const Node& node, int opset)>;

struct OpFlags {
  bool shape_only = false;     // output depends only on input shapes (Shape, Size): foldable when shapes are known
  bool nondeterministic = false;  // never constant-fold (random ops)
};

struct OpEntry {
  std::string domain, op_type;
  int since = 1;
  KernelFactory make;
  OpFlags flags;
};

class Registry {
 public:
  void add(const std::string& op_type, int since, KernelFactory make, OpFlags flags = {});
  void add_domain(const std::string& domain, const std::string& op_type, int since, KernelFactory make, OpFlags flags = {});
  // Newest entry with since <= opset, or nullptr.
  const OpEntry* find(const std::string& domain, const std::string& op_type, int64_t opset) const;
  std::vector<std::string> op_names() const;   // "Conv", "com.microsoft:Foo", ...

 private:
  std::map<std::pair<std::string, std::string>, std::vector<OpEntry>> entries_;
};

const Registry& registry();  // all ops, built once

// Convenience: a factory for a kernel class constructed as K(const Node&, int opset).
template <class K>
KernelFactory make_kernel() {
  return [](const Node& n, int opset) -> std::unique_ptr<Kernel> { return std::make_unique<K>(n, opset); };
}

}  // namespace kiln
