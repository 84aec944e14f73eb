// Attribute parsing, validation and output-geometry rules shared by Conv and ConvTranspose.
#pragma once
#include <array>
#include <string>
#include <vector>

#include <cstdlib>
#include <cstring>

#include "backends/cpu/conv_dnnl.h"
#include "backends/cpu/conv_params.h"
#include "backends/cpu/conv_postops.h"
#include "backends/cpu/conv_ref.h"
#include "backends/cpu/data_util.h"
#include "backends/cpu/deconv_gemm.h"
#include "core/staging.h"
#include "ops/common.h"

namespace kiln {

enum class AutoPad { NotSet, SameUpper, SameLower, Valid };

// Floor division (Python's //), used where ONNX's spec formulas may see negative operands.
inline int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Attributes of one Conv / ConvTranspose node. Lists whose length depends on the number of
// spatial dims are checked against it in resolve(), once the input rank is known.
struct ConvAttrs {
  AutoPad auto_pad = AutoPad::NotSet;
  int64_t group = 1;
  std::vector<int64_t> kernel_shape, strides, dilations, pads;
  std::vector<int64_t> output_padding, output_shape;  // ConvTranspose only
  bool transpose = false;

  ConvAttrs(const Node& n, bool is_transpose) : transpose(is_transpose) {
    std::string ap = n.attr_string("auto_pad", "NOTSET");
    if (ap == "NOTSET" || ap.empty()) auto_pad = AutoPad::NotSet;
    else if (ap == "SAME_UPPER") auto_pad = AutoPad::SameUpper;
    else if (ap == "SAME_LOWER") auto_pad = AutoPad::SameLower;
    else if (ap == "VALID") auto_pad = AutoPad::Valid;
    else fail(n.describe() + ": auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got '" + ap + "'");
    group = n.attr_int("group", 1);
    if (group < 1) fail(n.describe() + ": group must be >= 1, got " + std::to_string(group));
    kernel_shape = n.attr_ints("kernel_shape");
    strides = n.attr_ints("strides");
    dilations = n.attr_ints("dilations");
    pads = n.attr_ints("pads");
    for (auto k : kernel_shape)
      if (k < 1) fail(n.describe() + ": kernel_shape entries must be >= 1, got " + std::to_string(k));
    for (auto s : strides)
      if (s < 1) fail(n.describe() + ": strides must be >= 1, got " + std::to_string(s));
    for (auto d : dilations)
      if (d < 1) fail(n.describe() + ": dilations must be >= 1, got " + std::to_string(d));
    if (pads.size() % 2) fail(n.describe() + ": pads must have 2 entries per spatial axis, got " + std::to_string(pads.size()));
    for (auto p : pads)
      if (p < 0) fail(n.describe() + ": pads must be >= 0, got " + std::to_string(p));
    if (transpose) {
      output_padding = n.attr_ints("output_padding");
      output_shape = n.attr_ints("output_shape");
      for (auto p : output_padding)
        if (p < 0) fail(n.describe() + ": output_padding must be >= 0, got " + std::to_string(p));
      for (auto s : output_shape)
        if (s < 1) fail(n.describe() + ": output_shape entries must be >= 1, got " + std::to_string(s));
    } else if (n.has_attr("output_padding") || n.has_attr("output_shape")) {
      fail(n.describe() + ": output_padding/output_shape are ConvTranspose attributes, not Conv");
    }
  }

  // Checks list lengths against the number of spatial dims.
  void check_lengths(const Node& n, int nsp) const {
    auto chk = [&](const std::vector<int64_t>& v, size_t want, const char* name) {
      if (!v.empty() && v.size() != want)
        fail(n.describe() + ": " + name + " has " + std::to_string(v.size()) + " entries, expected " +
             std::to_string(want) + " for " + std::to_string(nsp) + " spatial dim(s)");
    };
    chk(kernel_shape, nsp, "kernel_shape");
    chk(strides, nsp, "strides");
    chk(dilations, nsp, "dilations");
    chk(pads, 2 * nsp, "pads");
    chk(output_padding, nsp, "output_padding");
    // output_shape may name only the spatial dims or (older models) the whole output shape.
    if (!output_shape.empty() && output_shape.size() != (size_t)nsp && output_shape.size() != (size_t)nsp + 2)
      fail(n.describe() + ": output_shape has " + std::to_string(output_shape.size()) + " entries, expected " +
           std::to_string(nsp) + " (spatial dims)");
  }
  int64_t stride(int i) const { return strides.empty() ? 1 : strides[i]; }
  int64_t dilation(int i) const { return dilations.empty() ? 1 : dilations[i]; }
  int64_t pad_begin(int i) const { return pads.empty() ? 0 : pads[i]; }
  int64_t pad_end(int i, int nsp) const { return pads.empty() ? 0 : pads[nsp + i]; }
  int64_t out_pad(int i) const { return output_padding.empty() ? 0 : output_padding[i]; }
  int64_t out_shape(int i, int nsp) const {
    if (output_shape.empty()) return -1;
    return output_shape[output_shape.size() == (size_t)nsp ? i : i + 2];
  }
};

struct AxisGeom {
  int64_t out = -1, pad_l = 0, pad_r = 0;
};

// One spatial axis of Conv. `in` and `k` are known (>= 0 / >= 1).
inline AxisGeom conv_axis(const Node& n, const ConvAttrs& a, int i, int nsp, int64_t in, int64_t k) {
  const int64_t s = a.stride(i), d = a.dilation(i), dk = (k - 1) * d + 1;
  AxisGeom g;
  switch (a.auto_pad) {
    case AutoPad::NotSet:
      g.pad_l = a.pad_begin(i);
      g.pad_r = a.pad_end(i, nsp);
      g.out = floor_div(in + g.pad_l + g.pad_r - dk, s) + 1;
      break;
    case AutoPad::Valid:
      g.out = floor_div(in - dk, s) + 1;
      break;
    case AutoPad::SameUpper:
    case AutoPad::SameLower: {
      g.out = (in + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (g.out - 1) * s + dk - in);
      // An odd total puts the extra cell at the end for SAME_UPPER, at the start for SAME_LOWER.
      int64_t small = total / 2, big = total - small;
      g.pad_l = a.auto_pad == AutoPad::SameUpper ? small : big;
      g.pad_r = total - g.pad_l;
      break;
    }
  }
  if (g.out < 1)
    fail(n.describe() + ": spatial axis " + std::to_string(i) + " of size " + std::to_string(in) +
         " is too small for a kernel of extent " + std::to_string(dk) + " (output size would be " + std::to_string(g.out) + ")");
  return g;
}

// One spatial axis of ConvTranspose (ONNX spec formulas; total padding may be negative when output_shape asks
// for more than the plain formula gives: the extra cells then appear at the end and receive only the bias).
inline AxisGeom convT_axis(const Node& n, const ConvAttrs& a, int i, int nsp, int64_t in, int64_t k) {
  const int64_t s = a.stride(i), d = a.dilation(i), dk = (k - 1) * d + 1, op = a.out_pad(i);
  const int64_t full = s * (in - 1) + op + dk;
  AxisGeom g;
  int64_t want = a.out_shape(i, nsp);
  if (want < 0 && (a.auto_pad == AutoPad::SameUpper || a.auto_pad == AutoPad::SameLower)) want = in * s;
  if (want >= 0) {
    int64_t total = full - want;
    int64_t half = floor_div(total, 2);
    if (a.auto_pad == AutoPad::SameUpper) { g.pad_l = half; g.pad_r = total - half; }
    else { g.pad_l = total - half; g.pad_r = half; }
    g.out = want;
  } else if (a.auto_pad == AutoPad::Valid) {
    g.out = full;
  } else {
    g.pad_l = a.pad_begin(i);
    g.pad_r = a.pad_end(i, nsp);
    g.out = full - g.pad_l - g.pad_r;
  }
  if (g.out < 1)
    fail(n.describe() + ": ConvTranspose output size along spatial axis " + std::to_string(i) + " would be " +
         std::to_string(g.out));
  return g;
}

// Validates channel/group/kernel relations on (possibly partial) types; fills what is known.
// Returns the number of spatial dims, or -1 when the rank is unknown.
inline int conv_check_ranks(const Node& n, const ConvAttrs& a, const TensorType& x, const TensorType& w) {
  int rank = x.has_shape ? x.rank() : (w.has_shape ? w.rank() : -1);
  if (rank < 0) return -1;
  if (rank < 3 || rank > 5)
    unsupported(n.describe() + ": only 1D, 2D and 3D convolutions are supported (input rank 3..5), got rank " + std::to_string(rank));
  if (x.has_shape && w.has_shape && x.rank() != w.rank())
    fail(n.describe() + ": X " + x.str() + " and W " + w.str() + " must have the same rank");
  int nsp = rank - 2;
  a.check_lengths(n, nsp);
  if (w.has_shape) {
    for (int i = 0; i < nsp; ++i) {
      const Dim& kd = w.dims[2 + i];
      if (kd.known() && kd.value < 1) fail(n.describe() + ": W " + w.str() + " has an empty kernel");
      if (!a.kernel_shape.empty() && kd.known() && kd.value != a.kernel_shape[i])
        fail(n.describe() + ": kernel_shape attribute does not match W " + w.str() + " on spatial axis " + std::to_string(i));
    }
  }
  const Dim c = x.has_shape ? x.dims[1] : Dim();
  const Dim w0 = w.has_shape ? w.dims[0] : Dim(), w1 = w.has_shape ? w.dims[1] : Dim();
  if (!a.transpose) {
    // X: [N, C, ...], W: [M, C/group, k...]
    if (c.known() && w1.known() && c.value != w1.value * a.group)
      fail(n.describe() + ": X has " + std::to_string(c.value) + " channels but W " + w.str() + " with group=" +
           std::to_string(a.group) + " expects " + std::to_string(w1.value * a.group));
    if (w0.known() && w0.value % a.group != 0)
      fail(n.describe() + ": W's output channels " + std::to_string(w0.value) + " are not divisible by group=" + std::to_string(a.group));
  } else {
    // X: [N, C, ...], W: [C, M/group, k...]
    if (c.known() && w0.known() && c.value != w0.value)
      fail(n.describe() + ": X has " + std::to_string(c.value) + " channels but W " + w.str() + " expects " +
           std::to_string(w0.value) + " (W.dim(0))");
    if (c.known() && c.value % a.group != 0)
      fail(n.describe() + ": X's " + std::to_string(c.value) + " channels are not divisible by group=" + std::to_string(a.group));
    if (w0.known() && w0.value % a.group != 0)
      fail(n.describe() + ": W's input channels " + std::to_string(w0.value) + " are not divisible by group=" + std::to_string(a.group));
  }
  return nsp;
}

// Output type for Conv/ConvTranspose from (possibly symbolic) input types.
inline TensorType conv_infer(const Node& n, const ConvAttrs& a, const TensorType& x, const TensorType& w,
                             const TensorType* b) {
  if (x.dtype != w.dtype)
    fail(n.describe() + ": X is " + dtype_name(x.dtype) + " but W is " + dtype_name(w.dtype));
  if (x.dtype != DType::Float32 && x.dtype != DType::Float64 && x.dtype != DType::Float16 && x.dtype != DType::BFloat16)
    unsupported(n.describe() + std::string(": element type ") + dtype_name(x.dtype) + " is not supported (float types only)");
  int nsp = conv_check_ranks(n, a, x, w);
  if (nsp < 0) return unknown_type(x.dtype);
  Dim m;  // output channels
  if (w.has_shape) {
    if (!a.transpose) m = w.dims[0];
    else if (w.dims[1].known()) m = Dim::of(w.dims[1].value * a.group);
  }
  if (b && b->has_shape) {
    if (b->rank() != 1) fail(n.describe() + ": B must be 1-D, got " + b->str());
    if (b->dtype != x.dtype) fail(n.describe() + ": B is " + dtype_name(b->dtype) + " but X is " + dtype_name(x.dtype));
    if (m.known() && b->dims[0].known() && b->dims[0].value != m.value)
      fail(n.describe() + ": B " + b->str() + " must have " + std::to_string(m.value) + " entries (output channels)");
    if (!m.known() && b->dims[0].known()) m = b->dims[0];
  }
  TensorType y;
  y.dtype = x.dtype;
  y.has_shape = true;
  y.dims.resize(nsp + 2);
  y.dims[0] = x.has_shape ? x.dims[0] : Dim();
  y.dims[1] = m;
  for (int i = 0; i < nsp; ++i) {
    int64_t k = !a.kernel_shape.empty() ? a.kernel_shape[i] : (w.has_shape && w.dims[2 + i].known() ? w.dims[2 + i].value : -1);
    int64_t in = x.has_shape && x.dims[2 + i].known() ? x.dims[2 + i].value : -1;
    if (a.transpose && a.out_shape(i, nsp) >= 0) { y.dims[2 + i] = Dim::of(a.out_shape(i, nsp)); continue; }
    if (k < 0 || in < 0) continue;  // stays unknown
    y.dims[2 + i] = Dim::of(a.transpose ? convT_axis(n, a, i, nsp, in, k).out : conv_axis(n, a, i, nsp, in, k).out);
  }
  return y;
}

// Full geometry for concrete shapes (validated), in the 3-spatial-dim form the CPU kernels use
// (1D/2D are padded with leading unit axes).
inline cpu::ConvParams conv_params(const Node& n, const ConvAttrs& a, const Shape& xs, const Shape& ws) {
  TensorType xt = TensorType::of(DType::Float32, xs), wt = TensorType::of(DType::Float32, ws);
  int nsp = conv_check_ranks(n, a, xt, wt);
  cpu::ConvParams p;
  p.nsp = nsp;
  p.transpose = a.transpose;
  p.N = xs[0];
  p.C = xs[1];
  p.G = a.group;
  p.M = a.transpose ? ws[1] * a.group : ws[0];
  const int off = 3 - nsp;
  for (int i = 0; i < nsp; ++i) {
    int64_t in = xs[2 + i], k = ws[2 + i];
    AxisGeom g = a.transpose ? convT_axis(n, a, i, nsp, in, k) : conv_axis(n, a, i, nsp, in, k);
    p.in[off + i] = in;
    p.k[off + i] = k;
    p.out[off + i] = g.out;
    p.stride[off + i] = a.stride(i);
    p.dil[off + i] = a.dilation(i);
    p.pad_l[off + i] = g.pad_l;
    p.pad_r[off + i] = g.pad_r;
  }
  return p;
}

// Environment overrides, read once (for benchmarking and debugging):
//   KILN_CONV_LAYOUT=plain|blocked   force the oneDNN activation layout (default: per-problem choice)
//   KILN_CONV_REFERENCE=1            use the reference kernels only
inline cpu::ConvLayout conv_layout_override() {
  static const cpu::ConvLayout l = [] {
    const char* v = std::getenv("KILN_CONV_LAYOUT");
    if (v && !std::strcmp(v, "plain")) return cpu::ConvLayout::Plain;
    if (v && !std::strcmp(v, "blocked")) return cpu::ConvLayout::Blocked;
    return cpu::ConvLayout::Auto;
  }();
  return l;
}
inline bool conv_force_reference() {
  static const bool r = [] { const char* v = std::getenv("KILN_CONV_REFERENCE"); return v && *v && *v != '0'; }();
  return r;
}

// The Conv (Transpose = false) and ConvTranspose (Transpose = true) kernel.
// Inputs: X, W, optional B, and (only on nodes fused by graph/passes, with a "sum" post-op) input 3: the summand S,
// of Y's shape. Post-ops fused by the passes are read from the kiln.post_* attributes (backends/cpu/conv_postops.h):
// Y = post_n(...post_1(conv(X, W) + B)...), where a sum step adds S.
// Float32 runs on oneDNN when it has an implementation; Float64/Float16/BFloat16 and the problems oneDNN rejects
// (e.g. negative left padding from a ConvTranspose output_shape) use the reference kernel.
// Layouts: float32 2D/3D problems on the oneDNN path accept X and S plain or channels-last (as input_layout says) and
// write Y in the layout output_layout(0) says (LayoutRule::ChannelsLast); everything else is PlainOnly.
template <bool Transpose>
class ConvKernel : public Kernel {
 public:
  ConvKernel(const Node& n, int) : a_(n, Transpose), dnnl_(conv_layout_override()), post_(cpu::post_ops_of(n)) {
    if (cpu::has_sum(post_) && !n.has_input(3))
      fail(n.describe() + ": a 'sum' post-op needs the summand as input 3");
    if (!cpu::has_sum(post_) && n.num_inputs() > 3)
      fail(n.describe() + ": expected at most 3 inputs (X, W, B), got " + std::to_string(n.num_inputs()));
  }

  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    if (!ctx.has_input(0) || !ctx.has_input(1)) fail(n.describe() + ": inputs X and W are required");
    const TensorType* b = ctx.has_input(2) ? &ctx.input_type(2) : nullptr;
    TensorType y = conv_infer(n, a_, ctx.input_type(0), ctx.input_type(1), b);
    if (!post_.empty() && y.dtype != DType::Float32)
      unsupported(n.describe() + ": fused post-ops need float32, got " + dtype_name(y.dtype));
    if (cpu::has_sum(post_)) {
      const TensorType& s = ctx.input_type(3);
      if (s.dtype != y.dtype) fail(n.describe() + ": the summand (input 3) is " + s.str() + ", expected " + y.str());
      if (s.has_shape && y.has_shape) {
        bool same = s.rank() == y.rank();
        for (int i = 0; same && i < s.rank(); ++i)
          same = !(s.dims[i].known() && y.dims[i].known() && s.dims[i].value != y.dims[i].value);
        if (!same) summand_mismatch(n, s.str(), y.str());
      }
    }
    ctx.set_output(0, y);
    // W's contents are fixed when its value is known before running (initializer or folded constant). A run-time
    // re-inference (X's value known too) says nothing new, so it does not change the flag.
    if (ctx.input_value(0) == nullptr) w_constant_ = ctx.input_value(1) != nullptr;
  }

  LayoutRule layout_rule(const std::vector<const TensorType*>& types, const std::vector<Layout>&) const override {
    if (types.empty() || !types[0] || conv_force_reference()) return LayoutRule::PlainOnly;
    const TensorType& x = *types[0];
    if (x.dtype != DType::Float32 || !x.has_shape || (x.rank() != 4 && x.rank() != 5)) return LayoutRule::PlainOnly;
    return LayoutRule::ChannelsLast;
  }

  // After the first oneDNN run a constant W is kept in oneDNN's layout; the original is not needed again.
  bool owns_constant(int input) const override { return input == 1 && w_constant_ && holds_weights(); }
  // Deferred weights are copied out (staged) for packing, or for each run on the paths that do not pack.
  bool takes_deferred(int input) const override { return input == 1; }
  // A fused sum accumulates onto the summand where it lies (no copy into Y first).
  int inplace_input() const override { return cpu::has_sum(post_) ? 3 : -1; }

  // The oneDNN primitive and the packed weights of the first run, made ahead (see Kernel::prepare).
  void prepare(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const Tensor& w = ctx.input(1);
    if (x.dtype() != DType::Float32 || w.dtype() != DType::Float32 || conv_force_reference()) return;
    // Only constant weights in ONNX's layout are worth it (and still there: a released W has its kept copy already).
    if (!w_constant_ || (w.raw() == nullptr && !w.is_deferred()) || (ctx.input_layout(1) == Layout::ChannelsLast && w.rank() >= 3))
      return;
    if (w.is_deferred() && holds_weights()) return;
    const cpu::ConvParams p = conv_params(ctx.node(), a_, x.shape(), w.shape());
    const bool x_cl = ctx.input_layout(0) == Layout::ChannelsLast && x.rank() >= 3;
    const bool y_cl = ctx.output_layout(0) == Layout::ChannelsLast && x.rank() >= 3;
    const Tensor ws = staged_copy(w);
    if (use_gemm(p)) {
      gemm_.pack(p, ws.data<float>());
      return;
    }
    dnnl_.prepare(p, ws.data<float>(), ctx.has_input(2), true, x_cl, y_cl, post_, cpu::has_sum(post_));
  }

  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    const Tensor& w = ctx.input(1);
    const Tensor* b = ctx.has_input(2) ? &ctx.input(2) : nullptr;
    const Tensor* sum = cpu::has_sum(post_) ? &ctx.input(3) : nullptr;
    cpu::ConvParams p = conv_params(n, a_, x.shape(), w.shape());
    if (x.dtype() != w.dtype()) fail(n.describe() + ": X and W element types differ");
    if (b && (b->rank() != 1 || b->dim(0) != p.M || b->dtype() != x.dtype()))
      fail(n.describe() + ": B must be a 1-D " + dtype_name(x.dtype()) + " tensor of " + std::to_string(p.M) +
           " entries, got " + shape_str(b->shape()));
    Tensor& y = ctx.output(0);
    Shape want{p.N, p.M};
    for (int i = 3 - p.nsp; i < 3; ++i) want.push_back(p.out[i]);
    if (y.shape() != want || y.dtype() != x.dtype())
      fail(n.describe() + ": output buffer " + shape_str(y.shape()) + " does not match the computed shape " + shape_str(want));
    if (sum && (sum->shape() != want || sum->dtype() != y.dtype()))
      summand_mismatch(n, shape_str(sum->shape()), shape_str(want));
    if (!post_.empty() && y.dtype() != DType::Float32)
      unsupported(n.describe() + ": fused post-ops need float32, got " + dtype_name(y.dtype()));
    if (y.numel() == 0) return;
    const bool x_cl = ctx.input_layout(0) == Layout::ChannelsLast && x.rank() >= 3;
    const bool y_cl = ctx.output_layout(0) == Layout::ChannelsLast && y.rank() >= 3;
    const bool s_cl = sum && ctx.input_layout(3) == Layout::ChannelsLast && sum->rank() >= 3;
    // Weights are expected plain (initializers); a channels-last W is made plain for this call. A W whose storage
    // the plan freed (owns_constant) lives on in oneDNN's copy.
    Tensor w_plain;
    const Tensor* wp = &w;
    // A deferred W whose packed copy is held is as good as a freed one; else it is copied out for this call.
    const bool w_freed = w.raw() == nullptr && w.numel() > 0 && (!w.is_deferred() || holds_weights());
    Tensor w_staged;
    if (w.is_deferred() && !w_freed) {
      w_staged = staged_copy(w);
      wp = &w_staged;
    }
    if (w_freed) {
      if (w.dtype() != DType::Float32 || !holds_weights())
        fail(n.describe() + ": weights were released but no prepared copy is held");
    } else if (ctx.input_layout(1) == Layout::ChannelsLast && w.rank() >= 3) {
      w_plain = Tensor(w.dtype(), w.shape());
      data::layout_copy(wp->raw(), w_plain.raw(), w.dim(0), w.dim(1), w.numel() / std::max<int64_t>(1, w.dim(0) * w.dim(1)),
                       dtype_size(w.dtype()), false);
      wp = &w_plain;
    }
    // A released W, back in ONNX's layout from whichever kernel holds it, for a kernel that does not.
    auto take_back_held = [&] {
      w_plain = Tensor(w.dtype(), w.shape());
      if (gemm_.holds_weights()) gemm_.unpack(p, w_plain.data<float>());
      else dnnl_.unpack_weights(p, w_plain.data<float>());
      wp = &w_plain;
    };
    const int64_t S = y.numel() / (p.N * p.M);
    if (x.dtype() == DType::Float32 && use_gemm(p)) {
      // A constant W is packed once (prepare or the first run); one fed at run time, every run.
      if (!gemm_.holds_weights() || !w_constant_) {
        if (w_freed) take_back_held();
        gemm_.pack(p, wp->data<float>());
      }
      gemm_.run(p, x.data<float>(), b ? b->data<float>() : nullptr, y.data<float>(), x_cl, y_cl, post_);
      return;
    }
    // A W released while GemmDeconv held it (a larger shape ran first): oneDNN gets it back, and keeps its own copy.
    bool w_constant = w_constant_ && (wp == &w || wp == &w_staged);
    if (w_freed && !dnnl_.holds_weights() && !conv_force_reference()) {
      take_back_held();
      w_constant = true;
    }
    if (x.dtype() == DType::Float32 && (!conv_force_reference() || w_freed)) {
      // The summand in Y's layout (oneDNN's sum post-op accumulates onto a copy of it in Y).
      Tensor s_conv;
      const float* sd = sum ? sum->data<float>() : nullptr;
      if (sum && s_cl != y_cl) {
        s_conv = Tensor(sum->dtype(), sum->shape());
        data::layout_copy(sum->raw(), s_conv.raw(), p.N, p.M, S, 4, y_cl);
        sd = s_conv.data<float>();
      }
      if (dnnl_.run(p, x.data<float>(), wp->data<float>(), b ? b->data<float>() : nullptr, y.data<float>(),
                    w_constant, x_cl, y_cl, post_, sd))
        return;
    }
    if (w_freed && wp == &w) take_back_held();
    // The plan may have put Y in the summand's buffer (inplace_input): keep the summand before Y is written.
    Tensor sum_kept;
    if (sum && sum->raw() == y.raw()) {
      sum_kept = sum->clone();
      sum = &sum_kept;
    }
    // Reference path, on plain tensors.
    Tensor x_plain, y_plain;
    const Tensor* xp = &x;
    if (x_cl) {
      x_plain = Tensor(x.dtype(), x.shape());
      data::layout_copy(x.raw(), x_plain.raw(), p.N, p.C, x.numel() / std::max<int64_t>(1, p.N * p.C), dtype_size(x.dtype()), false);
      xp = &x_plain;
    }
    Tensor* yp = &y;
    if (y_cl) {
      y_plain = Tensor(y.dtype(), y.shape());
      yp = &y_plain;
    }
    cpu::conv_reference(p, *xp, *wp, b, *yp);
    if (!post_.empty()) {
      Tensor s_plain;
      const float* sd = nullptr;
      if (sum) {
        if (s_cl) {
          s_plain = Tensor(sum->dtype(), sum->shape());
          data::layout_copy(sum->raw(), s_plain.raw(), p.N, p.M, S, 4, false);
          sd = s_plain.data<float>();
        } else {
          sd = sum->data<float>();
        }
      }
      cpu::apply_post_ops_ref(post_, yp->data<float>(), yp->numel(), sd);
    }
    if (y_cl) data::layout_copy(y_plain.raw(), y.raw(), p.N, p.M, S, dtype_size(y.dtype()), true);
  }

 private:
  // A summand that does not fit the output. On a part of a Conv that read a Concat (passes::split_concat_conv), the
  // error is the Concat's: its inputs differ in shape.
  [[noreturn]] static void summand_mismatch(const Node& n, const std::string& s, const std::string& y) {
    const std::string concat = n.attr_string("kiln.split_concat", "");
    if (!concat.empty())
      fail("node '" + concat + "' (Concat): its inputs do not match outside the concatenation axis (the convolution "
           "reading it, computed per input as '" + n.name + "', got parts " + s + " and " + y + ")");
    fail(n.describe() + ": the summand (input 3) " + s + " does not match the output " + y);
  }

  // Transposed convolutions with kernel == stride (U-Net upsampling) are one matrix product (cpu::GemmDeconv).
  bool use_gemm(const cpu::ConvParams& p) const {
    return Transpose && !conv_force_reference() && !cpu::has_sum(post_) && cpu::GemmDeconv::applies(p) &&
           cpu::GemmDeconv::worth_it(p);
  }
  bool holds_weights() const { return dnnl_.holds_weights() || gemm_.holds_weights(); }

  ConvAttrs a_;
  cpu::DnnlConv dnnl_;
  cpu::GemmDeconv gemm_;
  std::vector<cpu::PostOp> post_;
  bool w_constant_ = false;
};

}  // namespace kiln
