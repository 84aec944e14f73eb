// CenterCropPad (opset 18): crops or zero-pads each listed axis (default all) to the target length
// given in `shape`, centred: cropping starts at (len - target) / 2, padding puts (target - len) / 2
// elements before (integer division; the extra one goes after).
#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class CenterCropPadK : public Kernel {
 public:
  CenterCropPadK(const Node& n, int) : n_(n), axes_(n.attr_ints("axes")) {}
  std::vector<int> axes_for(int r) const {
    std::vector<int> ax;
    if (axes_.empty()) for (int d = 0; d < r; ++d) ax.push_back(d);
    else for (auto a : axes_) ax.push_back(normalize_axis(a, r, n_, "axes"));
    for (size_t i = 0; i < ax.size(); ++i)
      for (size_t j = i + 1; j < ax.size(); ++j)
        if (ax[i] == ax[j]) fail(n_.describe() + ": axes contains a duplicate");
    return ax;
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    const TensorType& s = ctx.input_type(1);
    if (s.dtype != DType::Int32 && s.dtype != DType::Int64) fail(n_.describe() + ": shape must be int32 or int64");
    if (!x.has_shape) { ctx.set_output(0, unknown_type(x.dtype)); return; }
    auto ax = axes_for(x.rank());
    TensorType y = x;
    const Tensor* sv = ctx.input_value(1);
    if (sv) {
      auto v = to_int64s(*sv);
      if (v.size() != ax.size()) fail(n_.describe() + ": shape has " + std::to_string(v.size()) + " values for " + std::to_string(ax.size()) + " axes");
      for (size_t i = 0; i < ax.size(); ++i) {
        if (v[i] < 0) fail(n_.describe() + ": negative target size " + std::to_string(v[i]));
        y.dims[ax[i]] = Dim::of(v[i]);
      }
    } else {
      for (int a : ax) y.dims[a] = Dim();
    }
    ctx.set_output(0, y);
  }
  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    Tensor& Y = ctx.output(0);
    const int r = X.rank();
    auto ax = axes_for(r);
    auto v = to_int64s(ctx.input(1));
    if (v.size() != ax.size()) fail(n_.describe() + ": shape has " + std::to_string(v.size()) + " values for " + std::to_string(ax.size()) + " axes");
    Shape ys = X.shape();
    // offset[d]: output index o reads input index o + offset[d] (negative offset = padding).
    std::vector<int64_t> off(r, 0);
    for (size_t i = 0; i < ax.size(); ++i) {
      const int d = ax[i];
      const int64_t len = X.dim(d), t = v[i];
      if (t < 0) fail(n_.describe() + ": negative target size " + std::to_string(t));
      ys[d] = t;
      off[d] = len >= t ? (len - t) / 2 : -((t - len) / 2);
    }
    if (Y.shape() != ys) fail(n_.describe() + ": output shape mismatch");
    if (Y.numel() == 0) return;
    auto xs = strides_of(X.shape());
    const size_t es = dtype_size(X.dtype());
    const uint8_t* src = static_cast<const uint8_t*>(X.raw());
    uint8_t* dst = static_cast<uint8_t*>(Y.raw());
    std::vector<int64_t> idx(r, 0);
    for (int64_t i = 0; i < Y.numel(); ++i) {
      int64_t so = 0;
      bool inside = true;
      for (int d = 0; d < r; ++d) {
        const int64_t s = idx[d] + off[d];
        if (s < 0 || s >= X.dim(d)) { inside = false; break; }
        so += s * xs[d];
      }
      if (inside) std::memcpy(dst + i * es, src + so * es, es);
      else std::memset(dst + i * es, 0, es);
      for (int d = r - 1; d >= 0; --d) {
        if (++idx[d] < ys[d]) break;
        idx[d] = 0;
      }
    }
  }

 private:
  Node n_;
  std::vector<int64_t> axes_;
};

}  // namespace

void register_ops2_misc(Registry& r) { r.add("CenterCropPad", 18, make_kernel<CenterCropPadK>()); }

}  // namespace kiln
