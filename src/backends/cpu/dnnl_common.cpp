#include "backends/cpu/dnnl_common.h"

#include <cstdlib>
#include <memory>
#include <new>

#include "kiln/status.h"

namespace kiln::cpu {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

dnnl::memory::format_tag plain_tag(int rank) {
  using T = dnnl::memory::format_tag;
  switch (rank) {
    case 1: return T::a;
    case 2: return T::ab;
    case 3: return T::abc;
    case 4: return T::abcd;
    case 5: return T::abcde;
    case 6: return T::abcdef;
    default: throw Error(ErrorCode::Unsupported, "oneDNN tensors of rank " + std::to_string(rank) + " are not supported");
  }
}

dnnl::memory::format_tag channels_last_tag(int rank) {
  using T = dnnl::memory::format_tag;
  switch (rank) {
    case 3: return T::acb;
    case 4: return T::acdb;
    case 5: return T::acdeb;
    default: throw Error(ErrorCode::Unsupported, "no channels-last layout for rank " + std::to_string(rank));
  }
}

dnnl::memory::data_type dnnl_type(DType t) {
  using D = dnnl::memory::data_type;
  switch (t) {
    case DType::Float32: return D::f32;
    case DType::Float16: return D::f16;
    case DType::BFloat16: return D::bf16;
    case DType::Int32: return D::s32;
    case DType::Int8: return D::s8;
    case DType::UInt8: return D::u8;
    default: return D::undef;
  }
}

uint8_t* scratch_buffer(size_t bytes) {
  thread_local std::unique_ptr<void, void (*)(void*)> buf(nullptr, std::free);
  thread_local size_t cap = 0;
  if (bytes > cap) {
    buf.reset();
    cap = 0;
    void* q = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!q) throw std::bad_alloc();
    buf.reset(q);
    cap = bytes;
  }
  return static_cast<uint8_t*>(buf.get());
}

void with_scratchpad(std::unordered_map<int, dnnl::memory>& args, dnnl::memory& pad, size_t pad_bytes) {
  if (!pad_bytes) return;
  pad.set_data_handle(scratch_buffer(pad_bytes));
  args[DNNL_ARG_SCRATCHPAD] = pad;
}

HeldMemory held_memory(const dnnl::memory::desc& d) {
  HeldMemory h;
  h.buf = allocate_buffer(d.get_size());
  h.mem = dnnl::memory(d, engine(), h.buf.get());
  return h;
}

void KeptWeights::keep(const dnnl::memory& original, const dnnl::memory::desc& want, const void* src, uint64_t fp) {
  mem_ = held_memory(want);
  dnnl::memory from = original;
  dnnl::reorder(from, mem_.mem).execute(stream(), from, mem_.mem);
  src_ = src;
  fp_ = fp;
  ++gen_;
}

const dnnl::memory& KeptWeights::for_layout(const dnnl::memory::desc& want, HeldMemory& slot, uint64_t& slot_gen,
                                            const dnnl::memory::desc* want_view) const {
  if (slot_gen != gen_) {
    if (mem_.mem.get_desc() == want) {
      slot = mem_;  // shared, no copy
    } else {
      slot = held_memory(want);
      dnnl::memory from = mem_.mem, to(want_view ? *want_view : want, engine(), slot.buf.get());
      HeldMemory dense;
      const dnnl::memory::desc& kept = mem_.mem.get_desc();
      if (want.data.format_kind == dnnl_format_kind_wino && kept.data.format_kind == dnnl_blocked) {
        // oneDNN makes Winograd weights only from a dense layout: go through a temporary dense copy.
        const dnnl::memory::dims d = kept.dims();
        dense = held_memory(dnnl::memory::desc(d, kept.data_type(), plain_tag((int)d.size())));
        dnnl::reorder(from, dense.mem).execute(stream(), from, dense.mem);
        from = dense.mem;
      }
      dnnl::reorder(from, to).execute(stream(), from, to);
    }
    slot_gen = gen_;
  }
  return slot.mem;
}

void KeptWeights::unpack(const dnnl::memory::desc& plain, void* dst) const {
  dnnl::memory from = mem_.mem, to(plain, engine(), dst);
  dnnl::reorder(from, to).execute(stream(), from, to);
  stream().wait();
}

}  // namespace kiln::cpu
