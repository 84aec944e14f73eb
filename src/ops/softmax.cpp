// Softmax, LogSoftmax, Hardmax.
// Before opset 13 the input is coerced to 2-D [prod(dims before axis), prod(dims from axis)] (default axis 1);
// from opset 13 the operation runs along the single axis `axis` (default -1). Numerically stable: the
// maximum of each slice is subtracted before exponentiating.
#include "backends/cpu/red_kernels.h"
#include "backends/cpu/red_ref.h"
#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

template <int KIND>  // 0 Softmax, 1 LogSoftmax, 2 Hardmax
class SoftmaxK : public Kernel {
 public:
  SoftmaxK(const Node& n, int opset) : node_(n), coerce_2d_(opset < 13) {
    axis_ = n.attr_int("axis", coerce_2d_ ? 1 : -1);
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!is_float(x.dtype)) unsupported(node_.describe() + ": input type " + dtype_name(x.dtype) + " is not supported (float types only)");
    if (x.has_shape) normalize_axis(axis_, std::max(1, x.rank()), node_);
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    Tensor& y = ctx.output(0);
    const int rank = x.rank();
    int64_t outer = 1, R = 1, inner = 1;
    if (rank == 0) {
      // A scalar is a single slice of one element.
    } else {
      int a = normalize_axis(axis_, rank, node_);
      for (int d = 0; d < a; ++d) outer *= x.dim(d);
      if (coerce_2d_) {
        for (int d = a; d < rank; ++d) R *= x.dim(d);
      } else {
        R = x.dim(a);
        for (int d = a + 1; d < rank; ++d) inner *= x.dim(d);
      }
    }
    if (x.numel() == 0) return;
    if (x.dtype() == DType::Float64) {
      cpu::ref::softmax<double>(KIND, x.data<double>(), y.data<double>(), outer, R, inner);
      return;
    }
    Tensor xf = cpu::red_as_f32(x);
    Tensor yf = cpu::red_out_f32(y);
    if (KIND == 2) cpu::ref::softmax<float>(KIND, xf.data<float>(), yf.data<float>(), outer, R, inner);
    else cpu::red_softmax_f32(KIND == 1, xf.data<float>(), yf.data<float>(), outer, R, inner);
    cpu::red_store_f32(yf, y);
  }

 private:
  Node node_;
  bool coerce_2d_;
  int64_t axis_;
};

}  // namespace

void register_softmax(Registry& r) {
  r.add("Softmax", 1, make_kernel<SoftmaxK<0>>());
  r.add("LogSoftmax", 1, make_kernel<SoftmaxK<1>>());
  r.add("Hardmax", 1, make_kernel<SoftmaxK<2>>());
}

}  // namespace kiln
