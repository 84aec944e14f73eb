// Reshape, Flatten, Squeeze, Unsqueeze: same bytes, new shape (a single memcpy).
#include <algorithm>
#include <map>

#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

using data::known_ints;
using data::make_type;

void copy_all(RunContext& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  if (y.nbytes() != x.nbytes())
    fail(ctx.node().describe() + ": output holds " + std::to_string(y.nbytes()) + " bytes, input " + std::to_string(x.nbytes()));
  if (x.nbytes() && y.raw() != x.raw()) std::memcpy(y.raw(), x.raw(), x.nbytes());
}

// Resolves a Reshape target against the (possibly symbolic) input dims.
std::vector<Dim> reshape_dims(const Node& n, const TensorType& x, const std::vector<int64_t>& shape, bool allowzero) {
  std::vector<Dim> out(shape.size());
  int infer_at = -1;
  bool has_zero = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t v = shape[i];
    if (v == -1) {
      if (infer_at >= 0) fail(n.describe() + ": reshape target has more than one -1");
      infer_at = (int)i;
    } else if (v < -1) {
      fail(n.describe() + ": invalid reshape target dimension " + std::to_string(v));
    } else if (v == 0 && !allowzero) {
      if (x.has_shape && (int)i >= x.rank())
        fail(n.describe() + ": reshape target has 0 at index " + std::to_string(i) + " but the input " + x.str() +
             " has rank " + std::to_string(x.rank()));
      out[i] = x.has_shape ? x.dims[i] : Dim();
    } else {
      if (v == 0) has_zero = true;
      out[i] = Dim::of(v);
    }
  }
  if (allowzero && has_zero && infer_at >= 0)
    fail(n.describe() + ": reshape target with allowzero=1 cannot hold both 0 and -1");
  if (!x.has_shape) {
    if (infer_at >= 0) out[infer_at] = Dim();
    return out;
  }
  // Known products and multisets of symbols on both sides.
  int64_t kin = 1, kout = 1;
  bool anon_in = false, anon_out = false;
  std::map<std::string, int> syms;
  for (auto& d : x.dims) {
    if (d.known()) kin *= d.value;
    else if (d.symbol.empty()) anon_in = true;
    else syms[d.symbol]++;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    if ((int)i == infer_at) continue;
    const Dim& d = out[i];
    if (d.known()) kout *= d.value;
    else if (d.symbol.empty()) anon_out = true;
    else syms[d.symbol]--;
  }
  bool balanced = !anon_in && !anon_out;
  std::string left_sym;
  int left = 0;
  for (auto& [s, c] : syms) {
    if (c < 0) balanced = false;
    if (c > 0) { left += c; left_sym = s; }
  }
  if (infer_at < 0) {
    if (balanced && left == 0 && kin != kout)
      fail(n.describe() + ": cannot reshape " + x.str() + " to " + make_type(x.dtype, out).str() + " (element counts differ)");
    return out;
  }
  Dim inf;
  if (balanced && left == 0) {
    if (kout == 0) {
      if (kin != 0) fail(n.describe() + ": cannot infer -1 when reshaping " + x.str() + ": other target dims multiply to 0");
      fail(n.describe() + ": cannot infer -1 when reshaping " + x.str() + " to a target containing 0");
    }
    if (kin % kout != 0)
      fail(n.describe() + ": cannot reshape " + x.str() + " to " + make_type(x.dtype, out).str() + " with -1 (" +
           std::to_string(kin) + " elements are not divisible by " + std::to_string(kout) + ")");
    inf = Dim::of(kin / kout);
  } else if (balanced && left == 1 && kin == kout && kout != 0) {
    inf = Dim::sym(left_sym);
  }
  out[infer_at] = inf;
  return out;
}

class ReshapeK : public Kernel {
 public:
  ReshapeK(const Node& n, int opset) : allowzero_(opset >= 14 && n.attr_int("allowzero", 0) != 0), opset_(opset) {
    if (opset < 5) shape_attr_ = n.attr_ints("shape");
  }
  void infer(InferContext& ctx) override {
    const Node& n_ = ctx.node();
    const TensorType& x = ctx.input_type(0);
    std::optional<std::vector<int64_t>> shape;
    if (opset_ < 5) shape = shape_attr_;
    else shape = known_ints(ctx, 1);
    if (!shape) {
      const TensorType& st = ctx.input_type(1);
      if (st.has_shape && st.rank() != 1) fail(n_.describe() + ": shape input must be 1-D, got " + st.str());
      if (st.has_shape && st.dims[0].known()) ctx.set_output(0, make_type(x.dtype, data::unknown_dims((int)st.dims[0].value)));
      else ctx.set_output(0, unknown_type(x.dtype));
      return;
    }
    ctx.set_output(0, make_type(x.dtype, reshape_dims(n_, x, *shape, allowzero_)));
  }
  void run(RunContext& ctx) override { copy_all(ctx); }
  bool output_views_input() const override { return true; }

 private:
  bool allowzero_;
  int opset_;
  std::vector<int64_t> shape_attr_;
};

class FlattenK : public Kernel {
 public:
  FlattenK(const Node& n, int) : axis_(n.attr_int("axis", 1)) {}
  void infer(InferContext& ctx) override {
    const Node& n_ = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (data::rank_unknown(ctx, 0, 0, x.dtype)) return;
    int r = x.rank();
    if (axis_ < -r || axis_ > r)
      fail(n_.describe() + ": axis " + std::to_string(axis_) + " is out of range for rank " + std::to_string(r));
    int a = (int)(axis_ < 0 ? axis_ + r : axis_);
    ctx.set_output(0, make_type(x.dtype, {data::dim_product(x.dims, 0, a), data::dim_product(x.dims, a, r)}));
  }
  void run(RunContext& ctx) override { copy_all(ctx); }
  bool output_views_input() const override { return true; }

 private:
  int64_t axis_;
};

class SqueezeK : public Kernel {
 public:
  SqueezeK(const Node& n, int opset) : opset_(opset) {
    if (opset < 13 && n.has_attr("axes")) axes_attr_ = n.attr_ints("axes");
  }
  void infer(InferContext& ctx) override {
    const Node& n_ = ctx.node();
    const TensorType& x = ctx.input_type(0);
    std::optional<std::vector<int64_t>> axes;
    if (opset_ < 13) axes = axes_attr_;
    else if (ctx.has_input(1)) {
      axes = known_ints(ctx, 1);
      if (!axes) {  // rank drops by the number of axes, dims unknown
        const TensorType& at = ctx.input_type(1);
        if (x.has_shape && at.has_shape && at.rank() == 1 && at.dims[0].known())
          ctx.set_output(0, make_type(x.dtype, data::unknown_dims(x.rank() - (int)at.dims[0].value)));
        else
          ctx.set_output(0, unknown_type(x.dtype));
        return;
      }
    }
    if (data::rank_unknown(ctx, 0, 0, x.dtype)) return;
    const int r = x.rank();
    std::vector<bool> drop(r, false);
    if (axes && !axes->empty()) {
      for (int64_t a : *axes) {
        int ax = normalize_axis(a, r, n_, "axes entry");
        if (drop[ax]) fail(n_.describe() + ": axis " + std::to_string(a) + " is repeated");
        if (x.dims[ax].known() && x.dims[ax].value != 1)
          fail(n_.describe() + ": cannot squeeze axis " + std::to_string(a) + " of " + x.str() + " (size is not 1)");
        drop[ax] = true;
      }
    } else {
      for (int i = 0; i < r; ++i) {
        if (!x.dims[i].known()) { ctx.set_output(0, unknown_type(x.dtype)); return; }
        drop[i] = x.dims[i].value == 1;
      }
    }
    std::vector<Dim> out;
    for (int i = 0; i < r; ++i)
      if (!drop[i]) out.push_back(x.dims[i]);
    ctx.set_output(0, make_type(x.dtype, out));
  }
  void run(RunContext& ctx) override { copy_all(ctx); }
  bool output_views_input() const override { return true; }

 private:
  int opset_;
  std::optional<std::vector<int64_t>> axes_attr_;
};

class UnsqueezeK : public Kernel {
 public:
  UnsqueezeK(const Node& n, int opset) : opset_(opset) {
    if (opset < 13) axes_attr_ = n.required_ints("axes");
  }
  void infer(InferContext& ctx) override {
    const Node& n_ = ctx.node();
    const TensorType& x = ctx.input_type(0);
    std::optional<std::vector<int64_t>> axes;
    if (opset_ < 13) axes = axes_attr_;
    else {
      if (!ctx.has_input(1)) fail(n_.describe() + ": the axes input is required");
      axes = known_ints(ctx, 1);
    }
    if (!axes) {
      const TensorType& at = ctx.input_type(1);
      if (x.has_shape && at.has_shape && at.rank() == 1 && at.dims[0].known())
        ctx.set_output(0, make_type(x.dtype, data::unknown_dims(x.rank() + (int)at.dims[0].value)));
      else
        ctx.set_output(0, unknown_type(x.dtype));
      return;
    }
    if (data::rank_unknown(ctx, 0, 0, x.dtype)) return;
    const int r = x.rank() + (int)axes->size();
    std::vector<bool> ins(r, false);
    for (int64_t a : *axes) {
      int ax = normalize_axis(a, r, n_, "axes entry");
      if (ins[ax]) fail(n_.describe() + ": axis " + std::to_string(a) + " is repeated");
      ins[ax] = true;
    }
    std::vector<Dim> out;
    int j = 0;
    for (int i = 0; i < r; ++i) out.push_back(ins[i] ? Dim::of(1) : x.dims[j++]);
    ctx.set_output(0, make_type(x.dtype, out));
  }
  void run(RunContext& ctx) override { copy_all(ctx); }
  bool output_views_input() const override { return true; }

 private:
  int opset_;
  std::vector<int64_t> axes_attr_;
};

// kiln:ChannelShuffle, made by graph/passes from Reshape(X, S1) -> Transpose(perm [0, 2, 1, 3, 4]) -> Reshape(S2)
// (allowzero 0): inputs X, S1, S2; computes exactly that chain. When S1 splits X's channels [N, C, H, W] into
// [N, g, C/g, H, W] and S2 is X's shape -- ShuffleNet's channel shuffle -- it also runs on channels-last data, so
// the convolutions around it need no layout conversions (shufflenet_v2 at batch 8 spent 3.3 of 14.6 ms converting).
class ChannelShuffleK : public Kernel {
 public:
  ChannelShuffleK(const Node& n, int) {
    if (n.num_inputs() != 3) fail(n.describe() + ": ChannelShuffle expects inputs X, S1, S2");
  }
  // S1 resolved against X, the transposed shape, and S2 resolved against that.
  struct Shapes { std::vector<Dim> s1, t, y; };
  static Shapes resolve(const Node& n, const TensorType& x, const std::vector<int64_t>& s1, const std::vector<int64_t>& s2) {
    Shapes r;
    r.s1 = reshape_dims(n, x, s1, false);
    if (r.s1.size() != 5) fail(n.describe() + ": S1 has " + std::to_string(r.s1.size()) + " entries, the transpose needs 5");
    r.t = {r.s1[0], r.s1[2], r.s1[1], r.s1[3], r.s1[4]};
    r.y = reshape_dims(n, make_type(x.dtype, r.t), s2, false);
    return r;
  }
  static bool is_shuffle(const TensorType& x, const Shapes& r) {
    if (!x.fully_known() || x.rank() != 4) return false;
    for (auto& d : r.s1) if (!d.known()) return false;
    const auto v = [](const Dim& d) { return d.value; };
    if (v(r.s1[0]) != x.dims[0].value || v(r.s1[1]) * v(r.s1[2]) != x.dims[1].value || v(r.s1[3]) != x.dims[2].value ||
        v(r.s1[4]) != x.dims[3].value || r.y.size() != 4)
      return false;
    for (int i = 0; i < 4; ++i)
      if (!r.y[i].known() || r.y[i].value != x.dims[i].value) return false;
    return true;
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    auto s1 = known_ints(ctx, 1), s2 = known_ints(ctx, 2);
    shuffle_ = false;
    if (!s1 || !s2) {
      ctx.set_output(0, unknown_type(x.dtype));
      return;
    }
    Shapes r = resolve(ctx.node(), x, *s1, *s2);
    shuffle_ = is_shuffle(x, r);
    ctx.set_output(0, make_type(x.dtype, r.y));
  }
  // Channels-last only for a channel shuffle of channels-last data (as the shape plan just inferred).
  LayoutRule layout_rule(const std::vector<const TensorType*>& types, const std::vector<Layout>& layouts) const override {
    return shuffle_ && types[0] && types[0]->rank() == 4 && layouts[0] == Layout::ChannelsLast ? LayoutRule::ChannelsLast
                                                                                                : LayoutRule::PlainOnly;
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    Tensor& y = ctx.output(0);
    const TensorType xt = TensorType::of(x.dtype(), x.shape());
    Shapes r = resolve(n, xt, to_int64s(ctx.input(1)), to_int64s(ctx.input(2)));
    Shape t;
    for (auto& d : r.t) t.push_back(d.value);
    if (y.numel() != x.numel() || shape_numel(t) != x.numel())
      fail(n.describe() + ": cannot reshape " + shape_str(x.shape()) + " through " + shape_str(t) + " to " + shape_str(y.shape()));
    const size_t es = dtype_size(x.dtype());
    if (x.numel() == 0) return;
    const bool x_cl = ctx.input_layout(0) == Layout::ChannelsLast, y_cl = ctx.output_layout(0) == Layout::ChannelsLast;
    if (x_cl || y_cl) {
      if (!(x_cl && y_cl && is_shuffle(xt, r)))
        fail(n.describe() + ": channels-last data for a reshape that is not a channel shuffle (a planner error)");
      // Per pixel, channel i*cg + j goes to j*g + i.
      const int64_t g = t[2], cg = t[1], C = g * cg, pixels = x.numel() / C;
      visit_bytes(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* xp = static_cast<const T*>(x.raw());
        T* yp = static_cast<T*>(y.raw());
        if (g == 2) {  // interleave the two halves (the common case), in a form the compiler vectorises
#pragma omp parallel for schedule(static)
          for (int64_t p = 0; p < pixels; ++p) {
            const T* a = xp + p * C;
            const T* b = a + cg;
            T* o = yp + p * C;
            for (int64_t j = 0; j < cg; ++j) {
              o[2 * j] = a[j];
              o[2 * j + 1] = b[j];
            }
          }
          return;
        }
#pragma omp parallel for schedule(static)
        for (int64_t p = 0; p < pixels; ++p)
          for (int64_t j = 0; j < cg; ++j)
            for (int64_t i = 0; i < g; ++i) yp[p * C + j * g + i] = xp[p * C + i * cg + j];
      });
      return;
    }
    // Plain: the transpose of X seen as S1, written in order (the second reshape moves no bytes).
    Shape s1;
    for (auto& d : r.s1) s1.push_back(d.value);
    const auto st1 = strides_of(s1);
    data::strided_copy(y.raw(), x.raw(), t, {st1[0], st1[2], st1[1], st1[3], st1[4]}, es);
  }

 private:
  bool shuffle_ = false;  // the last inference (the shape plan being planned) was a channel shuffle
};

}  // namespace

void register_reshape(Registry& r) {
  r.add_domain("kiln", "ChannelShuffle", 1, make_kernel<ChannelShuffleK>());
  r.add("Reshape", 1, make_kernel<ReshapeK>());
  r.add("Flatten", 1, make_kernel<FlattenK>());
  r.add("Squeeze", 1, make_kernel<SqueezeK>());
  r.add("Unsqueeze", 1, make_kernel<UnsqueezeK>());
}

}  // namespace kiln
