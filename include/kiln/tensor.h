// Tensor: a dtype, a shape and a contiguous row-major buffer (owned or borrowed).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln {

// Numbering follows ONNX TensorProto.DataType so the loader can cast directly.
enum class DType : int32_t {
  Undefined = 0, Float32 = 1, UInt8 = 2, Int8 = 3, UInt16 = 4, Int16 = 5, Int32 = 6, Int64 = 7,
  String = 8, Bool = 9, Float16 = 10, Float64 = 11, UInt32 = 12, UInt64 = 13, BFloat16 = 16,
};

size_t dtype_size(DType t);           // bytes per element; 0 for unsupported/String
const char* dtype_name(DType t);      // "float32", "int64", ...
bool dtype_supported(DType t);        // storable in a Tensor

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[1, 3, 224, 224]"
// Zeroed, 64-byte aligned storage (what tensors use): large buffers are mapped directly, so freeing them returns the
// memory to the system at once. Throws kiln::Error when out of memory.
std::shared_ptr<void> allocate_buffer(size_t bytes);
// Maps every page of a buffer from allocate_buffer now, split over `threads` threads, instead of one page fault at a
// time when it is first written (a no-op for small buffers and where the system cannot do it).
void prefault_buffer(void* p, size_t bytes, int threads);

class Tensor {
 public:
  Tensor() = default;
  // Allocates zero-initialised, 64-byte aligned storage.
  Tensor(DType dtype, Shape shape);
  // Borrows `data`; the caller keeps it alive.
  static Tensor view(DType dtype, Shape shape, void* data);
  // Borrows `data`, kept alive (and let go of) by `keep`.
  static Tensor borrowed(DType dtype, Shape shape, void* data, std::shared_ptr<void> keep);
  // A weight not yet copied out of its source (a mapped model file) because its bytes there are not aligned for its
  // element type: raw() is null and source() holds the bytes, which only code that reads them as bytes may use
  // (`staged_copy` in core/staging.h, `materialized`). `keep` keeps the source alive. The source must be a private
  // file mapping never written: its pages may be dropped from memory at any time and are read again from the file.
  static Tensor deferred(DType dtype, Shape shape, const void* source, std::shared_ptr<void> keep);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? i + (int)shape_.size() : i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool empty() const { return dtype_ == DType::Undefined; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <class T> T* data() { return static_cast<T*>(data_); }
  template <class T> const T* data() const { return static_cast<const T*>(data_); }

  bool is_deferred() const { return source_ != nullptr; }
  const void* source() const { return source_; }

  // Same buffer, new shape (numel must match).
  Tensor reshaped(Shape shape) const;
  // Deep copy with owned storage (of a deferred tensor: its bytes, copied out of the source).
  Tensor clone() const;
  // A deferred tensor copied into storage of its own; any other tensor as it is.
  Tensor materialized() const { return source_ ? clone() : *this; }

 private:
  DType dtype_ = DType::Undefined;
  Shape shape_;
  int64_t numel_ = 0;
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  const void* source_ = nullptr;  // deferred tensors only (data_ is null)
};

// IEEE half <-> float conversions (used by Cast and the loader).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bfloat16_to_float(uint16_t h);
uint16_t float_to_bfloat16(float f);

}  // namespace kiln
