// QuantizeLinear (opset 10/13/19/21+), DequantizeLinear, DynamicQuantizeLinear.
//
// Quantize: y = saturate(round_half_even(x / scale) + zero_point); Dequantize: y = (x - zero_point) * scale.
// Scale/zero_point are per-tensor (scalar or [1]), per-axis (1-D of length x.dim(axis)) or blocked
// (same rank as x, dim(axis) = ceil(x.dim(axis) / block_size), other dims equal).
// Integer types int8, uint8, int16, uint16 (and int32 input for Dequantize) are supported; 4-bit,
// 2-bit and float8/float4 types are not (kiln tensors have no such element types).
// DynamicQuantizeLinear: uint8 with scale = (max(0, max x) - min(0, min x)) / 255 and
// zero_point = saturate(round(-min / scale)).
#include <cmath>

#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

bool quant_type(DType t) { return t == DType::Int8 || t == DType::UInt8 || t == DType::Int16 || t == DType::UInt16; }

void qrange(DType t, double* lo, double* hi) {
  switch (t) {
    case DType::Int8: *lo = -128, *hi = 127; break;
    case DType::UInt8: *lo = 0, *hi = 255; break;
    case DType::Int16: *lo = -32768, *hi = 32767; break;
    case DType::UInt16: *lo = 0, *hi = 65535; break;
    default: *lo = -2147483648.0, *hi = 2147483647.0;
  }
}

// For element i of x, the index into scale/zero_point.
struct ParamIndex {
  int kind = 0;  // 0 per-tensor, 1 per-axis, 2 blocked
  int64_t len = 0, inner = 1, block = 0;   // axis length, product of dims after axis
  std::vector<int64_t> xs, ss;              // strides of x and of the blocked scale
  Shape xshape;
  int axis = 0;
  int64_t operator()(int64_t i) const {
    if (kind == 0) return 0;
    if (kind == 1) return (i / inner) % len;
    int64_t off = 0, rem = i;
    for (size_t d = 0; d < xs.size(); ++d) {
      int64_t c = rem / xs[d];
      rem %= xs[d];
      if ((int)d == axis) c /= block;
      off += c * ss[d];
    }
    return off;
  }
};

ParamIndex param_index(const Node& n, const Shape& x, const Shape& s, int64_t axis_attr, int64_t block) {
  ParamIndex p;
  int64_t ns = shape_numel(s);
  if (s.empty() || (s.size() == 1 && s[0] == 1 && block == 0)) return p;
  const int r = (int)x.size();
  if (r == 0) fail(n.describe() + ": a non-scalar scale needs a non-scalar input");
  p.axis = normalize_axis(axis_attr, r, n);
  if (block <= 0) {
    if (s.size() != 1 || s[0] != x[p.axis])
      fail(n.describe() + ": per-axis scale must be 1-D of length " + std::to_string(x[p.axis]) + ", got " + shape_str(s));
    p.kind = 1;
    p.len = x[p.axis];
    for (int d = p.axis + 1; d < r; ++d) p.inner *= x[d];
    (void)ns;
    return p;
  }
  if ((int)s.size() != r) fail(n.describe() + ": blocked scale must have the input's rank, got " + shape_str(s));
  for (int d = 0; d < r; ++d) {
    const int64_t want = d == p.axis ? (x[d] + block - 1) / block : x[d];
    if (s[d] != want) fail(n.describe() + ": blocked scale shape " + shape_str(s) + " does not match input " + shape_str(x) + " with block_size " + std::to_string(block));
  }
  p.kind = 2;
  p.block = block;
  p.xs = strides_of(x);
  p.ss = strides_of(s);
  return p;
}

double round_even(double v) { return std::nearbyint(v); }  // default rounding mode: half to even

class QuantizeK : public Kernel {
 public:
  QuantizeK(const Node& n, int opset) : n_(n) {
    axis_ = n.attr_int("axis", 1);
    block_ = n.attr_int("block_size", 0);
    out_dtype_ = (DType)n.attr_int("output_dtype", 0);
    if (block_ < 0) fail(n.describe() + ": block_size must be >= 0");
  }
  DType out_type(InferContext& ctx) const {
    DType t = DType::UInt8;
    if (ctx.has_input(2)) t = ctx.input_type(2).dtype;
    else if (out_dtype_ != DType::Undefined) t = out_dtype_;
    if (ctx.has_input(2) && out_dtype_ != DType::Undefined && out_dtype_ != t)
      fail(n_.describe() + ": output_dtype differs from the zero_point type");
    if (!quant_type(t)) unsupported(n_.describe() + ": quantized type " + std::to_string((int)t) + " is not supported (int8, uint8, int16, uint16 only)");
    return t;
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!is_float(x.dtype) && x.dtype != DType::Int32) unsupported(n_.describe() + ": input type " + dtype_name(x.dtype) + " is not supported");
    TensorType y = x;
    y.dtype = out_type(ctx);
    ctx.set_output(0, y);
  }
  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    const Tensor& S = ctx.input(1);
    Tensor& Y = ctx.output(0);
    ParamIndex pi = param_index(n_, X.shape(), S.shape(), axis_, block_);
    auto scale = to_doubles(S);
    std::vector<double> zp(scale.size(), 0.0);
    if (ctx.has_input(2)) {
      const Tensor& Z = ctx.input(2);
      if (Z.shape() != S.shape() && shape_numel(Z.shape()) != shape_numel(S.shape()))
        fail(n_.describe() + ": zero_point shape " + shape_str(Z.shape()) + " differs from scale shape " + shape_str(S.shape()));
      zp = to_doubles(Z);
    }
    auto xv = to_doubles(X);
    const bool f32 = X.dtype() == DType::Float32 && S.dtype() == DType::Float32;
    double lo, hi;
    qrange(Y.dtype(), &lo, &hi);
    visit_numeric(Y.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* y = Y.data<T>();
      for (int64_t i = 0; i < X.numel(); ++i) {
        const int64_t k = pi(i);
        // float32 inputs divide in float32, as the ONNX reference does (ties like 25.5 depend on it).
        const double q = f32 ? (double)((float)xv[i] / (float)scale[k]) : xv[i] / scale[k];
        double v = round_even(q) + zp[k];
        v = std::isnan(v) ? 0 : std::min(hi, std::max(lo, v));
        y[i] = (T)v;
      }
    });
  }

 private:
  Node n_;
  int64_t axis_, block_;
  DType out_dtype_;
};

class DequantizeK : public Kernel {
 public:
  DequantizeK(const Node& n, int opset) : n_(n) {
    axis_ = n.attr_int("axis", 1);
    block_ = n.attr_int("block_size", 0);
    out_dtype_ = (DType)n.attr_int("output_dtype", 0);
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!quant_type(x.dtype) && x.dtype != DType::Int32)
      unsupported(n_.describe() + ": quantized input type " + std::to_string((int)x.dtype) + " is not supported (int8, uint8, int16, uint16, int32 only)");
    const DType st = ctx.input_type(1).dtype;
    if (!is_float(st)) fail(n_.describe() + ": scale must be a float type");
    TensorType y = x;
    y.dtype = out_dtype_ != DType::Undefined ? out_dtype_ : st;
    if (!is_float(y.dtype)) fail(n_.describe() + ": output_dtype must be a float type");
    ctx.set_output(0, y);
  }
  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    const Tensor& S = ctx.input(1);
    Tensor& Y = ctx.output(0);
    ParamIndex pi = param_index(n_, X.shape(), S.shape(), axis_, block_);
    auto scale = to_doubles(S);
    std::vector<double> zp(scale.size(), 0.0);
    if (ctx.has_input(2)) {
      const Tensor& Z = ctx.input(2);
      if (Z.dtype() != X.dtype()) fail(n_.describe() + ": zero_point type differs from the input type");
      if (shape_numel(Z.shape()) != shape_numel(S.shape()))
        fail(n_.describe() + ": zero_point shape " + shape_str(Z.shape()) + " differs from scale shape " + shape_str(S.shape()));
      zp = to_doubles(Z);
    }
    auto xv = to_doubles(X);
    Tensor yf(DType::Float32, Y.shape());
    if (Y.dtype() == DType::Float64) {
      for (int64_t i = 0; i < X.numel(); ++i) { const int64_t k = pi(i); Y.data<double>()[i] = (xv[i] - zp[k]) * scale[k]; }
      return;
    }
    for (int64_t i = 0; i < X.numel(); ++i) {
      const int64_t k = pi(i);
      yf.data<float>()[i] = (float)((xv[i] - zp[k]) * (float)scale[k]);
    }
    cpu::red_store_f32(yf, Y);
  }

 private:
  Node n_;
  int64_t axis_, block_;
  DType out_dtype_;
};

class DynQuantK : public Kernel {
 public:
  DynQuantK(const Node& n, int) : n_(n) {}
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (x.dtype != DType::Float32) unsupported(n_.describe() + ": input must be float32, got " + dtype_name(x.dtype));
    TensorType y = x;
    y.dtype = DType::UInt8;
    ctx.set_output(0, y);
    if (ctx.num_outputs() > 1) ctx.set_output(1, DType::Float32, {});
    if (ctx.num_outputs() > 2) ctx.set_output(2, DType::UInt8, {});
  }
  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    const float* x = X.data<float>();
    float mn = 0, mx = 0;
    for (int64_t i = 0; i < X.numel(); ++i) mn = std::min(mn, x[i]), mx = std::max(mx, x[i]);
    const float scale = (mx - mn) / 255.f;
    float zpf = scale == 0 ? 0.f : std::nearbyint(std::min(255.f, std::max(0.f, -mn / scale)));
    const uint8_t zp = (uint8_t)zpf;
    uint8_t* y = ctx.output(0).data<uint8_t>();
    for (int64_t i = 0; i < X.numel(); ++i) {
      float v = scale == 0 ? zpf : std::nearbyint(x[i] / scale) + zpf;
      y[i] = (uint8_t)std::min(255.f, std::max(0.f, v));
    }
    if (ctx.has_output(1)) *ctx.output(1).data<float>() = scale;
    if (ctx.has_output(2)) *ctx.output(2).data<uint8_t>() = zp;
  }

 private:
  Node n_;
};

}  // namespace

void register_quantize(Registry& r) {
  r.add("QuantizeLinear", 10, make_kernel<QuantizeK>());
  r.add("DequantizeLinear", 10, make_kernel<DequantizeK>());
  r.add("DynamicQuantizeLinear", 11, make_kernel<DynQuantK>());
}

}  // namespace kiln
