// ArgMax / ArgMin: int64 indices along `axis` (default 0), keepdims (default 1), select_last_index (opset 12+).
#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

template <bool IS_MAX>
class ArgK : public Kernel {
 public:
  ArgK(const Node& n, int opset) : node_(n) {
    axis_ = n.attr_int("axis", 0);
    keepdims_ = n.attr_int("keepdims", 1) != 0;
    last_ = n.attr_int("select_last_index", 0) != 0;
    if (last_ && opset < 12) fail(n.describe() + ": select_last_index needs opset 12");
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (x.dtype == DType::Bool || x.dtype == DType::String)
      unsupported(node_.describe() + ": input type " + dtype_name(x.dtype) + " is not supported");
    if (!x.has_shape) { ctx.set_output(0, unknown_type(DType::Int64)); return; }
    int a = normalize_axis(axis_, x.rank(), node_);
    TensorType t = unknown_type(DType::Int64);
    t.has_shape = true;
    for (int d = 0; d < x.rank(); ++d) {
      if (d != a) t.dims.push_back(x.dims[d]);
      else if (keepdims_) t.dims.push_back(Dim::of(1));
    }
    ctx.set_output(0, t);
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    int a = normalize_axis(axis_, x.rank(), node_);
    int64_t outer = 1, R = x.dim(a), inner = 1;
    for (int d = 0; d < a; ++d) outer *= x.dim(d);
    for (int d = a + 1; d < x.rank(); ++d) inner *= x.dim(d);
    int64_t* y = ctx.output(0).data<int64_t>();
    if (outer * inner == 0) return;
    if (R == 0) fail(node_.describe() + ": cannot take the arg " + (IS_MAX ? "max" : "min") + " of an empty axis");
    auto go = [&](const auto* p) {
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          const auto* s = p + o * R * inner + j;
          auto best = s[0];
          int64_t bi = 0;
          for (int64_t r = 1; r < R; ++r) {
            auto v = s[r * inner];
            bool better = IS_MAX ? (last_ ? v >= best : v > best) : (last_ ? v <= best : v < best);
            if (better) { best = v; bi = r; }
          }
          y[o * inner + j] = bi;
        }
    };
    if (x.dtype() == DType::Float16 || x.dtype() == DType::BFloat16) {
      Tensor xf = cpu::red_as_f32(x);
      go(xf.data<float>());
      return;
    }
    visit_numeric(x.dtype(), [&](auto tag) { go(x.data<decltype(tag)>()); });
  }

 private:
  Node node_;
  int64_t axis_;
  bool keepdims_, last_;
};

}  // namespace

void register_argminmax(Registry& r) {
  r.add("ArgMax", 1, make_kernel<ArgK<true>>());
  r.add("ArgMin", 1, make_kernel<ArgK<false>>());
}

}  // namespace kiln
