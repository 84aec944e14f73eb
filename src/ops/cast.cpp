// Cast and CastLike among float32/64, float16, bfloat16, (u)int8..64 and bool.
// float -> integer truncates toward zero; NaN and out-of-range values follow numpy on x86
// (the CPU's "integer indefinite" result, then wrap to narrower types) instead of C++'s undefined
// behaviour. double -> float16/bfloat16 rounds once (round-to-odd to float first, then to nearest even).
// float8, int4/uint4, float4, string targets are reported as unsupported.
#include <cmath>
#include <limits>

#include "backends/cpu/ew_ops.h"
#include "ops/common.h"

namespace kiln {
namespace {

using namespace cpu::ew;

bool castable(DType t) {
  switch (t) {
    case DType::Float32: case DType::Float64: case DType::Float16: case DType::BFloat16: case DType::Int8:
    case DType::Int16: case DType::Int32: case DType::Int64: case DType::UInt8: case DType::UInt16:
    case DType::UInt32: case DType::UInt64: case DType::Bool:
      return true;
    default:
      return false;
  }
}

std::string onnx_type_name(int64_t t) {
  switch (t) {
    case 8: return "string";
    case 14: return "complex64";
    case 15: return "complex128";
    case 17: return "float8e4m3fn";
    case 18: return "float8e4m3fnuz";
    case 19: return "float8e5m2";
    case 20: return "float8e5m2fnuz";
    case 21: return "uint4";
    case 22: return "int4";
    case 23: return "float4e2m1";
    case 24: return "float8e8m0";
    case 25: return "uint2";
    case 26: return "int2";
    default: return "type " + std::to_string(t);
  }
}

// double -> float rounding to odd: exact when representable, else the neighbour with an odd
// significand. A later rounding to fewer bits then equals a single correct rounding.
inline float to_float_odd(double d) {
  float f = (float)d;
  if (!std::isfinite(f) || (double)f == d) return f;
  if (std::fabs((double)f) > std::fabs(d)) f = std::nextafter(f, 0.f);  // truncate toward zero
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b |= 1;
  std::memcpy(&f, &b, 4);
  return f;
}

// Floating value -> integer type U as numpy does on x86-64.
template <class U>
inline U float_to_int(double v) {
  constexpr double two63 = 9223372036854775808.0;
  if constexpr (std::is_same_v<U, uint64_t>) {
    if (v >= two63 && v < 2 * two63) return (uint64_t)v;
    if (!(v > -two63 - 1025.0 && v < two63)) return (uint64_t)1 << 63;
    return (uint64_t)(int64_t)v;
  } else if constexpr (sizeof(U) == 8 || std::is_same_v<U, uint32_t>) {
    // cvttsd2si with a 64-bit destination; uint32 takes the low half.
    if (!(v >= -two63 && v < two63)) return (U)(uint64_t)((uint64_t)1 << 63);
    return (U)(uint64_t)(int64_t)v;
  } else {
    // 32-bit conversion; narrower types take the low bits.
    if (!(v > -2147483649.0 && v < 2147483648.0)) return (U)(uint32_t)0x80000000u;
    return (U)(uint32_t)(int32_t)v;
  }
}

template <class T, class U>
inline U convert(T v) {
  if constexpr (std::is_floating_point_v<U>) return (U)v;
  else if constexpr (std::is_floating_point_v<T>) return float_to_int<U>((double)v);
  else return (U)v;  // integer -> integer: modular (C++20)
}

// x (any castable dtype) -> y (any castable dtype), same element count.
void cast_tensor(const Tensor& x0, Tensor& y) {
  int64_t n = x0.numel();
  DType to = y.dtype();
  if (x0.dtype() == to) {
    if (x0.nbytes()) std::memcpy(y.raw(), x0.raw(), x0.nbytes());
    return;
  }
  Tensor x = to_f32(x0);  // float16/bfloat16 sources become float32 (exactly)
  DType from = x.dtype() == DType::Bool ? DType::UInt8 : x.dtype();
  if (to == DType::Bool) {
    uint8_t* o = y.data<uint8_t>();
    visit_numeric(from, [&](auto tag) {
      using T = decltype(tag);
      unary_map(x.data<T>(), o, n, [](T v) { return (uint8_t)(v != T(0)); });
    });
    return;
  }
  if (to == DType::Float16 || to == DType::BFloat16) {
    bool h = to == DType::Float16;
    uint16_t* o = y.data<uint16_t>();
    visit_numeric(from, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_same_v<T, float>) {
        from_f32(x, y);
      } else {
        if (h) unary_map(x.data<T>(), o, n, [](T v) { return float_to_half(to_float_odd((double)v)); });
        else unary_map(x.data<T>(), o, n, [](T v) { return float_to_bfloat16(to_float_odd((double)v)); });
      }
    });
    return;
  }
  visit_numeric(from, [&](auto tf) {
    using T = decltype(tf);
    visit_numeric(to, [&](auto tu) {
      using U = decltype(tu);
      unary_map(x.data<T>(), y.data<U>(), n, [](T v) { return convert<T, U>(v); });
    });
  });
}

class CastK : public Kernel {
 public:
  // Results depend on element positions alone: the planner may run this on channels-last data.
  LayoutRule layout_rule(const std::vector<const TensorType*>&, const std::vector<Layout>&) const override {
    return LayoutRule::Elementwise;
  }
  CastK(const Node& n, int opset, bool like) : like_(like) {
    if (n.num_inputs() != (like ? 2 : 1)) fail(n.describe() + ": expected " + std::to_string(like ? 2 : 1) + " input(s)");
    if (!like) {
      if (!n.has_attr("to")) fail(n.describe() + ": missing required attribute 'to'");
      int64_t t = n.attr_int("to", 0);
      to_ = (DType)t;
      if (!castable(to_)) unsupported(n.describe() + ": cast to " + onnx_type_name(t) + " is not supported");
    }
  }

  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    DType to = like_ ? ctx.input_type(1).dtype : to_;
    if (!castable(to)) unsupported(n.describe() + ": cast to " + onnx_type_name((int64_t)to) + " is not supported");
    if (!castable(x.dtype)) unsupported(n.describe() + ": cast from " + onnx_type_name((int64_t)x.dtype) + " is not supported");
    TensorType y = x;
    y.dtype = to;
    ctx.set_output(0, y);
  }

  void run(RunContext& ctx) override { cast_tensor(ctx.input(0), ctx.output(0)); }

 private:
  bool like_;
  DType to_ = DType::Undefined;
};

}  // namespace

void register_cast(Registry& r) {
  r.add("Cast", 1, [](const Node& n, int opset) -> std::unique_ptr<Kernel> { return std::make_unique<CastK>(n, opset, false); });
  r.add("CastLike", 15, [](const Node& n, int opset) -> std::unique_ptr<Kernel> { return std::make_unique<CastK>(n, opset, true); });
}

}  // namespace kiln
