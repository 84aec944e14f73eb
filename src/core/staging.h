// Copies of deferred weights (Tensor::deferred: bytes left in the mapped model file because they are not aligned for
// their element type) for kernels that only read them once, to pack them into a layout of their own.
#pragma once
#include "kiln/session.h"
#include "kiln/tensor.h"

namespace kiln {

// While one is alive, staged_copy on its thread copies weights of up to 2 MiB into one buffer of the scope's that it
// reuses (an Arena: grown to the largest), so packing them touches no fresh pages; larger ones go to the buffer lent
// with `lend`, if any. Scopes do not nest.
class StagingScope {
 public:
  StagingScope();
  ~StagingScope();
  StagingScope(const StagingScope&) = delete;
  StagingScope& operator=(const StagingScope&) = delete;
  // Lends the scope a buffer for large weights (nullptr: none), which the caller keeps to this thread until it
  // lends another.
  void lend(Arena* large) { large_ = large; }

 private:
  friend Tensor staged_copy(const Tensor& t);
  Arena small_;
  Arena* large_ = nullptr;
};

// Drops the whole pages inside [p, p + n) of a private file mapping never written from the resident set: they are
// read again from the file if touched. Pages only partly inside (shared with a neighbour) stay.
void release_file_pages(const void* p, size_t n);

// An aligned copy of deferred `t`: a view of a staging buffer when the thread's StagingScope has one for its size
// (valid until the next staged_copy on this thread or the scope's end), else storage of its own. Any other tensor
// is returned as it is. The source's pages leave the resident set as they are copied.
Tensor staged_copy(const Tensor& t);

}  // namespace kiln
