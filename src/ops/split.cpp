// Split: the inverse of Concat; each output is filled with runs of contiguous bytes.
#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class SplitK : public Kernel {
 public:
  SplitK(const Node& n, int opset) : opset_(opset), axis_(n.attr_int("axis", 0)) {
    if (n.has_attr("split")) split_attr_ = n.attr_ints("split");
    if (opset >= 18 && n.has_attr("num_outputs")) {
      num_outputs_ = n.attr_int("num_outputs", 0);
      if (num_outputs_ < 1) fail(n.describe() + ": num_outputs must be positive");
      if (num_outputs_ != (int64_t)n.outputs.size())
        fail(n.describe() + ": num_outputs is " + std::to_string(num_outputs_) + " but the node has " +
             std::to_string(n.outputs.size()) + " outputs");
    }
  }
  // Sizes along the axis; nullopt when they depend on an unknown value or dim.
  std::optional<std::vector<int64_t>> sizes(const Node& n, const InferContext* ictx, const Tensor* split_val, const Dim& dim) const {
    const int nout = (int)n.outputs.size();
    std::optional<std::vector<int64_t>> s;
    if (split_attr_) s = split_attr_;
    else if ((opset_ >= 13 || opset_ < 2) && n.has_input(1)) {
      if (!split_val) return std::nullopt;
      s = to_int64s(*split_val);
    }
    if (s) {
      if ((int)s->size() != nout)
        fail(n.describe() + ": split has " + std::to_string(s->size()) + " entries for " + std::to_string(nout) + " outputs");
      int64_t sum = 0;
      for (int64_t v : *s) {
        if (v < 0) fail(n.describe() + ": negative split size " + std::to_string(v));
        sum += v;
      }
      if (dim.known() && sum != dim.value)
        fail(n.describe() + ": split sizes add up to " + std::to_string(sum) + " but the axis has size " + std::to_string(dim.value));
      return s;
    }
    if (!dim.known()) return std::nullopt;
    std::vector<int64_t> r(nout);
    if (num_outputs_ > 0) {
      int64_t chunk = (dim.value + nout - 1) / nout;
      int64_t left = dim.value;
      for (int i = 0; i < nout; ++i) { r[i] = std::min(chunk, left); left -= r[i]; }
      return r;
    }
    if (dim.value % nout != 0)
      fail(n.describe() + ": axis of size " + std::to_string(dim.value) + " cannot be split evenly into " + std::to_string(nout) + " outputs");
    for (auto& v : r) v = dim.value / nout;
    return r;
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (!x.has_shape) {
      for (int i = 0; i < ctx.num_outputs(); ++i) ctx.set_output(i, unknown_type(x.dtype));
      return;
    }
    const int ax = normalize_axis(axis_, x.rank(), n);
    auto s = sizes(n, &ctx, ctx.input_value(1), x.dims[ax]);
    for (int i = 0; i < ctx.num_outputs(); ++i) {
      std::vector<Dim> d = x.dims;
      d[ax] = s ? Dim::of((*s)[i]) : Dim();
      ctx.set_output(i, data::make_type(x.dtype, d));
    }
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    const int ax = normalize_axis(axis_, x.rank(), n);
    auto s = sizes(n, nullptr, ctx.has_input(1) ? &ctx.input(1) : nullptr, Dim::of(x.shape()[ax]));
    if (!s) fail(n.describe() + ": could not determine split sizes");
    const size_t es = dtype_size(x.dtype());
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; ++d) outer *= x.shape()[d];
    for (int d = ax + 1; d < x.rank(); ++d) inner *= x.shape()[d];
    const int64_t in_row = x.shape()[ax] * inner * (int64_t)es;
    int64_t off = 0;
    for (int i = 0; i < ctx.num_outputs(); ++i) {
      const int64_t b = (*s)[i] * inner * (int64_t)es;
      if (ctx.has_output(i) && b) {
        Tensor& y = ctx.output(i);
        uint8_t* dst = (uint8_t*)y.raw();
        const uint8_t* src = (const uint8_t*)x.raw() + off;
#pragma omp parallel for schedule(static) if (outer * b > (1 << 18) && outer > 1)
        for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * b, src + o * in_row, (size_t)b);
      }
      off += b;
    }
  }

 private:
  int opset_;
  int64_t axis_;
  std::optional<std::vector<int64_t>> split_attr_;
  int64_t num_outputs_ = 0;
};

}  // namespace

void register_split(Registry& r) { r.add("Split", 1, make_kernel<SplitK>()); }

}  // namespace kiln
