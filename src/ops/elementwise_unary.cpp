// Unary elementwise ops: math functions, activations, Clip, IsNaN/IsInf.
// float32 has vectorised kernels for the hot ones (Exp, Tanh, Sigmoid, Erf, Gelu, Sqrt); other
// float types use std:: per element; float16/bfloat16 are computed in float32 and rounded back.
#include <cmath>
#include <limits>

#include "backends/cpu/ew_math.h"
#include "backends/cpu/ew_ops.h"
#include "ops/common.h"

namespace kiln {
namespace {

using namespace cpu::ew;

enum class Un {
  Abs, Neg, Sqrt, Exp, Log, Erf, Reciprocal, Floor, Ceil, Round, Sign, Sin, Cos, Tan, Asin, Acos, Atan, Sinh,
  Cosh, Asinh, Acosh, Atanh, IsNaN, IsInf, Relu, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Clip, Gelu,
  Elu, Selu, Celu, Softplus, Softsign, ThresholdedRelu, Shrink, Mish
};

// Ops also defined for integer inputs.
bool allows_int(Un op) {
  return op == Un::Abs || op == Un::Neg || op == Un::Sign || op == Un::Relu || op == Un::Clip || op == Un::Shrink;
}

template <class T> inline T softplus(T x) {
  // log(1 + e^x) without overflow: x + log1p(e^-x) for x > 0.
  return x > T(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

class UnaryK : public Kernel {
 public:
  // Results depend on element positions alone: the planner may run this on channels-last data.
  LayoutRule layout_rule(const std::vector<const TensorType*>&, const std::vector<Layout>&) const override {
    return LayoutRule::Elementwise;
  }
  UnaryK(const Node& n, int opset, Un op) : op_(op), opset_(opset) {
    if (n.num_inputs() < 1 || !n.has_input(0)) fail(n.describe() + ": input 0 is required");
    switch (op) {
      case Un::LeakyRelu: alpha_ = n.attr_float("alpha", 0.01f); break;
      case Un::HardSigmoid: alpha_ = n.attr_float("alpha", 0.2f); beta_ = n.attr_float("beta", 0.5f); break;
      case Un::Elu: case Un::Celu: case Un::ThresholdedRelu: alpha_ = n.attr_float("alpha", 1.0f); break;
      case Un::Selu:
        alpha_ = n.attr_float("alpha", 1.67326319217681884765625f);
        gamma_ = n.attr_float("gamma", 1.05070102214813232421875f);
        break;
      case Un::Shrink: alpha_ = n.attr_float("lambd", 0.5f); beta_ = n.attr_float("bias", 0.0f); break;
      case Un::IsInf: det_pos_ = n.attr_int("detect_positive", 1) != 0; det_neg_ = n.attr_int("detect_negative", 1) != 0; break;
      case Un::Gelu: {
        std::string a = n.attr_string("approximate", "none");
        if (a == "tanh") tanh_approx_ = true;
        else if (a != "none") fail(n.describe() + ": approximate must be 'none' or 'tanh', got '" + a + "'");
        break;
      }
      default: break;
    }
    if (op == Un::Celu && alpha_ == 0.f) fail(n.describe() + ": Celu alpha must be non-zero");
    if (op == Un::Clip && opset < 11) {
      clip_attr_min_ = n.attr_float("min", -std::numeric_limits<float>::infinity());
      clip_attr_max_ = n.attr_float("max", std::numeric_limits<float>::infinity());
    }
  }

  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    DType dt = x.dtype;
    bool fl = is_float(dt);
    bool in = dt == DType::Int8 || dt == DType::Int16 || dt == DType::Int32 || dt == DType::Int64 || dt == DType::UInt8 ||
              dt == DType::UInt16 || dt == DType::UInt32 || dt == DType::UInt64;
    if (!fl && !(in && allows_int(op_)))
      unsupported(n.describe() + ": input type " + dtype_name(dt) + " is not supported" +
                  (allows_int(op_) ? " (numeric types only)" : " (floating-point types only)"));
    if (op_ == Un::Clip) {
      for (int i = 1; i < 3; ++i) {
        if (!ctx.has_input(i)) continue;
        const TensorType& b = ctx.input_type(i);
        if (b.dtype != dt) fail(n.describe() + ": min/max must have the input's type " + dtype_name(dt) + ", got " + dtype_name(b.dtype));
        if (b.has_shape) {
          int64_t ne = 1;
          bool known = true;
          for (auto& d : b.dims) { if (d.known()) ne *= d.value; else known = false; }
          if (known && ne != 1) fail(n.describe() + ": min/max must be scalars, got " + b.str());
        }
      }
    }
    TensorType y = x;
    if (op_ == Un::IsNaN || op_ == Un::IsInf) y.dtype = DType::Bool;
    ctx.set_output(0, y);
  }

  void run(RunContext& ctx) override {
    const Tensor& x0 = ctx.input(0);
    Tensor& y = ctx.output(0);
    Tensor x = to_f32(x0);
    if (is_half(x0.dtype()) && y.dtype() != DType::Bool) {
      Tensor tmp(DType::Float32, y.shape());
      compute(ctx, x, tmp);
      from_f32(tmp, y);
    } else {
      compute(ctx, x, y);
    }
  }

 private:
  // Clip bound from an optional input (opset >= 11) or attribute; as T.
  template <class T>
  T clip_bound(RunContext& ctx, int i, bool is_min) const {
    if (opset_ < 11) {
      float v = is_min ? clip_attr_min_ : clip_attr_max_;
      if constexpr (std::is_floating_point_v<T>) return (T)v;
      else return is_min ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
    }
    if (!ctx.has_input(i)) {
      if constexpr (std::is_floating_point_v<T>) return is_min ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
      else return is_min ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
    }
    Tensor b = to_f32(ctx.input(i));
    if (b.numel() != 1) fail(ctx.node().describe() + ": min/max must be scalars, got shape " + shape_str(b.shape()));
    return b.data<T>()[0];
  }

  template <class F>
  void fast(const Tensor& x, Tensor& y, F f) {
    const float* xp = x.data<float>();
    float* yp = y.data<float>();
    parallel_chunks(x.numel(), [&](int64_t b, int64_t e) { f(xp + b, yp + b, e - b); });
  }

  void compute(RunContext& ctx, const Tensor& x, Tensor& y) {
    int64_t n = x.numel();
    if (x.dtype() == DType::Float32) {
      switch (op_) {
        case Un::Exp: fast(x, y, exp_f32); return;
        case Un::Tanh: fast(x, y, tanh_f32); return;
        case Un::Sigmoid: fast(x, y, sigmoid_f32); return;
        case Un::Erf: fast(x, y, erf_f32); return;
        case Un::Sqrt: fast(x, y, sqrt_f32); return;
        case Un::Gelu: fast(x, y, tanh_approx_ ? gelu_tanh_f32 : gelu_erf_f32); return;
        default: break;
      }
    }
    if (op_ == Un::IsNaN || op_ == Un::IsInf) {
      uint8_t* o = y.data<uint8_t>();
      bool pos = det_pos_, neg = det_neg_;
      visit_numeric(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* xp = x.data<T>();
        if constexpr (std::is_floating_point_v<T>) {
          if (op_ == Un::IsNaN) unary_map(xp, o, n, [](T v) { return (uint8_t)(v != v); });
          else unary_map(xp, o, n, [pos, neg](T v) { return (uint8_t)((pos && v == std::numeric_limits<T>::infinity()) || (neg && v == -std::numeric_limits<T>::infinity())); });
        }
      });
      return;
    }
    visit_numeric(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* xp = x.data<T>();
      T* o = y.data<T>();
      auto map = [&](auto f) { unary_map(xp, o, n, f); };
      // Ops defined for every numeric type.
      switch (op_) {
        case Un::Abs:
          if constexpr (std::is_unsigned_v<T>) map([](T v) { return v; });
          else if constexpr (std::is_integral_v<T>) map([](T v) { using U = std::make_unsigned_t<T>; return v < 0 ? (T)(U)(U(0) - (U)v) : v; });
          else map([](T v) { return std::fabs(v); });
          return;
        case Un::Neg:
          if constexpr (std::is_integral_v<T>) map([](T v) { using U = std::make_unsigned_t<std::conditional_t<(sizeof(T) < sizeof(int)), int, T>>; return (T)(U)(U(0) - (U)v); });
          else map([](T v) { return -v; });
          return;
        case Un::Sign:
          if constexpr (std::is_floating_point_v<T>) map([](T v) { return v > 0 ? T(1) : v < 0 ? T(-1) : v; });
          else map([](T v) { return v > 0 ? T(1) : v < 0 ? T(-1) : T(0); });
          return;
        case Un::Relu: map([](T v) { return v < T(0) ? T(0) : v; }); return;  // NaN stays NaN
        case Un::Clip: {
          T lo = clip_bound<T>(ctx, 1, true), hi = clip_bound<T>(ctx, 2, false);
          map([lo, hi](T v) { T t = v < lo ? lo : v; return t > hi ? hi : t; });
          return;
        }
        case Un::Shrink: {
          T l = (T)alpha_, b = (T)beta_;
          if constexpr (std::is_floating_point_v<T>) {
            map([l, b](T v) { T p = v + b, q = v - b; return v < -l ? p : v > l ? q : T(0); });
          } else {
            double ld = alpha_, bd = beta_;
            map([ld, bd](T v) { double d = (double)v; return d < -ld ? (T)(d + bd) : d > ld ? (T)(d - bd) : T(0); });
            (void)l; (void)b;
          }
          return;
        }
        default: break;
      }
      if constexpr (std::is_floating_point_v<T>) {
        const T al = (T)alpha_, be = (T)beta_, ga = (T)gamma_;
        switch (op_) {
          case Un::Sqrt: map([](T v) { return std::sqrt(v); }); break;
          case Un::Exp: map([](T v) { return std::exp(v); }); break;
          case Un::Log: map([](T v) { return std::log(v); }); break;
          case Un::Erf: map([](T v) { return std::erf(v); }); break;
          case Un::Reciprocal: map([](T v) { return T(1) / v; }); break;
          case Un::Floor: map([](T v) { return std::floor(v); }); break;
          case Un::Ceil: map([](T v) { return std::ceil(v); }); break;
          case Un::Round: map([](T v) { return std::nearbyint(v); }); break;  // default mode: half to even
          case Un::Sin: map([](T v) { return std::sin(v); }); break;
          case Un::Cos: map([](T v) { return std::cos(v); }); break;
          case Un::Tan: map([](T v) { return std::tan(v); }); break;
          case Un::Asin: map([](T v) { return std::asin(v); }); break;
          case Un::Acos: map([](T v) { return std::acos(v); }); break;
          case Un::Atan: map([](T v) { return std::atan(v); }); break;
          case Un::Sinh: map([](T v) { return std::sinh(v); }); break;
          case Un::Cosh: map([](T v) { return std::cosh(v); }); break;
          case Un::Asinh: map([](T v) { return std::asinh(v); }); break;
          case Un::Acosh: map([](T v) { return std::acosh(v); }); break;
          case Un::Atanh: map([](T v) { return std::atanh(v); }); break;
          case Un::Tanh: map([](T v) { return std::tanh(v); }); break;
          case Un::Sigmoid: map([](T v) { return ref::sigmoid(v); }); break;
          // max(v,0) + alpha min(v,0): min/max shapes vectorise (a plain select does not); NaN
          // propagates through both terms.
          case Un::LeakyRelu: map([al](T v) { T p = T(0) > v ? T(0) : v, q = T(0) < v ? T(0) : v; return p + al * q; }); break;
          case Un::HardSigmoid: map([al, be](T v) { T t = al * v + be; t = t < T(0) ? T(0) : t; return t > T(1) ? T(1) : t; }); break;
          case Un::HardSwish:
            map([](T v) { T t = v * T(1.0 / 6.0) + T(0.5); t = t < T(0) ? T(0) : t; return v * (t > T(1) ? T(1) : t); });
            break;
          case Un::Gelu:
            if (tanh_approx_) map([](T v) { return ref::gelu_tanh(v); });
            else map([](T v) { return ref::gelu_erf(v); });
            break;
          case Un::Elu: map([al](T v) { return v < T(0) ? al * std::expm1(v) : v; }); break;
          case Un::Selu: map([al, ga](T v) { return v > T(0) ? ga * v : ga * al * std::expm1(v); }); break;
          case Un::Celu:
            map([al](T v) { return (v > T(0) ? v : T(0)) + std::min(T(0), al * std::expm1(v / al)); });
            break;
          case Un::Softplus: map([](T v) { return softplus(v); }); break;
          case Un::Softsign: map([](T v) { return v / (T(1) + std::fabs(v)); }); break;
          case Un::ThresholdedRelu: map([al](T v) { return v > al ? v : T(0); }); break;
          case Un::Mish: map([](T v) { return v * std::tanh(softplus(v)); }); break;
          default: break;
        }
      } else {
        unsupported(ctx.node().describe() + ": integer input is not supported by this op");
      }
    });
  }

  Un op_;
  int opset_;
  float alpha_ = 0, beta_ = 0, gamma_ = 0;
  float clip_attr_min_ = 0, clip_attr_max_ = 0;
  bool det_pos_ = true, det_neg_ = true, tanh_approx_ = false;
};

template <Un OP>
KernelFactory un() {
  return [](const Node& n, int opset) -> std::unique_ptr<Kernel> { return std::make_unique<UnaryK>(n, opset, OP); };
}

}  // namespace

void register_elementwise_unary(Registry& r) {
  r.add("Abs", 1, un<Un::Abs>());
  r.add("Neg", 1, un<Un::Neg>());
  r.add("Sqrt", 1, un<Un::Sqrt>());
  r.add("Exp", 1, un<Un::Exp>());
  r.add("Log", 1, un<Un::Log>());
  r.add("Erf", 9, un<Un::Erf>());
  r.add("Reciprocal", 1, un<Un::Reciprocal>());
  r.add("Floor", 1, un<Un::Floor>());
  r.add("Ceil", 1, un<Un::Ceil>());
  r.add("Round", 11, un<Un::Round>());
  r.add("Sign", 9, un<Un::Sign>());
  r.add("Sin", 7, un<Un::Sin>());
  r.add("Cos", 7, un<Un::Cos>());
  r.add("Tan", 7, un<Un::Tan>());
  r.add("Asin", 7, un<Un::Asin>());
  r.add("Acos", 7, un<Un::Acos>());
  r.add("Atan", 7, un<Un::Atan>());
  r.add("Sinh", 9, un<Un::Sinh>());
  r.add("Cosh", 9, un<Un::Cosh>());
  r.add("Asinh", 9, un<Un::Asinh>());
  r.add("Acosh", 9, un<Un::Acosh>());
  r.add("Atanh", 9, un<Un::Atanh>());
  r.add("IsNaN", 9, un<Un::IsNaN>());
  r.add("IsInf", 10, un<Un::IsInf>());
  r.add("Relu", 1, un<Un::Relu>());
  r.add("LeakyRelu", 1, un<Un::LeakyRelu>());
  r.add("Sigmoid", 1, un<Un::Sigmoid>());
  r.add("HardSigmoid", 1, un<Un::HardSigmoid>());
  r.add("HardSwish", 14, un<Un::HardSwish>());
  r.add("Tanh", 1, un<Un::Tanh>());
  r.add("Clip", 1, un<Un::Clip>());
  r.add("Gelu", 20, un<Un::Gelu>());
  r.add("Elu", 1, un<Un::Elu>());
  r.add("Selu", 1, un<Un::Selu>());
  r.add("Celu", 12, un<Un::Celu>());
  r.add("Softplus", 1, un<Un::Softplus>());
  r.add("Softsign", 1, un<Un::Softsign>());
  r.add("ThresholdedRelu", 10, un<Un::ThresholdedRelu>());
  r.add("Shrink", 9, un<Un::Shrink>());
  r.add("Mish", 18, un<Un::Mish>());
}

}  // namespace kiln
