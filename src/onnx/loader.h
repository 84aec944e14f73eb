// ONNX protobuf -> Graph. Every malformed field becomes an InvalidModel error naming the file and field.
#pragma once
#include <memory>
#include <string>

#include "graph/graph.h"

namespace kiln {

// Reads a .onnx file (external-data tensors resolved relative to its folder). With `defer_weights`, weights of 64 KiB
// or more are not copied: they stay in the mapped file, as borrowed tensors where their bytes are aligned for their
// element type and as deferred ones (Tensor::deferred) where not, which Graph::settle_deferred copies out for every
// reader that cannot take them.
std::unique_ptr<Graph> load_onnx_file(const std::string& path, bool defer_weights = false);
// Parses model bytes; `base_dir` resolves external data, `label` names the source in errors.
std::unique_ptr<Graph> load_onnx_bytes(const std::string& bytes, const std::string& base_dir, const std::string& label);
// Reads a serialized TensorProto (.pb test data). `name` receives the tensor's name if not null.
Tensor load_tensor_file(const std::string& path, std::string* name = nullptr);
// Serializes a tensor as a TensorProto (for writing test data).
std::string serialize_tensor(const Tensor& t, const std::string& name);

std::string read_file_bytes(const std::string& path);  // IoError naming the file on failure

}  // namespace kiln
