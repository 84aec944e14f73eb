#include "graph/graph.h"

#include <queue>
#include <set>
#include <sstream>
#include <unordered_map>

namespace kiln {

bool TensorType::fully_known() const {
  if (!has_shape) return false;
  for (auto& d : dims)
    if (!d.known()) return false;
  return true;
}

Shape TensorType::concrete() const {
  Shape s;
  for (auto& d : dims) s.push_back(d.value);
  return s;
}

std::string TensorType::str() const {
  std::ostringstream o;
  o << dtype_name(dtype);
  if (!has_shape) return o.str() + "[?]";
  o << "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) o << ", ";
    if (dims[i].known()) o << dims[i].value;
    else o << (dims[i].symbol.empty() ? "?" : dims[i].symbol);
  }
  o << "]";
  return o.str();
}

TensorType TensorType::of(DType t, const Shape& s) {
  TensorType r;
  r.dtype = t;
  r.has_shape = true;
  for (int64_t d : s) r.dims.push_back(Dim::of(d));
  return r;
}

std::string Node::describe() const {
  std::string d = canonical_domain(domain);
  return "node '" + name + "' (" + (d.empty() ? "" : d + ":") + op_type + ")";
}

static const Attribute* find_attr(const Node& n, const std::string& k, Attribute::Kind kind, const char* kind_name) {
  auto it = n.attrs.find(k);
  if (it == n.attrs.end()) return nullptr;
  if (it->second.kind != kind)
    throw Error(ErrorCode::InvalidModel, n.describe() + ": attribute '" + k + "' should be " + kind_name);
  return &it->second;
}

int64_t Node::attr_int(const std::string& k, int64_t def) const {
  auto* a = find_attr(*this, k, Attribute::Int, "an int");
  return a ? a->i : def;
}
float Node::attr_float(const std::string& k, float def) const {
  auto it = attrs.find(k);
  if (it != attrs.end() && it->second.kind == Attribute::Int) return (float)it->second.i;
  auto* a = find_attr(*this, k, Attribute::Float, "a float");
  return a ? a->f : def;
}
std::string Node::attr_string(const std::string& k, const std::string& def) const {
  auto* a = find_attr(*this, k, Attribute::String, "a string");
  return a ? a->s : def;
}
std::vector<int64_t> Node::attr_ints(const std::string& k, const std::vector<int64_t>& def) const {
  auto* a = find_attr(*this, k, Attribute::Ints, "a list of ints");
  return a ? a->ints : def;
}
std::vector<float> Node::attr_floats(const std::string& k, const std::vector<float>& def) const {
  auto* a = find_attr(*this, k, Attribute::Floats, "a list of floats");
  return a ? a->floats : def;
}
const Tensor* Node::attr_tensor(const std::string& k) const {
  auto* a = find_attr(*this, k, Attribute::TensorV, "a tensor");
  return a ? &a->t : nullptr;
}
int64_t Node::required_int(const std::string& k) const {
  if (!has_attr(k)) throw Error(ErrorCode::InvalidModel, describe() + ": missing required attribute '" + k + "'");
  return attr_int(k, 0);
}
std::vector<int64_t> Node::required_ints(const std::string& k) const {
  if (!has_attr(k)) throw Error(ErrorCode::InvalidModel, describe() + ": missing required attribute '" + k + "'");
  return attr_ints(k);
}

int64_t Graph::opset(const std::string& domain) const {
  auto it = opsets.find(canonical_domain(domain));
  return it == opsets.end() ? 0 : it->second;
}

void Graph::topo_sort() {
  std::unordered_map<std::string, int> producer_of;
  for (size_t i = 0; i < nodes.size(); ++i)
    for (auto& o : nodes[i].outputs)
      if (!o.empty()) {
        if (producer_of.count(o) || initializers.count(o))
          throw Error(ErrorCode::InvalidModel, nodes[i].describe() + ": value '" + o + "' is produced more than once");
        producer_of[o] = (int)i;
      }
  std::set<std::string> defined;
  for (auto& in : inputs) defined.insert(in.name);
  for (auto& [k, v] : initializers) defined.insert(k);
  std::vector<int> pending(nodes.size(), 0);
  std::vector<std::vector<int>> users(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::set<int> deps;
    for (auto& in : nodes[i].inputs) {
      if (in.empty() || defined.count(in)) continue;
      auto it = producer_of.find(in);
      if (it == producer_of.end())
        throw Error(ErrorCode::InvalidModel, nodes[i].describe() + ": input '" + in + "' is not a graph input, initializer or node output");
      deps.insert(it->second);
    }
    pending[i] = (int)deps.size();
    for (int d : deps) users[d].push_back((int)i);
  }
  std::vector<int> order;
  std::priority_queue<int, std::vector<int>, std::greater<int>> ready;  // keep file order where possible
  for (size_t i = 0; i < nodes.size(); ++i)
    if (pending[i] == 0) ready.push((int)i);
  while (!ready.empty()) {
    int i = ready.top();
    ready.pop();
    order.push_back(i);
    for (int u : users[i])
      if (--pending[u] == 0) ready.push(u);
  }
  if (order.size() != nodes.size())
    throw Error(ErrorCode::InvalidModel, "graph '" + name + "' has a cycle");
  std::vector<Node> sorted;
  sorted.reserve(nodes.size());
  for (int i : order) sorted.push_back(std::move(nodes[i]));
  nodes = std::move(sorted);
  for (auto& o : outputs)
    if (!defined.count(o.name) && !producer_of.count(o.name))
      throw Error(ErrorCode::InvalidModel, "graph output '" + o.name + "' is never produced");
}

void Graph::settle_deferred(const std::function<bool(const std::string& name)>& keep) {
  for (auto& [name, t] : initializers)
    if (t.is_deferred() && !keep(name)) t = t.materialized();
}

}  // namespace kiln
