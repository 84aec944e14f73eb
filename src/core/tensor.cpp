#include "kiln/tensor.h"

#include "core/helper_thread.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <system_error>
#include <vector>

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "kiln/status.h"

namespace kiln {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: case DType::Int32: case DType::UInt32: return 4;
    case DType::Float64: case DType::Int64: case DType::UInt64: return 8;
    case DType::Float16: case DType::BFloat16: case DType::Int16: case DType::UInt16: return 2;
    case DType::Int8: case DType::UInt8: case DType::Bool: return 1;
    default: return 0;
  }
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::UInt8: return "uint8";
    case DType::Int8: return "int8";
    case DType::UInt16: return "uint16";
    case DType::Int16: return "int16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::String: return "string";
    case DType::Bool: return "bool";
    case DType::Float16: return "float16";
    case DType::Float64: return "float64";
    case DType::UInt32: return "uint32";
    case DType::UInt64: return "uint64";
    case DType::BFloat16: return "bfloat16";
    case DType::Undefined: return "undefined";
  }
  return "unknown";
}

bool dtype_supported(DType t) { return dtype_size(t) != 0; }

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

// Large buffers are mapped directly: they come zeroed, and freeing them returns the memory to the system at once.
// Through malloc, a freed weight (e.g. one the kernels keep prepared copies of) could stay in the heap's free
// lists -- glibc raises its mmap threshold after the first large free -- and still count as resident.
constexpr size_t kMapBytes = 256 * 1024;

// No transparent huge pages: asked for on weights, prepared weights or arenas they saved page faults (resnet50
// load 59 -> 42 ms) but made first runs erratic -- direct compaction when no huge page is free (vit_b_16 first
// run 220-550 ms against a steady 245 ms; the nnU-Net tile net's 256 MiB arena 905 against 650 ms).

std::shared_ptr<void> allocate_buffer(size_t bytes) {
  size_t n = (bytes + 63) / 64 * 64;
  if (n == 0) n = 64;
  if (n >= kMapBytes) {
    void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw Error(ErrorCode::RuntimeError, "out of memory allocating " + std::to_string(bytes) + " bytes");
    return std::shared_ptr<void>(m, [n](void* q) { ::munmap(q, n); });
  }
  void* p = std::aligned_alloc(64, n);
  if (!p) throw Error(ErrorCode::RuntimeError, "out of memory allocating " + std::to_string(bytes) + " bytes");
  std::memset(p, 0, n);
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

void prefault_buffer(void* p, size_t bytes, int threads) {
  // Only mapped buffers (malloc'ed ones were zeroed, so touched, already), page-aligned pieces of at least 1 MiB each.
  if (bytes < kMapBytes || !p) return;
  static const size_t kPage = (size_t)::sysconf(_SC_PAGESIZE);
  const size_t per = std::max<size_t>(1 << 20, (bytes / std::max(1, threads) + kPage - 1) / kPage * kPage);
  auto populate = [p, bytes](size_t begin, size_t end) {
    ::madvise(static_cast<uint8_t*>(p) + begin, std::min(end, bytes) - begin, MADV_POPULATE_WRITE);
  };
  std::vector<std::unique_ptr<HelperThread>> helpers;
  try {
    for (size_t b = per; b < bytes; b += per) helpers.push_back(std::make_unique<HelperThread>([=] { populate(b, b + per); }));
  } catch (const std::system_error&) {
    // no thread to spare: the pieces not started fault in on first use
  }
  populate(0, per);
  helpers.clear();  // joins
}

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_)
    if (d < 0) throw Error(ErrorCode::InvalidArgument, "negative dimension in shape " + shape_str(shape_));
  if (!dtype_supported(dtype_))
    throw Error(ErrorCode::Unsupported, std::string("tensors of type ") + dtype_name(dtype_) + " are not supported");
  numel_ = shape_numel(shape_);
  storage_ = allocate_buffer(nbytes());
  data_ = storage_.get();
}

Tensor Tensor::view(DType dtype, Shape shape, void* data) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  t.data_ = data;
  return t;
}

Tensor Tensor::borrowed(DType dtype, Shape shape, void* data, std::shared_ptr<void> keep) {
  Tensor t = view(dtype, std::move(shape), data);
  t.storage_ = std::move(keep);
  return t;
}

Tensor Tensor::deferred(DType dtype, Shape shape, const void* source, std::shared_ptr<void> keep) {
  Tensor t = view(dtype, std::move(shape), nullptr);
  t.source_ = source;
  t.storage_ = std::move(keep);
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  if (shape_numel(shape) != numel_)
    throw Error("cannot reshape " + shape_str(shape_) + " to " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(dtype_, shape_);
  if (nbytes()) std::memcpy(t.data_, source_ ? source_ : data_, nbytes());
  return t;
}

float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) { mant <<= 1; --exp; }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t absx = x & 0x7fffffff;
  if (absx >= 0x7f800000) return sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0);  // inf / nan
  if (absx >= 0x477ff000) return sign | 0x7c00;  // rounds to inf
  if (absx < 0x38800000) {  // subnormal half (or zero), round to nearest even
    if (absx < 0x33000000) return sign;
    uint32_t mant = (absx & 0x7fffff) | 0x800000;
    int shift = 126 - (absx >> 23);  // 14..24 ... shift to place
    uint32_t r = mant >> (shift);
    uint32_t rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1))) ++r;
    return sign | r;
  }
  uint32_t r = ((absx - 0x38000000) >> 13);
  uint32_t rem = absx & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return sign | r;
}

float bfloat16_to_float(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bfloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return (x >> 16) | 0x40;  // quiet nan
  uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return (uint16_t)((x + rounding) >> 16);
}

}  // namespace kiln
