// The in-memory model: nodes, values, initializers, attributes. Knows nothing of protobuf or kernels.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/session.h"
#include "kiln/status.h"
#include "kiln/tensor.h"

namespace kiln {

class Graph;

// One dimension: a known size, or a symbol (dynamic axis name), or unknown.
struct Dim {
  int64_t value = -1;   // >= 0 when known
  std::string symbol;   // set for named dynamic axes
  bool known() const { return value >= 0; }
  static Dim of(int64_t v) { Dim d; d.value = v; return d; }
  static Dim sym(std::string s) { Dim d; d.symbol = std::move(s); return d; }
  bool operator==(const Dim& o) const { return known() ? value == o.value : (o.value < 0 && symbol == o.symbol && !symbol.empty()); }
};

// Element type and (possibly partial) shape of a value.
struct TensorType {
  DType dtype = DType::Undefined;
  bool has_shape = false;       // false: rank unknown
  std::vector<Dim> dims;
  int rank() const { return (int)dims.size(); }
  bool fully_known() const;
  Shape concrete() const;       // requires fully_known()
  std::string str() const;      // "float32[batch, 3, 224, 224]"
  static TensorType of(DType t, const Shape& s);
};

struct Attribute {
  enum Kind { Undefined, Float, Int, String, TensorV, GraphV, Floats, Ints, Strings, Tensors, Graphs } kind = Undefined;
  float f = 0;
  int64_t i = 0;
  std::string s;
  Tensor t;
  std::shared_ptr<Graph> g;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::vector<Tensor> tensors;
  std::vector<std::shared_ptr<Graph>> graphs;
};

struct Node {
  std::string name, op_type, domain;  // domain "" is the default ONNX domain
  std::vector<std::string> inputs;    // "" marks an omitted optional input
  std::vector<std::string> outputs;
  std::map<std::string, Attribute> attrs;

  std::string describe() const;  // "node 'conv1' (Conv)"
  bool has_attr(const std::string& k) const { return attrs.count(k) != 0; }
  // Typed accessors; a wrong attribute type raises an InvalidModel error naming the node.
  int64_t attr_int(const std::string& k, int64_t def) const;
  float attr_float(const std::string& k, float def) const;
  std::string attr_string(const std::string& k, const std::string& def) const;
  std::vector<int64_t> attr_ints(const std::string& k, const std::vector<int64_t>& def = {}) const;
  std::vector<float> attr_floats(const std::string& k, const std::vector<float>& def = {}) const;
  const Tensor* attr_tensor(const std::string& k) const;
  int64_t required_int(const std::string& k) const;
  std::vector<int64_t> required_ints(const std::string& k) const;
  int num_inputs() const { return (int)inputs.size(); }
  bool has_input(int i) const { return i < (int)inputs.size() && !inputs[i].empty(); }
};

struct GraphIO {
  std::string name;
  TensorType type;
};

class Graph {
 public:
  std::string name;
  std::vector<Node> nodes;
  std::vector<GraphIO> inputs;    // graph inputs that are not initializers
  std::vector<GraphIO> outputs;
  std::map<std::string, Tensor> initializers;
  std::map<std::string, TensorType> value_info;  // types declared in the file
  std::map<std::string, int64_t> opsets;         // domain -> version ("" for ai.onnx)
  int64_t ir_version = 0;
  std::string producer;
  std::string source_path;                       // file it was loaded from (for messages)

  int64_t opset(const std::string& domain) const;  // 0 when not imported
  // Orders nodes so every input is produced before use; errors on cycles / undefined values.
  void topo_sort();
  // Copies each deferred initializer (Tensor::deferred) out of its source unless `keep(name)` says every reader of
  // it takes it deferred.
  void settle_deferred(const std::function<bool(const std::string& name)>& keep);
};

// Domain names "" and "ai.onnx" are the same domain.
inline std::string canonical_domain(const std::string& d) { return d == "ai.onnx" ? "" : d; }

}  // namespace kiln
