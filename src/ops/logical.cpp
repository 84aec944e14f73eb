// Comparisons (bool output), boolean logic, bitwise ops, BitShift and Where, with numpy broadcasting.
#include "backends/cpu/ew_ops.h"
#include "ops/common.h"

namespace kiln {
namespace {

using namespace cpu::ew;

enum class Lg { Equal, Less, Greater, LessOrEqual, GreaterOrEqual, And, Or, Xor, Not, BitShift, BitAnd, BitOr, BitXor, BitNot, Where };

bool is_int(DType t) {
  return t == DType::Int8 || t == DType::Int16 || t == DType::Int32 || t == DType::Int64 || t == DType::UInt8 ||
         t == DType::UInt16 || t == DType::UInt32 || t == DType::UInt64;
}
bool is_uint(DType t) { return t == DType::UInt8 || t == DType::UInt16 || t == DType::UInt32 || t == DType::UInt64; }

class LogicalK : public Kernel {
 public:
  // Results depend on element positions alone: the planner may run this on channels-last data.
  LayoutRule layout_rule(const std::vector<const TensorType*>&, const std::vector<Layout>&) const override {
    return LayoutRule::Elementwise;
  }
  LogicalK(const Node& n, int, Lg op) : op_(op) {
    int want = op == Lg::Where ? 3 : (op == Lg::Not || op == Lg::BitNot) ? 1 : 2;
    if (n.num_inputs() != want) fail(n.describe() + ": expected " + std::to_string(want) + " inputs, got " + std::to_string(n.num_inputs()));
    for (int i = 0; i < want; ++i)
      if (!n.has_input(i)) fail(n.describe() + ": input " + std::to_string(i) + " is required");
    if (op == Lg::BitShift) {
      std::string d = n.attr_string("direction", "");
      if (d == "LEFT") left_ = true;
      else if (d != "RIGHT") fail(n.describe() + ": direction must be 'LEFT' or 'RIGHT', got '" + d + "'");
    }
  }

  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    std::vector<const TensorType*> ins;
    for (int i = 0; i < ctx.num_inputs(); ++i) ins.push_back(&ctx.input_type(i));
    auto bad = [&](const std::string& what) { unsupported(n.describe() + ": " + what); };
    DType out;
    if (op_ == Lg::Where) {
      if (ins[0]->dtype != DType::Bool) fail(n.describe() + ": condition must be bool, got " + dtype_name(ins[0]->dtype));
      if (ins[1]->dtype != ins[2]->dtype)
        fail(n.describe() + ": X and Y must have the same type, got " + dtype_name(ins[1]->dtype) + " and " + dtype_name(ins[2]->dtype));
      out = ins[1]->dtype;
      if (dtype_size(out) == 0) bad(std::string("type ") + dtype_name(out) + " is not supported");
    } else {
      DType dt = ins[0]->dtype;
      for (auto* t : ins)
        if (t->dtype != dt) fail(n.describe() + ": inputs must have the same type, got " + dtype_name(dt) + " and " + dtype_name(t->dtype));
      switch (op_) {
        case Lg::And: case Lg::Or: case Lg::Xor: case Lg::Not:
          if (dt != DType::Bool) fail(n.describe() + ": inputs must be bool, got " + dtype_name(dt));
          out = DType::Bool;
          break;
        case Lg::BitShift:
          if (!is_uint(dt)) bad(std::string("BitShift supports unsigned integer types, got ") + dtype_name(dt));
          out = dt;
          break;
        case Lg::BitAnd: case Lg::BitOr: case Lg::BitXor: case Lg::BitNot:
          if (!is_int(dt) && dt != DType::Bool) bad(std::string("bitwise ops support integer types, got ") + dtype_name(dt));
          out = dt;
          break;
        default:  // comparisons
          if (!is_int(dt) && !is_float(dt) && dt != DType::Bool) bad(std::string("comparison of type ") + dtype_name(dt) + " is not supported");
          out = DType::Bool;
      }
    }
    ctx.set_output(0, broadcast_types(n, ins, out));
  }

  void run(RunContext& ctx) override {
    Tensor& y = ctx.output(0);
    if (op_ == Lg::Where) {
      const Tensor &c = ctx.input(0), &x = ctx.input(1), &z = ctx.input(2);
      visit_bytes(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        ternary_broadcast(c.data<uint8_t>(), c.shape(), x.data<T>(), x.shape(), z.data<T>(), z.shape(), y.data<T>(),
                          y.shape(), [](uint8_t cv, T a, T b) { return cv ? a : b; });
      });
      return;
    }
    if (op_ == Lg::Not || op_ == Lg::BitNot) {
      const Tensor& x = ctx.input(0);
      if (x.dtype() == DType::Bool) {
        unary_map(x.data<uint8_t>(), y.data<uint8_t>(), x.numel(), [](uint8_t v) { return (uint8_t)!v; });
        return;
      }
      visit_numeric(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_integral_v<T>) unary_map(x.data<T>(), y.data<T>(), x.numel(), [](T v) { return (T)~v; });
      });
      return;
    }
    Tensor a = to_f32(ctx.input(0)), b = to_f32(ctx.input(1));
    if (a.dtype() == DType::Bool) {
      // Bool inputs: logic ops, bitwise ops on bool, and comparisons of 0/1.
      bin<uint8_t, uint8_t>(a, b, y);
      return;
    }
    visit_numeric(a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (y.dtype() == DType::Bool) bin<T, uint8_t>(a, b, y);
      else bin<T, T>(a, b, y);
    });
  }

 private:
  template <class T, class R, class Op>
  void bc(const Tensor& a, const Tensor& b, Tensor& y, Op op) {
    binary_broadcast(a.data<T>(), a.shape(), b.data<T>(), b.shape(), y.data<R>(), y.shape(), op);
  }

  template <class T, class R>
  void bin(const Tensor& a, const Tensor& b, Tensor& y) {
    if constexpr (std::is_same_v<R, uint8_t> && !std::is_same_v<T, uint8_t>) {
      // Comparisons of non-uint8 types.
      switch (op_) {
        case Lg::Equal: bc<T, R>(a, b, y, [](T u, T v) { return (uint8_t)(u == v); }); return;
        case Lg::Less: bc<T, R>(a, b, y, [](T u, T v) { return (uint8_t)(u < v); }); return;
        case Lg::Greater: bc<T, R>(a, b, y, [](T u, T v) { return (uint8_t)(u > v); }); return;
        case Lg::LessOrEqual: bc<T, R>(a, b, y, [](T u, T v) { return (uint8_t)(u <= v); }); return;
        case Lg::GreaterOrEqual: bc<T, R>(a, b, y, [](T u, T v) { return (uint8_t)(u >= v); }); return;
        default: return;
      }
    } else {
      switch (op_) {
        case Lg::Equal: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u == v); }); return;
        case Lg::Less: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u < v); }); return;
        case Lg::Greater: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u > v); }); return;
        case Lg::LessOrEqual: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u <= v); }); return;
        case Lg::GreaterOrEqual: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u >= v); }); return;
        case Lg::And: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u && v); }); return;
        case Lg::Or: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u || v); }); return;
        case Lg::Xor: bc<T, R>(a, b, y, [](T u, T v) { return (R)((u != 0) != (v != 0)); }); return;
        default: break;
      }
      if constexpr (std::is_integral_v<T>) {
        constexpr T bits = (T)(sizeof(T) * 8);
        switch (op_) {
          case Lg::BitAnd: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u & v); }); return;
          case Lg::BitOr: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u | v); }); return;
          case Lg::BitXor: bc<T, R>(a, b, y, [](T u, T v) { return (R)(u ^ v); }); return;
          case Lg::BitShift:
            // Shifts by the bit width or more give 0 (undefined in C++).
            if constexpr (std::is_unsigned_v<T>) {
              if (left_) bc<T, R>(a, b, y, [](T u, T v) { return (R)(v >= bits ? 0 : (T)(u << v)); });
              else bc<T, R>(a, b, y, [](T u, T v) { return (R)(v >= bits ? 0 : (T)(u >> v)); });
            }
            return;
          default: return;
        }
      }
    }
  }

  Lg op_;
  bool left_ = false;
};

template <Lg OP>
KernelFactory lg() {
  return [](const Node& n, int opset) -> std::unique_ptr<Kernel> { return std::make_unique<LogicalK>(n, opset, OP); };
}

}  // namespace

void register_logical(Registry& r) {
  r.add("Equal", 1, lg<Lg::Equal>());
  r.add("Less", 1, lg<Lg::Less>());
  r.add("Greater", 1, lg<Lg::Greater>());
  r.add("LessOrEqual", 12, lg<Lg::LessOrEqual>());
  r.add("GreaterOrEqual", 12, lg<Lg::GreaterOrEqual>());
  r.add("And", 1, lg<Lg::And>());
  r.add("Or", 1, lg<Lg::Or>());
  r.add("Xor", 1, lg<Lg::Xor>());
  r.add("Not", 1, lg<Lg::Not>());
  r.add("BitShift", 11, lg<Lg::BitShift>());
  r.add("BitwiseAnd", 18, lg<Lg::BitAnd>());
  r.add("BitwiseOr", 18, lg<Lg::BitOr>());
  r.add("BitwiseXor", 18, lg<Lg::BitXor>());
  r.add("BitwiseNot", 18, lg<Lg::BitNot>());
  r.add("Where", 9, lg<Lg::Where>());
}

}  // namespace kiln
