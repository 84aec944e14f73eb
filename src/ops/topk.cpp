// TopK: k largest (or smallest) along an axis; ties go to the lower index. k is an attribute before
// opset 10 and an input after; largest/sorted from 11.
#include <algorithm>
#include <numeric>

#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class TopKK : public Kernel {
 public:
  TopKK(const Node& n, int opset) : opset_(opset), axis_(n.attr_int("axis", -1)) {
    if (opset < 10) k_attr_ = n.required_int("k");
    if (opset >= 11) {
      largest_ = n.attr_int("largest", 1) != 0;
      sorted_ = n.attr_int("sorted", 1) != 0;
    }
  }
  std::optional<int64_t> k_of(const Node& n, const Tensor* kv) const {
    if (opset_ < 10) return k_attr_;
    if (!kv) return std::nullopt;
    auto v = to_int64s(*kv);
    if (v.size() != 1) fail(n.describe() + ": K must hold exactly one value");
    if (v[0] < 0) fail(n.describe() + ": K must be non-negative, got " + std::to_string(v[0]));
    return v[0];
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (!x.has_shape) {
      ctx.set_output(0, unknown_type(x.dtype));
      if (ctx.num_outputs() > 1) ctx.set_output(1, unknown_type(DType::Int64));
      return;
    }
    const int ax = normalize_axis(axis_, x.rank(), n);
    auto k = k_of(n, opset_ >= 10 ? ctx.input_value(1) : nullptr);
    std::vector<Dim> out = x.dims;
    if (k) {
      if (x.dims[ax].known() && *k > x.dims[ax].value)
        fail(n.describe() + ": K=" + std::to_string(*k) + " exceeds axis size " + std::to_string(x.dims[ax].value) + " of " + x.str());
      out[ax] = Dim::of(*k);
    } else {
      out[ax] = Dim();
    }
    ctx.set_output(0, data::make_type(x.dtype, out));
    if (ctx.num_outputs() > 1) ctx.set_output(1, data::make_type(DType::Int64, out));
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    const int ax = normalize_axis(axis_, x.rank(), n);
    auto kk = k_of(n, opset_ >= 10 ? &ctx.input(1) : nullptr);
    const int64_t k = *kk, len = x.shape()[ax];
    if (k > len) fail(n.describe() + ": K=" + std::to_string(k) + " exceeds axis size " + std::to_string(len));
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; ++d) outer *= x.shape()[d];
    for (int d = ax + 1; d < x.rank(); ++d) inner *= x.shape()[d];
    Tensor* yv = ctx.has_output(0) ? &ctx.output(0) : nullptr;
    Tensor* yi = ctx.has_output(1) ? &ctx.output(1) : nullptr;
    if (k == 0) return;
    auto body = [&](auto tag, auto load, auto store) {
      using T = decltype(tag);
      (void)sizeof(T);
#pragma omp parallel if (x.numel() > (1 << 16) && outer * inner > 1)
      {
        std::vector<int64_t> idx(len);
        std::vector<decltype(load(0))> vals(len);
#pragma omp for schedule(static)
        for (int64_t w = 0; w < outer * inner; ++w) {
          const int64_t o = w / inner, i = w - o * inner;
          const int64_t base = o * len * inner + i;
          for (int64_t j = 0; j < len; ++j) vals[j] = load(base + j * inner);
          std::iota(idx.begin(), idx.end(), 0);
          auto cmp = [&](int64_t a, int64_t b) {
            auto va = vals[a], vb = vals[b];
            if (va != vb) return largest_ ? va > vb : va < vb;
            return a < b;
          };
          std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), cmp);
          const int64_t obase = o * k * inner + i;
          for (int64_t j = 0; j < k; ++j) {
            if (yv) store(obase + j * inner, vals[idx[j]]);
            if (yi) yi->data<int64_t>()[obase + j * inner] = idx[j];
          }
        }
      }
    };
    const DType dt = x.dtype();
    if (dt == DType::Float16 || dt == DType::BFloat16) {
      const uint16_t* s = x.data<uint16_t>();
      uint16_t* d = yv ? yv->data<uint16_t>() : nullptr;
      const bool h = dt == DType::Float16;
      body(float{}, [&](int64_t at) { return h ? half_to_float(s[at]) : bfloat16_to_float(s[at]); },
           [&](int64_t at, float) { d[at] = s[0]; });
      // Values of 16-bit floats are copied exactly from the source using the indices below.
      if (yv && yi)
        for (int64_t w = 0; w < yv->numel(); ++w) {
          const int64_t i = w % inner, o = w / (k * inner);
          d[w] = s[o * len * inner + yi->data<int64_t>()[w] * inner + i];
        }
      else if (yv) unsupported(n.describe() + ": 16-bit float TopK needs the indices output");
      return;
    }
    visit_numeric(dt, [&](auto tag) {
      using T = decltype(tag);
      const T* s = x.data<T>();
      T* d = yv ? yv->data<T>() : nullptr;
      body(tag, [&](int64_t at) { return s[at]; }, [&](int64_t at, T v) { d[at] = v; });
    });
  }

 private:
  int opset_;
  int64_t axis_;
  int64_t k_attr_ = 0;
  bool largest_ = true, sorted_ = true;
};

}  // namespace

void register_topk(Registry& r) { r.add("TopK", 1, make_kernel<TopKK>()); }

}  // namespace kiln
