// Float32 Conv / ConvTranspose on oneDNN 2.6 (convolution_forward / deconvolution_forward), with the primitive
// and the reordered (blocked) weights cached per (geometry, weight pointer + fingerprint).
#pragma once
#include <cstdint>
#include <list>
#include <memory>

#include <vector>

#include "backends/cpu/conv_params.h"
#include "backends/cpu/conv_postops.h"
#include "backends/cpu/dnnl_common.h"

namespace kiln::cpu {

// How activations are handed to oneDNN.
//  Plain:   src/dst described as ncw/nchw/ncdhw; oneDNN computes on them directly.
//  Blocked: src/dst format_tag::any; x is reordered plain->blocked before and y blocked->plain after.
//  Auto:    per-problem choice from measurements (see choose_layout in conv_dnnl.cpp).
enum class ConvLayout { Auto, Plain, Blocked };

class DnnlConv {
 public:
  explicit DnnlConv(ConvLayout layout = ConvLayout::Auto);
  ~DnnlConv();
  DnnlConv(const DnnlConv&) = delete;
  DnnlConv& operator=(const DnnlConv&) = delete;

  // y = conv(x, w) + b for float32 plain tensors. Returns false (computing nothing) when oneDNN cannot do this
  // problem; the caller then uses the reference kernel. weights_constant: w's contents never change while its
  // pointer stays the same (an initializer), so its reorder is done once; otherwise it is redone every call.
  // src_cl / dst_cl: x / y are stored channels-last (nwc/nhwc/ndhwc) instead of plain. `post` is applied in order
  // on the result (bias included); with a Sum entry, `sum` is the summand in y's layout. It may be y itself (the
  // plan's in-place sum, Kernel::inplace_input): the sum then accumulates onto y with no copy. A false return
  // leaves y untouched, so the summand is still there for the reference kernel.
  // With weights_constant, w may be nullptr once holds_weights() is true (the original was freed): the kept copy
  // serves every later call, reordered to whatever layout a new problem needs.
  bool run(const ConvParams& p, const float* x, const float* w, const float* b, float* y, bool weights_constant,
           bool src_cl = false, bool dst_cl = false, const std::vector<PostOp>& post = {}, const float* sum = nullptr);
  // Everything run() with these arguments would do before computing (the primitive, the kept weights in its layout),
  // without computing: x, y and sum are not touched (only whether sum is given matters). Not counted as a call.
  // False when oneDNN has no implementation.
  bool prepare(const ConvParams& p, const float* w, bool has_bias, bool weights_constant, bool src_cl, bool dst_cl,
               const std::vector<PostOp>& post, bool has_sum_input);

  // True when a constant W has been copied into oneDNN's layout: from then on run() and unpack_weights() need no
  // original.
  bool holds_weights() const { return static_cast<bool>(kept_); }
  // Writes the kept weights back in ONNX's layout for p's geometry (for the reference kernel). False when none are
  // kept.
  bool unpack_weights(const ConvParams& p, float* dst) const;

  // The layout used for the last successful run (Plain or Blocked), for tests and reports.
  ConvLayout last_layout() const { return last_layout_; }
  // Whether the last successful run used a Winograd primitive (3x3 stride-1 layers from their second call on, see
  // winograd_candidate in conv_dnnl.cpp).
  bool last_winograd() const { return last_winograd_; }
  size_t cached_entries() const;
  static ConvLayout choose_layout(const ConvParams& p);
  // Whether a problem switches to a Winograd primitive from its second call on (with constant weights, blocked
  // layout; see the measurements in conv_dnnl.cpp).
  static bool winograd_candidate(const ConvParams& p);

  struct Entry;

 private:
  // run() and prepare(): finds or makes the entry and readies the weights (w_mem); false when oneDNN declines.
  bool setup(const ConvParams& p, const float* w, bool has_bias, bool weights_constant, bool src_cl, bool dst_cl,
             const std::vector<PostOp>& post, bool has_sum_input, bool count_call, Entry** entry, dnnl::memory* w_mem);
  ConvLayout layout_;
  ConvLayout last_layout_ = ConvLayout::Auto;
  bool last_winograd_ = false;
  std::list<std::unique_ptr<Entry>> entries_;  // most recently used first
  KeptWeights kept_;  // a constant W, in the layout the first primitive chose
};

}  // namespace kiln::cpu
