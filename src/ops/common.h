// Small helpers shared by operator files: dtype dispatch, broadcasting, axis handling.
#pragma once
#include <cstring>
#include <string>
#include <vector>

#include "ops/registry.h"

namespace kiln {

[[noreturn]] inline void fail(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }
[[noreturn]] inline void unsupported(const std::string& msg) { throw Error(ErrorCode::Unsupported, msg); }

// Calls f(T{}) with the C++ type of a numeric dtype. Float16/BFloat16 are not included (convert first).
template <class F>
void visit_numeric(DType t, F&& f) {
  switch (t) {
    case DType::Float32: f(float{}); break;
    case DType::Float64: f(double{}); break;
    case DType::Int32: f(int32_t{}); break;
    case DType::Int64: f(int64_t{}); break;
    case DType::Int8: f(int8_t{}); break;
    case DType::UInt8: f(uint8_t{}); break;
    case DType::Int16: f(int16_t{}); break;
    case DType::UInt16: f(uint16_t{}); break;
    case DType::UInt32: f(uint32_t{}); break;
    case DType::UInt64: f(uint64_t{}); break;
    default: unsupported(std::string("type ") + dtype_name(t) + " is not supported here");
  }
}

// Calls f(T{}) for any storable dtype by element size only (for pure data movement).
template <class F>
void visit_bytes(DType t, F&& f) {
  switch (dtype_size(t)) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    case 8: f(uint64_t{}); break;
    default: unsupported(std::string("type ") + dtype_name(t) + " is not supported");
  }
}

inline bool is_float(DType t) { return t == DType::Float32 || t == DType::Float64 || t == DType::Float16 || t == DType::BFloat16; }

// Axis in [-rank, rank) -> [0, rank); error names the node otherwise.
inline int normalize_axis(int64_t axis, int rank, const Node& n, const char* what = "axis") {
  if (axis < -rank || axis >= rank)
    fail(n.describe() + ": " + what + " " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  return (int)(axis < 0 ? axis + rank : axis);
}

// Reads an integer tensor (int32/int64) as int64 values.
std::vector<int64_t> to_int64s(const Tensor& t);
// Reads a float-ish or integer scalar/tensor as doubles.
std::vector<double> to_doubles(const Tensor& t);

// Numpy-style broadcast of symbolic shapes; throws naming the node when incompatible.
TensorType broadcast_types(const Node& n, const std::vector<const TensorType*>& ins, DType out_dtype);
Shape broadcast_shapes(const Node& n, const std::vector<Shape>& shapes);

// Row-major strides of a shape, and the strides to read `in` broadcast into `out_shape` (0 on broadcast axes).
std::vector<int64_t> strides_of(const Shape& s);
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out_shape);

// Output type with unknown shape (rank unknown).
inline TensorType unknown_type(DType t) { TensorType r; r.dtype = t; return r; }

}  // namespace kiln
