// ONNX protobuf -> Graph. Every malformed field becomes an InvalidModel error naming the file and field.
#pragma once
#include <memory>
#include <string>

#include "graph/graph.h"

namespace kiln {

// Reads a .onnx file (external-data tensors resolved relative to its folder).
std::unique_ptr<Graph> load_onnx_file(const std::string& path);
// Parses model bytes; `base_dir` resolves external data, `label` names the source in errors.
std::unique_ptr<Graph> load_onnx_bytes(const std::string& bytes, const std::string& base_dir, const std::string& label);
// Reads a serialized TensorProto (.pb test data). `name` receives the tensor's name if not null.
Tensor load_tensor_file(const std::string& path, std::string* name = nullptr);
// Serializes a tensor as a TensorProto (for writing test data).
std::string serialize_tensor(const Tensor& t, const std::string& name);

std::string read_file_bytes(const std::string& path);  // IoError naming the file on failure

}  // namespace kiln
