// Transpose: blocked strided copy (see backends/cpu/data_util.cpp).
#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class TransposeK : public Kernel {
 public:
  TransposeK(const Node& n, int) {
    if (n.has_attr("perm")) perm_attr_ = n.attr_ints("perm");
    has_perm_ = n.has_attr("perm");
  }
  std::vector<int> perm_for(const Node& n, int r) const {
    std::vector<int> p(r);
    if (!has_perm_) {
      for (int i = 0; i < r; ++i) p[i] = r - 1 - i;
      return p;
    }
    if ((int)perm_attr_.size() != r)
      fail(n.describe() + ": perm has " + std::to_string(perm_attr_.size()) + " entries for an input of rank " + std::to_string(r));
    std::vector<bool> seen(r, false);
    for (int i = 0; i < r; ++i) {
      int a = normalize_axis(perm_attr_[i], r, n, "perm entry");
      if (seen[a]) fail(n.describe() + ": perm is not a permutation (axis " + std::to_string(a) + " repeats)");
      seen[a] = true;
      p[i] = a;
    }
    return p;
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!x.has_shape) {
      if (has_perm_) ctx.set_output(0, data::make_type(x.dtype, data::unknown_dims((int)perm_attr_.size())));
      else ctx.set_output(0, unknown_type(x.dtype));
      return;
    }
    auto p = perm_for(ctx.node(), x.rank());
    std::vector<Dim> out;
    for (int a : p) out.push_back(x.dims[a]);
    ctx.set_output(0, data::make_type(x.dtype, out));
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    Tensor& y = ctx.output(0);
    if (!dtype_size(x.dtype())) unsupported(ctx.node().describe() + ": unsupported type");
    data::transpose(y.raw(), x.raw(), x.shape(), perm_for(ctx.node(), x.rank()), dtype_size(x.dtype()));
  }

 private:
  std::vector<int64_t> perm_attr_;
  bool has_perm_ = false;
};

}  // namespace

void register_transpose(Registry& r) { r.add("Transpose", 1, make_kernel<TransposeK>()); }

}  // namespace kiln
