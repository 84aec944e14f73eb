// Shared oneDNN objects for CPU kernels.
#pragma once
#include <dnnl.hpp>
#include <omp.h>

#include <cstdint>
#include <unordered_map>

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

// One grow-only buffer per calling thread for memory that lives only during one primitive call: blocked copies of
// activations and the primitives' scratchpads (created with scratchpad_mode::user; see with_scratchpad). Sharing it
// keeps activation-sized copies from being held per cached primitive (that would double activation memory on a
// large 3D net), and oneDNN's own scratchpads are allocated and freed around every execution, paying page faults
// each time (a Winograd layer of densenet121: 0.83 instead of 0.52 ms). Valid until the next call on this thread.
uint8_t* scratch_buffer(size_t bytes);
// For primitives whose scratchpad is user-managed: `args` gets `pad` over scratch_buffer when the primitive needs
// one (pad_bytes > 0). Nothing else may use scratch_buffer until the primitive has run.
void with_scratchpad(std::unordered_map<int, dnnl::memory>& args, dnnl::memory& pad, size_t pad_bytes);

// OpenMP at one thread on this thread while alive (when `on`): Kernel::prepare packs weights beside other kernels'
// prepare on the session's threads, where an OpenMP team of its own would oversubscribe the cores.
struct OneThread {
  int saved = 0;
  explicit OneThread(bool on = true) : saved(on ? omp_get_max_threads() : 0) {
    if (on) omp_set_num_threads(1);
  }
  ~OneThread() {
    if (saved) omp_set_num_threads(saved);
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;
};

// A oneDNN memory over kiln's own allocation (allocate_buffer: large buffers mapped, returned to the system when
// freed), for data kept across runs such as prepared weights. The buffer lives as long as `buf` does.
struct HeldMemory {
  dnnl::memory mem;
  std::shared_ptr<void> buf;
  explicit operator bool() const { return static_cast<bool>(buf); }
};
HeldMemory held_memory(const dnnl::memory::desc& d);

// One constant weight tensor kept in oneDNN's layout: made from the original in the layout of the first primitive
// that needs it, it then serves every primitive of its kernel (for the kernels of Conv, MatMul and Gemm it is the
// only copy once the plan frees the original, see Kernel::owns_constant).
class KeptWeights {
 public:
  explicit operator bool() const { return static_cast<bool>(mem_); }
  // Whether the kept copy was made from the buffer at `src` with fingerprint `fp`.
  bool holds(const void* src, uint64_t fp = 0) const { return mem_ && src_ == src && fp_ == fp; }
  // (Re)makes the kept copy in layout `want` from `original` (a view of the original weights at `src`).
  void keep(const dnnl::memory& original, const dnnl::memory::desc& want, const void* src, uint64_t fp = 0);
  // The weights for a primitive wanting layout `want`: the kept buffer itself when the layouts agree, else a reorder
  // of it into `slot`, redone when the kept copy was remade (`slot_gen` records which one `slot` holds; 0: none).
  // `want_view`: how to see `slot` for that reorder when `want` has other (unit) dims than the kept copy. A Winograd
  // `want` is made through a temporary dense copy (oneDNN reorders into Winograd layouts only from dense ones).
  const dnnl::memory& for_layout(const dnnl::memory::desc& want, HeldMemory& slot, uint64_t& slot_gen,
                                 const dnnl::memory::desc* want_view = nullptr) const;
  // Writes the kept weights into `dst`, laid out as `plain` says.
  void unpack(const dnnl::memory::desc& plain, void* dst) const;

 private:
  HeldMemory mem_;
  const void* src_ = nullptr;
  uint64_t fp_ = 0, gen_ = 0;
};

}  // namespace kiln::cpu
