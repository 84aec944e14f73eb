// Constant, Identity, Shape, Size: values known from the graph or from shapes alone.
#include "ops/common.h"

namespace kiln {
namespace {

class ConstantK : public Kernel {
 public:
  ConstantK(const Node& n, int) {
    if (const Tensor* t = n.attr_tensor("value")) { value_ = *t; return; }
    if (n.has_attr("value_float")) { value_ = Tensor(DType::Float32, {}); *value_.data<float>() = n.attr_float("value_float", 0); return; }
    if (n.has_attr("value_int")) { value_ = Tensor(DType::Int64, {}); *value_.data<int64_t>() = n.attr_int("value_int", 0); return; }
    if (n.has_attr("value_floats")) {
      auto v = n.attr_floats("value_floats");
      value_ = Tensor(DType::Float32, {(int64_t)v.size()});
      std::copy(v.begin(), v.end(), value_.data<float>());
      return;
    }
    if (n.has_attr("value_ints")) {
      auto v = n.attr_ints("value_ints");
      value_ = Tensor(DType::Int64, {(int64_t)v.size()});
      std::copy(v.begin(), v.end(), value_.data<int64_t>());
      return;
    }
    if (n.has_attr("sparse_value")) unsupported(n.describe() + ": sparse_value constants are not supported");
    unsupported(n.describe() + ": Constant without a supported value attribute (value, value_float(s), value_int(s))");
  }
  void infer(InferContext& ctx) override { ctx.set_output(0, value_.dtype(), value_.shape()); }
  void run(RunContext& ctx) override {
    Tensor& y = ctx.output(0);
    if (value_.nbytes()) std::memcpy(y.raw(), value_.raw(), value_.nbytes());
  }

 private:
  Tensor value_;
};

// Identity, and Dropout-free copies share this.
class IdentityK : public Kernel {
 public:
  IdentityK(const Node&, int) {}
  void infer(InferContext& ctx) override { ctx.set_output(0, ctx.input_type(0)); }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    Tensor& y = ctx.output(0);
    if (x.nbytes() && y.raw() != x.raw()) std::memcpy(y.raw(), x.raw(), x.nbytes());
  }
  bool output_views_input() const override { return true; }
};

class ShapeK : public Kernel {
 public:
  ShapeK(const Node& n, int) : start_(n.attr_int("start", 0)), end_(n.attr_int("end", INT64_MAX)), has_end_(n.has_attr("end")) {}
  void range(int rank, int64_t* s, int64_t* e) const {
    auto clamp = [rank](int64_t v) { if (v < 0) v += rank; return std::min<int64_t>(std::max<int64_t>(v, 0), rank); };
    *s = clamp(start_);
    *e = has_end_ ? clamp(end_) : rank;
    if (*e < *s) *e = *s;
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!x.has_shape) { TensorType t = unknown_type(DType::Int64); t.has_shape = true; t.dims = {Dim()}; ctx.set_output(0, t); return; }
    int64_t s, e;
    range(x.rank(), &s, &e);
    ctx.set_output(0, DType::Int64, {e - s});
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    int64_t s, e;
    range(x.rank(), &s, &e);
    for (int64_t i = s; i < e; ++i) ctx.output(0).data<int64_t>()[i - s] = x.shape()[i];
  }

 private:
  int64_t start_, end_;
  bool has_end_;
};

class SizeK : public Kernel {
 public:
  SizeK(const Node&, int) {}
  void infer(InferContext& ctx) override { ctx.set_output(0, DType::Int64, {}); }
  void run(RunContext& ctx) override { *ctx.output(0).data<int64_t>() = ctx.input(0).numel(); }
};

}  // namespace

void register_constant(Registry& r) {
  r.add("Constant", 1, make_kernel<ConstantK>());
  r.add("Identity", 1, make_kernel<IdentityK>());
  r.add("Shape", 1, make_kernel<ShapeK>(), {.shape_only = true});
  r.add("Size", 1, make_kernel<SizeK>(), {.shape_only = true});
}

}  // namespace kiln
