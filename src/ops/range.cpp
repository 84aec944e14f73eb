// Range: start, limit, delta scalars -> max(ceil((limit - start) / delta), 0) elements.
#include <cmath>

#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class RangeK : public Kernel {
 public:
  RangeK(const Node&, int) {}
  static int64_t count(const Node& n, const Tensor& s, const Tensor& l, const Tensor& d) {
    if (s.numel() != 1 || l.numel() != 1 || d.numel() != 1) fail(n.describe() + ": start, limit and delta must be scalars");
    if (!is_float(s.dtype())) {
      auto a = to_int64s_any(s), b = to_int64s_any(l), c = to_int64s_any(d);
      if (c == 0) fail(n.describe() + ": delta cannot be 0");
      int64_t diff = b - a;
      if (c > 0) return diff > 0 ? (diff + c - 1) / c : 0;
      return diff < 0 ? (-diff + (-c) - 1) / (-c) : 0;
    }
    double a = to_doubles(s)[0], b = to_doubles(l)[0], c = to_doubles(d)[0];
    if (c == 0) fail(n.describe() + ": delta cannot be 0");
    double v = std::ceil((b - a) / c);
    if (!(v > 0)) return 0;
    if (v > 1e12) fail(n.describe() + ": range of " + std::to_string(v) + " elements is too large");
    return (int64_t)v;
  }
  static int64_t to_int64s_any(const Tensor& t) {
    int64_t v = 0;
    visit_numeric(t.dtype(), [&](auto tag) { v = (int64_t)t.data<decltype(tag)>()[0]; });
    return v;
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    DType dt = ctx.input_type(0).dtype;
    for (int i = 1; i < 3; ++i)
      if (ctx.input_type(i).dtype != dt) fail(n.describe() + ": start, limit and delta must have the same type");
    const Tensor *s = ctx.input_value(0), *l = ctx.input_value(1), *d = ctx.input_value(2);
    if (s && l && d) ctx.set_output(0, DType(dt), {count(n, *s, *l, *d)});
    else ctx.set_output(0, data::make_type(dt, {Dim()}));
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor &s = ctx.input(0), &l = ctx.input(1), &d = ctx.input(2);
    const int64_t cnt = count(n, s, l, d);
    Tensor& y = ctx.output(0);
    if (y.numel() != cnt) fail(n.describe() + ": output has the wrong size");
    const DType dt = s.dtype();
    if (dt == DType::Float16 || dt == DType::BFloat16) {
      float a = (float)to_doubles(s)[0], c = (float)to_doubles(d)[0];
      uint16_t* o = y.data<uint16_t>();
      for (int64_t i = 0; i < cnt; ++i) {
        float v = a + (float)i * c;
        o[i] = dt == DType::Float16 ? float_to_half(v) : float_to_bfloat16(v);
      }
      return;
    }
    visit_numeric(dt, [&](auto tag) {
      using T = decltype(tag);
      const T a = s.data<T>()[0], c = d.data<T>()[0];
      T* o = y.data<T>();
      for (int64_t i = 0; i < cnt; ++i) o[i] = (T)(a + (T)i * c);
    });
  }
};

}  // namespace

void register_range(Registry& r) { r.add("Range", 11, make_kernel<RangeK>()); }

}  // namespace kiln
