#include "core/staging.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace kiln {

namespace {
thread_local StagingScope* active = nullptr;

// Copies deferred `t` into `dst`, a MiB at a time, dropping each part of the source from the resident set once
// copied, so the copy never holds the weight twice.
void copy_out(const Tensor& t, void* dst) {
  constexpr size_t kChunk = 1 << 20;
  const char* src = static_cast<const char*>(t.source());
  const size_t n = t.nbytes();
  for (size_t off = 0; off < n; off += kChunk) {
    const size_t len = std::min(kChunk, n - off);
    std::memcpy(static_cast<char*>(dst) + off, src + off, len);
    release_file_pages(src + off, len);
  }
}
}  // namespace

void release_file_pages(const void* p, size_t n) {
  static const uintptr_t page = (uintptr_t)::sysconf(_SC_PAGESIZE);
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

StagingScope::StagingScope() {
  if (!active) active = this;
}

StagingScope::~StagingScope() {
  if (active == this) active = nullptr;
}

Tensor staged_copy(const Tensor& t) {
  if (!t.is_deferred()) return t;
  StagingScope* s = active;
  const size_t n = t.nbytes();
  // A large weight goes to the lent buffer, else to a buffer of its own, freed with the copy: a reused one that
  // large would stay resident for the whole scope.
  constexpr size_t kSmallBytes = 2 << 20;
  Arena* buf = !s ? nullptr : n <= kSmallBytes ? &s->small_ : s->large_;
  if (!buf) {
    Tensor own(t.dtype(), t.shape());
    copy_out(t, own.raw());
    return own;
  }
  void* p = buf->get(n);
  copy_out(t, p);
  return Tensor::view(t.dtype(), t.shape(), p);
}

}  // namespace kiln
