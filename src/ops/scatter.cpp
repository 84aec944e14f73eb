// ScatterND and ScatterElements (with reduction), and the deprecated Scatter (opset 9-10).
#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

enum class Red { None, Add, Mul, Max, Min };

Red parse_reduction(const Node& n, int opset, int max_since) {
  std::string s = n.attr_string("reduction", "none");
  if (s == "none") return Red::None;
  if (s == "add") return Red::Add;
  if (s == "mul") return Red::Mul;
  if ((s == "max" || s == "min") && opset >= max_since) return s == "max" ? Red::Max : Red::Min;
  fail(n.describe() + ": unsupported reduction '" + s + "' at opset " + std::to_string(opset));
}

template <class T>
inline void apply(T& d, T u, Red r) {
  switch (r) {
    case Red::None: d = u; break;
    case Red::Add: d = (T)(d + u); break;
    case Red::Mul: d = (T)(d * u); break;
    case Red::Max: d = std::max(d, u); break;
    case Red::Min: d = std::min(d, u); break;
  }
}

// Runs f(T{}) with the element type: bytes for plain assignment, numeric types for reductions.
template <class F>
void visit_for(DType t, Red r, const Node& n, F&& f) {
  if (r == Red::None) { visit_bytes(t, f); return; }
  if (t == DType::Bool) {
    if (r == Red::Add || r == Red::Max) { f(bool{}); return; }  // logical or
    if (r == Red::Mul || r == Red::Min) { f(bool{}); return; }  // logical and
  }
  if (!is_float(t) || t == DType::Float32 || t == DType::Float64) { visit_numeric(t, f); return; }
  unsupported(n.describe() + ": reduction on " + dtype_name(t) + " is not supported");
}

template <>
inline void apply<bool>(bool& d, bool u, Red r) {
  if (r == Red::None) d = u;
  else if (r == Red::Add || r == Red::Max) d = d || u;
  else d = d && u;
}

class ScatterNDK : public Kernel {
 public:
  ScatterNDK(const Node& n, int opset) : red_(opset >= 16 ? parse_reduction(n, opset, 18) : Red::None) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (ctx.input_type(1).dtype != DType::Int64) fail(n.describe() + ": indices must be int64");
    if (ctx.input_type(2).dtype != x.dtype) fail(n.describe() + ": updates must have the type of data");
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    const Tensor& it = ctx.input(1);
    const Tensor& up = ctx.input(2);
    Tensor& y = ctx.output(0);
    const int r = x.rank(), q = it.rank();
    if (q < 1) fail(n.describe() + ": indices must have rank >= 1");
    const int64_t k = it.shape()[q - 1];
    if (k < 1 || k > r) fail(n.describe() + ": last indices dimension " + std::to_string(k) + " must be in [1, " + std::to_string(r) + "]");
    Shape ushape(it.shape().begin(), it.shape().end() - 1);
    for (int d = (int)k; d < r; ++d) ushape.push_back(x.shape()[d]);
    if (up.shape() != ushape)
      fail(n.describe() + ": updates shape " + shape_str(up.shape()) + " should be " + shape_str(ushape));
    int64_t inner = 1;
    for (int d = (int)k; d < r; ++d) inner *= x.shape()[d];
    std::vector<int64_t> st(k);
    {
      int64_t acc = inner;
      for (int64_t j = k - 1; j >= 0; --j) { st[j] = acc; acc *= x.shape()[j]; }
    }
    const int64_t tuples = it.numel() / k;
    const int64_t* ip = it.data<int64_t>();
    std::vector<int64_t> offs(tuples);
    for (int64_t t = 0; t < tuples; ++t) {
      int64_t off = 0;
      for (int64_t j = 0; j < k; ++j) {
        int64_t v = ip[t * k + j], lim = x.shape()[j];
        if (v < -lim || v >= lim)
          fail(n.describe() + ": index " + std::to_string(v) + " is out of range for axis " + std::to_string(j) + " of size " + std::to_string(lim));
        off += (v < 0 ? v + lim : v) * st[j];
      }
      offs[t] = off;
    }
    if (x.nbytes()) std::memcpy(y.raw(), x.raw(), x.nbytes());
    visit_for(x.dtype(), red_, n, [&](auto tag) {
      using T = decltype(tag);
      T* dst = (T*)y.raw();
      const T* u = (const T*)up.raw();
      for (int64_t t = 0; t < tuples; ++t)
        for (int64_t i = 0; i < inner; ++i) apply(dst[offs[t] + i], u[t * inner + i], red_);
    });
  }

 private:
  Red red_;
};

class ScatterElementsK : public Kernel {
 public:
  ScatterElementsK(const Node& n, int opset, bool legacy)
      : axis_(n.attr_int("axis", 0)), red_(!legacy && opset >= 16 ? parse_reduction(n, opset, 18) : Red::None) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    DType it = ctx.input_type(1).dtype;
    if (it != DType::Int64 && it != DType::Int32) fail(n.describe() + ": indices must be int32 or int64");
    if (ctx.input_type(2).dtype != x.dtype) fail(n.describe() + ": updates must have the type of data");
    if (x.has_shape) normalize_axis(axis_, x.rank(), n);
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    const Tensor& it = ctx.input(1);
    const Tensor& up = ctx.input(2);
    Tensor& y = ctx.output(0);
    const int r = x.rank();
    const int ax = normalize_axis(axis_, r, n);
    if (it.rank() != r || up.shape() != it.shape())
      fail(n.describe() + ": indices " + shape_str(it.shape()) + " and updates " + shape_str(up.shape()) +
           " must have the same shape and the rank of data " + shape_str(x.shape()));
    for (int d = 0; d < r; ++d)
      if (d != ax && it.shape()[d] > x.shape()[d])
        fail(n.describe() + ": indices " + shape_str(it.shape()) + " exceed data " + shape_str(x.shape()) + " on axis " + std::to_string(d));
    auto idx = to_int64s(it);
    const int64_t lim = x.shape()[ax];
    for (auto& v : idx) {
      if (v < -lim || v >= lim)
        fail(n.describe() + ": index " + std::to_string(v) + " is out of range for axis " + std::to_string(ax) + " of size " + std::to_string(lim));
      if (v < 0) v += lim;
    }
    if (x.nbytes()) std::memcpy(y.raw(), x.raw(), x.nbytes());
    auto xs = strides_of(x.shape());
    const int64_t total = it.numel();
    visit_for(x.dtype(), red_, n, [&](auto tag) {
      using T = decltype(tag);
      T* dst = (T*)y.raw();
      const T* u = (const T*)up.raw();
      std::vector<int64_t> pos(r, 0);
      int64_t base = 0;
      for (int64_t i = 0; i < total; ++i) {
        apply(dst[base + idx[i] * xs[ax]], u[i], red_);
        for (int d = r - 1; d >= 0; --d) {
          if (d != ax) base += xs[d];
          if (++pos[d] < it.shape()[d]) break;
          if (d != ax) base -= xs[d] * it.shape()[d];
          pos[d] = 0;
        }
      }
    });
  }

 private:
  int64_t axis_;
  Red red_;
};

}  // namespace

void register_scatter(Registry& r) {
  r.add("ScatterND", 11, make_kernel<ScatterNDK>());
  r.add("ScatterElements", 11, [](const Node& n, int opset) -> std::unique_ptr<Kernel> {
    return std::make_unique<ScatterElementsK>(n, opset, false);
  });
  r.add("Scatter", 9, [](const Node& n, int opset) -> std::unique_ptr<Kernel> {
    return std::make_unique<ScatterElementsK>(n, opset, true);
  });
}

}  // namespace kiln
