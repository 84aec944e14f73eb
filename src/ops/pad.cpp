// Pad: constant / reflect / edge / wrap modes, negative pads crop. Attrs before opset 11, inputs after
// (constant_value from 11, axes from 18, wrap from 19).
#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

enum class Mode { Constant, Reflect, Edge, Wrap };

class PadK : public Kernel {
 public:
  PadK(const Node& n, int opset) : opset_(opset) {
    std::string m = n.attr_string("mode", "constant");
    if (m == "constant") mode_ = Mode::Constant;
    else if (m == "reflect") mode_ = Mode::Reflect;
    else if (m == "edge") mode_ = Mode::Edge;
    else if (m == "wrap" && opset >= 19) mode_ = Mode::Wrap;
    else fail(n.describe() + ": unsupported pad mode '" + m + "'");
    if (opset < 11) {
      pads_attr_ = n.attr_ints(opset < 2 ? "paddings" : "pads");
      value_attr_ = n.attr_float("value", 0.f);
    }
  }
  // Full 2*rank pads (begins then ends) when known.
  std::optional<std::vector<int64_t>> full_pads(const Node& n, int r, const Tensor* pads_v, const Tensor* axes_v, bool has_axes) const {
    std::vector<int64_t> p;
    if (opset_ < 11) p = pads_attr_;
    else {
      if (!pads_v) return std::nullopt;
      p = to_int64s(*pads_v);
    }
    std::vector<int64_t> axes;
    if (opset_ >= 18 && has_axes) {
      if (!axes_v) return std::nullopt;
      axes = to_int64s(*axes_v);
    } else {
      for (int i = 0; i < r; ++i) axes.push_back(i);
    }
    if (p.size() != 2 * axes.size())
      fail(n.describe() + ": pads has " + std::to_string(p.size()) + " entries, expected " + std::to_string(2 * axes.size()));
    std::vector<int64_t> full(2 * r, 0);
    std::vector<bool> seen(r, false);
    const size_t na = axes.size();
    for (size_t i = 0; i < na; ++i) {
      int a = normalize_axis(axes[i], r, n, "axes entry");
      if (seen[a]) fail(n.describe() + ": axis " + std::to_string(axes[i]) + " is repeated");
      seen[a] = true;
      full[a] = p[i];
      full[r + a] = p[na + i];
    }
    return full;
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (data::rank_unknown(ctx, 0, 0, x.dtype)) return;
    const int r = x.rank();
    auto p = full_pads(n, r, ctx.input_value(1), ctx.input_value(3), ctx.has_input(3));
    if (!p) { ctx.set_output(0, data::make_type(x.dtype, data::unknown_dims(r))); return; }
    std::vector<Dim> out = x.dims;
    for (int d = 0; d < r; ++d) {
      int64_t add = (*p)[d] + (*p)[r + d];
      if (add == 0) continue;
      if (!x.dims[d].known()) { out[d] = Dim(); continue; }
      int64_t v = x.dims[d].value + add;
      if (v < 0) fail(n.describe() + ": pads make axis " + std::to_string(d) + " of " + x.str() + " negative");
      out[d] = Dim::of(v);
    }
    ctx.set_output(0, data::make_type(x.dtype, out));
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    Tensor& y = ctx.output(0);
    const int r = x.rank();
    auto p = full_pads(n, r, ctx.has_input(1) ? &ctx.input(1) : nullptr, ctx.has_input(3) ? &ctx.input(3) : nullptr, ctx.has_input(3));
    if (!p) fail(n.describe() + ": pads are missing");
    if (y.numel() == 0) return;
    const size_t es = dtype_size(x.dtype());
    // The fill value as raw bytes of the element type.
    uint64_t fill = 0;
    if (opset_ < 11) {
      if (value_attr_ != 0.f) write_value(x.dtype(), value_attr_, &fill, n);
    } else if (ctx.has_input(2) && ctx.input(2).numel() > 0) {
      const Tensor& cv = ctx.input(2);
      if (cv.dtype() != x.dtype()) fail(n.describe() + ": constant_value must have the type of data");
      std::memcpy(&fill, cv.raw(), es);
    }
    if (mode_ != Mode::Constant)
      for (int d = 0; d < r; ++d)
        if (x.shape()[d] == 0 && y.shape()[d] > 0)
          fail(n.describe() + ": cannot pad an empty axis in non-constant mode");
    // Source index along each axis for each output index (-1: fill).
    std::vector<std::vector<int64_t>> map(r);
    for (int d = 0; d < r; ++d) {
      const int64_t D = x.shape()[d], pb = (*p)[d];
      map[d].resize(y.shape()[d]);
      for (int64_t o = 0; o < y.shape()[d]; ++o) map[d][o] = src_index(o - pb, D);
    }
    const int64_t W = y.shape()[r - 1 < 0 ? 0 : r - 1];
    if (r == 0) { std::memcpy(y.raw(), x.raw(), es); return; }
    const int64_t rows = y.numel() / W;
    auto xs = strides_of(x.shape());
    visit_bytes(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T fv;
      std::memcpy(&fv, &fill, sizeof(T));
      const T* src = x.data<T>();
      T* dst = y.data<T>();
      const auto& lm = map[r - 1];
#pragma omp parallel for schedule(static) if (y.nbytes() > (1 << 18))
      for (int64_t row = 0; row < rows; ++row) {
        int64_t rem = row, off = 0;
        bool filled = false;
        for (int d = r - 2; d >= 0; --d) {
          int64_t o = rem % y.shape()[d];
          rem /= y.shape()[d];
          int64_t s = map[d][o];
          if (s < 0) filled = true;
          else off += s * xs[d];
        }
        T* out = dst + row * W;
        if (filled) { for (int64_t i = 0; i < W; ++i) out[i] = fv; continue; }
        const T* in = src + off;
        for (int64_t i = 0; i < W; ++i) out[i] = lm[i] < 0 ? fv : in[lm[i]];
      }
    });
  }

 private:
  int64_t src_index(int64_t i, int64_t D) const {
    if (i >= 0 && i < D) return i;
    switch (mode_) {
      case Mode::Constant: return -1;
      case Mode::Edge: return i < 0 ? 0 : D - 1;
      case Mode::Wrap: return ((i % D) + D) % D;
      case Mode::Reflect: {
        if (D == 1) return 0;
        const int64_t period = 2 * (D - 1);
        int64_t m = ((i % period) + period) % period;
        return m >= D ? period - m : m;
      }
    }
    return -1;
  }
  static void write_value(DType t, double v, uint64_t* out, const Node& n) {
    if (t == DType::Float16) { uint16_t h = float_to_half((float)v); std::memcpy(out, &h, 2); return; }
    if (t == DType::BFloat16) { uint16_t h = float_to_bfloat16((float)v); std::memcpy(out, &h, 2); return; }
    if (t == DType::Bool) { uint8_t b = v != 0; std::memcpy(out, &b, 1); return; }
    visit_numeric(t, [&](auto tag) {
      using T = decltype(tag);
      T x = (T)v;
      std::memcpy(out, &x, sizeof(T));
    });
  }

  int opset_;
  Mode mode_ = Mode::Constant;
  std::vector<int64_t> pads_attr_;
  float value_attr_ = 0.f;
};

}  // namespace

void register_pad(Registry& r) { r.add("Pad", 1, make_kernel<PadK>()); }

}  // namespace kiln
