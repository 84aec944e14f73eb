// Arithmetic with numpy broadcasting: Add, Sub, Mul, Div, Pow, Mod, PRelu and the variadic
// Max, Min, Sum, Mean. float16/bfloat16 are computed in float32 and rounded back.
#include <cmath>
#include <limits>

#include "backends/cpu/ew_ops.h"
#include "ops/common.h"

namespace kiln {
namespace {

using namespace cpu::ew;

enum class Bin { Add, Sub, Mul, Div, Pow, Mod, PRelu, Max, Min, Sum, Mean };

// Integer arithmetic that wraps instead of overflowing (signed overflow is undefined in C++).
template <class T> inline T wadd(T a, T b) {
  if constexpr (std::is_integral_v<T>) { using U = std::make_unsigned_t<T>; return (T)(U)((U)a + (U)b); }
  else return a + b;
}
template <class T> inline T wsub(T a, T b) {
  if constexpr (std::is_integral_v<T>) { using U = std::make_unsigned_t<T>; return (T)(U)((U)a - (U)b); }
  else return a - b;
}
template <class T> inline T wmul(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<std::conditional_t<(sizeof(T) < sizeof(int)), unsigned, T>>;
    return (T)(U)((U)a * (U)b);
  } else {
    return a * b;
  }
}
// C division (truncation); x/0 gives 0 for integers (as numpy), MIN/-1 wraps.
template <class T> inline T cdiv(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    if (b == 0) return 0;
    if constexpr (std::is_signed_v<T>) if (b == -1) return wsub<T>(0, a);
    return (T)(a / b);
  } else {
    return a / b;
  }
}
// Integer remainder with the sign of the dividend (fmod=1) or of the divisor (fmod=0); x%0 gives 0.
template <class T> inline T imod(T a, T b, bool c_style) {
  if (b == 0) return 0;
  if constexpr (std::is_signed_v<T>) {
    if (b == -1) return 0;
    T r = (T)(a % b);
    if (!c_style && r != 0 && ((r < 0) != (b < 0))) r = (T)(r + b);
    return r;
  } else {
    return (T)(a % b);
  }
}
template <class T> inline T vmax(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) return (a != a || a > b) ? a : b;  // NaN propagates
  else return a > b ? a : b;
}
template <class T> inline T vmin(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) return (a != a || a < b) ? a : b;
  else return a < b ? a : b;
}

// Saturating float -> integer conversion for Pow results with integer base (NaN -> 0).
template <class T> inline T to_int_sat(double v) {
  if (!(v == v)) return 0;
  if (v <= (double)std::numeric_limits<T>::lowest()) return std::numeric_limits<T>::lowest();
  if (v >= (double)std::numeric_limits<T>::max()) return std::numeric_limits<T>::max();
  return (T)v;
}

// base^exp with the result in the base's type.
template <class T, class U> inline T power(T a, U b) {
  if constexpr (std::is_floating_point_v<T>) {
    if constexpr (std::is_same_v<T, U>) return std::pow(a, b);
    else return (T)std::pow((double)a, (double)b);
  } else if constexpr (std::is_integral_v<U>) {
    // Integer power by squaring (wrapping), exact where doubles would round.
    if constexpr (std::is_signed_v<U>) {
      if (b < 0) {
        if (a == 1) return 1;
        if constexpr (std::is_signed_v<T>) if (a == -1) return (b % 2) ? T(-1) : T(1);
        return 0;
      }
    }
    T r = 1, x = a;
    for (std::make_unsigned_t<U> e = (std::make_unsigned_t<U>)b; e; e >>= 1) {
      if (e & 1) r = wmul(r, x);
      x = wmul(x, x);
    }
    return r;
  } else {
    return to_int_sat<T>(std::pow((double)a, (double)b));
  }
}

class BinaryK : public Kernel {
 public:
  // Results depend on element positions alone: the planner may run this on channels-last data.
  LayoutRule layout_rule(const std::vector<const TensorType*>&, const std::vector<Layout>&) const override {
    return LayoutRule::Elementwise;
  }
  BinaryK(const Node& n, int opset, Bin op) : op_(op) {
    variadic_ = op == Bin::Max || op == Bin::Min || op == Bin::Sum || op == Bin::Mean;
    if (op == Bin::Mod) fmod_ = n.attr_int("fmod", 0);
    if (!variadic_ && n.num_inputs() != 2) fail(n.describe() + ": expected 2 inputs, got " + std::to_string(n.num_inputs()));
    if (variadic_ && n.num_inputs() < 1) fail(n.describe() + ": expected at least one input");
    for (int i = 0; i < n.num_inputs(); ++i)
      if (!n.has_input(i)) fail(n.describe() + ": input " + std::to_string(i) + " is required");
    if (opset < 7 && n.attr_int("broadcast", 0) != 0 && n.has_attr("axis"))
      unsupported(n.describe() + ": legacy (opset < 7) broadcasting with an axis attribute is not supported");
  }

  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    std::vector<const TensorType*> ins;
    for (int i = 0; i < ctx.num_inputs(); ++i) ins.push_back(&ctx.input_type(i));
    DType dt = ins[0]->dtype;
    if (op_ != Bin::Pow) {
      for (auto* t : ins)
        if (t->dtype != dt)
          fail(n.describe() + ": inputs must have the same type, got " + dtype_name(dt) + " and " + dtype_name(t->dtype));
    }
    check_dtype(dt, n);
    if (op_ == Bin::Pow) check_pow_exp(ins[1]->dtype, n);
    if (op_ == Bin::Mod && is_float(dt) && fmod_ != 1)
      fail(n.describe() + ": Mod of floating-point inputs requires fmod=1");
    TensorType out = broadcast_types(n, ins, dt);
    if (op_ == Bin::PRelu && out.has_shape && ins[0]->has_shape) {
      // slope broadcasts unidirectionally to X: the result must have X's shape.
      bool ok = out.rank() == ins[0]->rank();
      for (int i = 0; ok && i < out.rank(); ++i) {
        const Dim& x = ins[0]->dims[i];
        if (x.known() && out.dims[i].known() && x.value != out.dims[i].value) ok = false;
      }
      if (!ok) fail(n.describe() + ": slope " + ins[1]->str() + " does not broadcast to X " + ins[0]->str());
      out.dims = ins[0]->dims;
    }
    ctx.set_output(0, out);
  }

  void run(RunContext& ctx) override {
    Tensor& y = ctx.output(0);
    std::vector<Tensor> ins;
    for (int i = 0; i < ctx.num_inputs(); ++i) ins.push_back(to_f32(ctx.input(i)));
    if (is_half(y.dtype())) {
      Tensor tmp(DType::Float32, y.shape());
      compute(ins, tmp);
      from_f32(tmp, y);
    } else {
      compute(ins, y);
    }
  }

 private:
  void check_dtype(DType dt, const Node& n) const {
    bool ok = dt == DType::Float32 || dt == DType::Float64 || dt == DType::Float16 || dt == DType::BFloat16 ||
              dt == DType::Int8 || dt == DType::Int16 || dt == DType::Int32 || dt == DType::Int64 || dt == DType::UInt8 ||
              dt == DType::UInt16 || dt == DType::UInt32 || dt == DType::UInt64;
    if (!ok) unsupported(n.describe() + ": input type " + dtype_name(dt) + " is not supported (numeric types only)");
  }
  void check_pow_exp(DType dt, const Node& n) const { check_dtype(dt, n); }

  void compute(const std::vector<Tensor>& ins, Tensor& y) {
    DType dt = ins[0].dtype();
    if (op_ == Bin::Pow) {
      visit_numeric(dt, [&](auto ta) {
        using T = decltype(ta);
        visit_numeric(ins[1].dtype(), [&](auto tb) {
          using U = decltype(tb);
          pow_typed<T, U>(ins[0], ins[1], y);
        });
      });
      return;
    }
    visit_numeric(dt, [&](auto tag) {
      using T = decltype(tag);
      if (!variadic_) {
        binary_typed<T>(ins[0], ins[1], y);
        return;
      }
      T* o = y.data<T>();
      if (ins.size() == 1) {
        binary_broadcast(ins[0].data<T>(), ins[0].shape(), ins[0].data<T>(), ins[0].shape(), o, y.shape(),
                         [](T a, T) { return a; });
      } else {
        binary_typed<T>(ins[0], ins[1], y);
        for (size_t i = 2; i < ins.size(); ++i) variadic_step<T>(y, ins[i]);
      }
      if (op_ == Bin::Mean) {
        T k = (T)ins.size();
        unary_map(o, o, y.numel(), [k](T v) { return (T)(v / k); });
      }
    });
  }

  template <class T, class Op>
  void bc(const Tensor& a, const Tensor& b, Tensor& y, Op op) {
    binary_broadcast(a.data<T>(), a.shape(), b.data<T>(), b.shape(), y.data<T>(), y.shape(), op);
  }

  template <class T>
  void binary_typed(const Tensor& a, const Tensor& b, Tensor& y) {
    switch (op_) {
      case Bin::Add: case Bin::Sum: case Bin::Mean: bc<T>(a, b, y, [](T u, T v) { return wadd(u, v); }); break;
      case Bin::Sub: bc<T>(a, b, y, [](T u, T v) { return wsub(u, v); }); break;
      case Bin::Mul: bc<T>(a, b, y, [](T u, T v) { return wmul(u, v); }); break;
      case Bin::Div: bc<T>(a, b, y, [](T u, T v) { return cdiv(u, v); }); break;
      case Bin::Max: bc<T>(a, b, y, [](T u, T v) { return vmax(u, v); }); break;
      case Bin::Min: bc<T>(a, b, y, [](T u, T v) { return vmin(u, v); }); break;
      case Bin::PRelu:
        if constexpr (std::is_floating_point_v<T>)  // max(x,0) + s min(x,0): vectorisable shape
          bc<T>(a, b, y, [](T x, T s) { T p = T(0) > x ? T(0) : x, q = T(0) < x ? T(0) : x; return p + s * q; });
        else
          bc<T>(a, b, y, [](T x, T s) { return x < T(0) ? wmul(s, x) : x; });
        break;
      case Bin::Mod:
        if constexpr (std::is_floating_point_v<T>) {
          bc<T>(a, b, y, [](T u, T v) { return (T)std::fmod(u, v); });
        } else {
          if (fmod_) bc<T>(a, b, y, [](T u, T v) { return imod(u, v, true); });
          else bc<T>(a, b, y, [](T u, T v) { return imod(u, v, false); });
        }
        break;
      case Bin::Pow: break;  // handled in compute
    }
  }

  // y = op(y, x) in place, x broadcast to y.
  template <class T>
  void variadic_step(Tensor& y, const Tensor& x) {
    T* o = y.data<T>();
    switch (op_) {
      case Bin::Sum: case Bin::Mean:
        binary_broadcast(o, y.shape(), x.data<T>(), x.shape(), o, y.shape(), [](T u, T v) { return wadd(u, v); });
        break;
      case Bin::Max:
        binary_broadcast(o, y.shape(), x.data<T>(), x.shape(), o, y.shape(), [](T u, T v) { return vmax(u, v); });
        break;
      case Bin::Min:
        binary_broadcast(o, y.shape(), x.data<T>(), x.shape(), o, y.shape(), [](T u, T v) { return vmin(u, v); });
        break;
      default: break;
    }
  }

  template <class T, class U>
  void pow_typed(const Tensor& a, const Tensor& b, Tensor& y) {
    if constexpr (std::is_same_v<T, float> && std::is_same_v<U, float>) {
      // x^2 (LayerNorm/RMSNorm decompositions): exact, so the same as powf.
      if (b.numel() == 1 && b.data<float>()[0] == 2.f && a.shape() == y.shape()) {
        unary_map(a.data<float>(), y.data<float>(), y.numel(), [](float v) { return v * v; });
        return;
      }
    }
    binary_broadcast(a.data<T>(), a.shape(), b.data<U>(), b.shape(), y.data<T>(), y.shape(),
                     [](T u, U v) { return power<T, U>(u, v); });
  }

  Bin op_;
  bool variadic_ = false;
  int64_t fmod_ = 0;
};

template <Bin OP>
KernelFactory bin() {
  return [](const Node& n, int opset) -> std::unique_ptr<Kernel> { return std::make_unique<BinaryK>(n, opset, OP); };
}

}  // namespace

void register_elementwise_binary(Registry& r) {
  r.add("Add", 1, bin<Bin::Add>());
  r.add("Sub", 1, bin<Bin::Sub>());
  r.add("Mul", 1, bin<Bin::Mul>());
  r.add("Div", 1, bin<Bin::Div>());
  r.add("Pow", 1, bin<Bin::Pow>());
  r.add("Mod", 10, bin<Bin::Mod>());
  r.add("PRelu", 7, bin<Bin::PRelu>());
  r.add("Max", 1, bin<Bin::Max>());
  r.add("Min", 1, bin<Bin::Min>());
  r.add("Sum", 1, bin<Bin::Sum>());
  r.add("Mean", 1, bin<Bin::Mean>());
}

}  // namespace kiln
