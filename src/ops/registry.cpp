#include "ops/registry.h"

#include <algorithm>
#include <mutex>

namespace kiln {

void register_all_ops(Registry& r);  // generated from the files in src/ops/

const TensorType& InferContext::input_type(int i) const {
  if (!has_input(i))
    throw Error(ErrorCode::InvalidModel, node_.describe() + ": required input " + std::to_string(i) + " is missing");
  return *in_types_[i];
}

void InferContext::set_output(int i, TensorType t) {
  if (i >= num_outputs()) return;  // optional output not requested
  out_[i] = std::move(t);
}

const Tensor& RunContext::input(int i) const {
  if (!has_input(i))
    throw Error(ErrorCode::InvalidModel, node_.describe() + ": required input " + std::to_string(i) + " is missing");
  return *in_[i];
}

Tensor& RunContext::output(int i) {
  if (!has_output(i) || out_[i]->empty())
    throw Error(ErrorCode::RuntimeError, node_.describe() + ": output " + std::to_string(i) + " was not allocated");
  return *out_[i];
}

Tensor& RunContext::allocate_output(int i, DType dtype, const Shape& shape) {
  if (!has_output(i))
    throw Error(ErrorCode::RuntimeError, node_.describe() + ": no output slot " + std::to_string(i));
  *out_[i] = Tensor(dtype, shape);
  return *out_[i];
}

void Registry::add(const std::string& op_type, int since, KernelFactory make, OpFlags flags) {
  add_domain("", op_type, since, std::move(make), flags);
}

void Registry::add_domain(const std::string& domain, const std::string& op_type, int since, KernelFactory make,
                          OpFlags flags) {
  auto& v = entries_[{canonical_domain(domain), op_type}];
  v.push_back(OpEntry{canonical_domain(domain), op_type, since, std::move(make), flags});
  std::sort(v.begin(), v.end(), [](const OpEntry& a, const OpEntry& b) { return a.since < b.since; });
}

const OpEntry* Registry::find(const std::string& domain, const std::string& op_type, int64_t opset) const {
  auto it = entries_.find({canonical_domain(domain), op_type});
  if (it == entries_.end()) return nullptr;
  const OpEntry* best = nullptr;
  for (auto& e : it->second)
    if (e.since <= opset) best = &e;
  return best;
}

std::vector<std::string> Registry::op_names() const {
  std::vector<std::string> names;
  for (auto& [k, v] : entries_) names.push_back(k.first.empty() ? k.second : k.first + ":" + k.second);
  return names;
}

const Registry& registry() {
  static Registry r;
  static std::once_flag once;
  std::call_once(once, [] { register_all_ops(r); });
  return r;
}

}  // namespace kiln
