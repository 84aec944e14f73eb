// Expand (numpy broadcast to a shape) and Tile: strided copies with zero strides.
#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class ExpandK : public Kernel {
 public:
  ExpandK(const Node&, int) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    const TensorType& st = ctx.input_type(1);
    if (st.has_shape && st.rank() != 1) fail(n.describe() + ": shape input must be 1-D, got " + st.str());
    auto shape = data::known_ints(ctx, 1);
    if (!shape) {
      if (x.has_shape && st.has_shape && st.dims[0].known())
        ctx.set_output(0, data::make_type(x.dtype, data::unknown_dims(std::max<int>(x.rank(), (int)st.dims[0].value))));
      else
        ctx.set_output(0, unknown_type(x.dtype));
      return;
    }
    for (int64_t v : *shape)
      if (v < 0) fail(n.describe() + ": negative dimension " + std::to_string(v) + " in the target shape");
    TensorType t = TensorType::of(x.dtype, *shape);
    ctx.set_output(0, broadcast_types(n, {&x, &t}, x.dtype));
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    Tensor& y = ctx.output(0);
    if (y.numel() == 0) return;
    if ((int)x.rank() > y.rank()) fail(ctx.node().describe() + ": output rank is smaller than the input's");
    data::strided_copy(y.raw(), x.raw(), y.shape(), broadcast_strides(x.shape(), y.shape()), dtype_size(x.dtype()));
  }
};

class TileK : public Kernel {
 public:
  TileK(const Node& n, int opset) {
    if (opset < 6) unsupported(n.describe() + ": Tile before opset 6 (tiles/axis inputs) is not supported");
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (data::rank_unknown(ctx, 0, 0, x.dtype)) return;
    auto rep = data::known_ints(ctx, 1);
    if (!rep) {
      ctx.set_output(0, data::make_type(x.dtype, data::unknown_dims(x.rank())));
      return;
    }
    if ((int)rep->size() != x.rank())
      fail(n.describe() + ": repeats has " + std::to_string(rep->size()) + " entries for an input of rank " + std::to_string(x.rank()));
    std::vector<Dim> out = x.dims;
    for (int d = 0; d < x.rank(); ++d) {
      int64_t r = (*rep)[d];
      if (r < 0) fail(n.describe() + ": negative repeat " + std::to_string(r));
      if (r == 1) continue;
      out[d] = x.dims[d].known() ? Dim::of(x.dims[d].value * r) : (r == 0 ? Dim::of(0) : Dim());
    }
    ctx.set_output(0, data::make_type(x.dtype, out));
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    Tensor& y = ctx.output(0);
    if (y.numel() == 0) return;
    auto rep = to_int64s(ctx.input(1));
    auto xs = strides_of(x.shape());
    Shape s;
    std::vector<int64_t> st;
    for (int d = 0; d < x.rank(); ++d) {
      s.push_back(rep[d]); st.push_back(0);
      s.push_back(x.shape()[d]); st.push_back(xs[d]);
    }
    data::strided_copy(y.raw(), x.raw(), s, st, dtype_size(x.dtype()));
  }
};

}  // namespace

void register_expand(Registry& r) {
  r.add("Expand", 8, make_kernel<ExpandK>());
  r.add("Tile", 1, make_kernel<TileK>());
}

}  // namespace kiln
