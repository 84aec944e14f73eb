// Shared oneDNN objects for CPU kernels.
#pragma once
#include <dnnl.hpp>

#include "kiln/tensor.h"

namespace kiln::cpu {

dnnl::engine& engine();   // one CPU engine per process
dnnl::stream& stream();   // one in-order stream per calling thread

// oneDNN dims from a kiln shape.
inline dnnl::memory::dims to_dims(const Shape& s) { return dnnl::memory::dims(s.begin(), s.end()); }
// Plain row-major tag for a rank (a, ab, abc, ...).
dnnl::memory::format_tag plain_tag(int rank);
// Channels-last tag for a rank (acb = nwc, acdb = nhwc, acdeb = ndhwc); rank >= 3.
dnnl::memory::format_tag channels_last_tag(int rank);
// oneDNN data type for a kiln dtype (undef when oneDNN has none).
dnnl::memory::data_type dnnl_type(DType t);

// A oneDNN memory over kiln's own allocation (allocate_buffer: large buffers mapped, returned to the system when
// freed), for data kept across runs such as prepared weights. The buffer lives as long as `buf` does.
struct HeldMemory {
  dnnl::memory mem;
  std::shared_ptr<void> buf;
  explicit operator bool() const { return static_cast<bool>(buf); }
};
HeldMemory held_memory(const dnnl::memory::desc& d);

}  // namespace kiln::cpu
