// Slice (attrs before opset 10, inputs from 10): a strided copy with contiguous runs as memcpy.
#include <climits>

#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

struct AxisSlice { int64_t start, step, count; };

// Clamps one axis the way the spec does (steps of either sign, ends like INT64_MAX/INT64_MIN).
AxisSlice slice_axis(int64_t d, int64_t s, int64_t e, int64_t st) {
  if (s < 0) s += d;
  if (e < 0) e += d;
  int64_t count;
  if (st > 0) {
    s = std::clamp<int64_t>(s, 0, d);
    e = std::clamp<int64_t>(e, 0, d);
    count = e > s ? (e - s + st - 1) / st : 0;
  } else {
    s = std::clamp<int64_t>(s, 0, d - 1);
    e = std::clamp<int64_t>(e, -1, d - 1);
    count = s > e ? (s - e + (-st) - 1) / (-st) : 0;
  }
  return {s, st, count};
}

class SliceK : public Kernel {
 public:
  SliceK(const Node& n, int opset) : opset_(opset) {
    if (opset < 10) {
      starts_ = n.required_ints("starts");
      ends_ = n.required_ints("ends");
      if (n.has_attr("axes")) axes_ = n.attr_ints("axes");
    }
  }
  struct Params { std::vector<int64_t> starts, ends, axes, steps; };
  // Slice parameters when all are known.
  std::optional<Params> params(const Node& n, const std::function<const Tensor*(int)>& val, bool has_axes_in, bool has_steps_in) const {
    Params p;
    if (opset_ < 10) {
      p.starts = starts_;
      p.ends = ends_;
      if (axes_) p.axes = *axes_;
    } else {
      const Tensor *s = val(1), *e = val(2);
      if (!s || !e) return std::nullopt;
      p.starts = to_int64s(*s);
      p.ends = to_int64s(*e);
      if (has_axes_in) {
        if (!val(3)) return std::nullopt;
        p.axes = to_int64s(*val(3));
      }
      if (has_steps_in) {
        if (!val(4)) return std::nullopt;
        p.steps = to_int64s(*val(4));
      }
    }
    if (p.starts.size() != p.ends.size())
      fail(n.describe() + ": starts has " + std::to_string(p.starts.size()) + " entries, ends " + std::to_string(p.ends.size()));
    if (p.axes.empty() && !(has_axes_in || (opset_ < 10 && axes_)))
      for (size_t i = 0; i < p.starts.size(); ++i) p.axes.push_back((int64_t)i);
    if (p.steps.empty() && !has_steps_in) p.steps.assign(p.starts.size(), 1);
    if (p.axes.size() != p.starts.size() || p.steps.size() != p.starts.size())
      fail(n.describe() + ": starts, ends, axes and steps must have the same length");
    for (int64_t st : p.steps)
      if (st == 0) fail(n.describe() + ": slice step cannot be 0");
    return p;
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (data::rank_unknown(ctx, 0, 0, x.dtype)) return;
    const int r = x.rank();
    auto p = params(n, [&](int i) { return ctx.input_value(i); }, ctx.has_input(3), ctx.has_input(4));
    std::vector<Dim> out = x.dims;
    if (!p) {
      // Which axes change is unknown unless the axes input is known.
      auto axes = data::known_ints(ctx, 3);
      if (opset_ >= 10 && ctx.has_input(3) && axes) {
        for (int64_t a : *axes) out[normalize_axis(a, r, n, "axes entry")] = Dim();
      } else {
        for (auto& d : out) d = Dim();
      }
      ctx.set_output(0, data::make_type(x.dtype, out));
      return;
    }
    std::vector<bool> seen(r, false);
    for (size_t i = 0; i < p->axes.size(); ++i) {
      int a = normalize_axis(p->axes[i], r, n, "axes entry");
      if (seen[a]) fail(n.describe() + ": axis " + std::to_string(p->axes[i]) + " is repeated");
      seen[a] = true;
      if (x.dims[a].known()) {
        out[a] = Dim::of(slice_axis(x.dims[a].value, p->starts[i], p->ends[i], p->steps[i]).count);
      } else if (!(p->starts[i] == 0 && p->steps[i] == 1 && p->ends[i] >= INT32_MAX)) {
        out[a] = Dim();
      }
    }
    ctx.set_output(0, data::make_type(x.dtype, out));
  }
  // A channels-last input stays channels-last (e.g. ShuffleNet's channel split, between convolutions): the copy just
  // walks the physical order.
  LayoutRule layout_rule(const std::vector<const TensorType*>& types, const std::vector<Layout>& layouts) const override {
    if (!types.empty() && types[0] && types[0]->has_shape && types[0]->rank() >= 3 && !layouts.empty() &&
        layouts[0] == Layout::ChannelsLast)
      return LayoutRule::ChannelsLast;
    return LayoutRule::PlainOnly;
  }

  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    const int r = x.rank();
    auto p = params(n, [&](int i) { return ctx.has_input(i) ? &ctx.input(i) : nullptr; }, ctx.has_input(3), ctx.has_input(4));
    if (!p) fail(n.describe() + ": slice parameters are missing");
    Shape shape = x.shape();
    // Element strides of x's logical axes in its storage: channels-last keeps C innermost (N, D1..Dk, C).
    const bool x_cl = ctx.input_layout(0) == Layout::ChannelsLast && r >= 3;
    const bool y_cl = ctx.output_layout(0) == Layout::ChannelsLast && r >= 3;
    std::vector<int64_t> is = strides_of(x.shape());
    if (x_cl) {
      const auto ps = strides_of(data::physical_order(x.shape()));
      is[0] = ps[0];
      is[1] = 1;
      for (int a = 2; a < r; ++a) is[a] = ps[a - 1];
    }
    std::vector<int64_t> st = is;
    int64_t off = 0;
    for (size_t i = 0; i < p->axes.size(); ++i) {
      int a = normalize_axis(p->axes[i], r, n, "axes entry");
      AxisSlice s = slice_axis(x.shape()[a], p->starts[i], p->ends[i], p->steps[i]);
      shape[a] = s.count;
      if (s.count > 0) off += s.start * is[a];
      st[a] = is[a] * s.step;
    }
    Tensor& y = ctx.output(0);
    if (y.shape() != shape) fail(n.describe() + ": output shape " + shape_str(y.shape()) + " differs from " + shape_str(shape));
    if (shape_numel(shape) == 0) return;
    const size_t es = dtype_size(x.dtype());
    // A channels-last y is written in its physical order.
    data::strided_copy(y.raw(), (const uint8_t*)x.raw() + off * (int64_t)es, y_cl ? data::physical_order(shape) : shape,
                       y_cl ? data::physical_order(st) : st, es);
  }

 private:
  int opset_;
  std::vector<int64_t> starts_, ends_;
  std::optional<std::vector<int64_t>> axes_;
};

}  // namespace

void register_slice(Registry& r) { r.add("Slice", 1, make_kernel<SliceK>()); }

}  // namespace kiln
