// ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare.
// Axes come from the `axes` attribute before opset 18 (ReduceSum: 13) and from the optional second input since.
// Empty axes reduce everything unless noop_with_empty_axes=1. Reducing an empty set gives the operation's
// identity: 0 (Sum, L1, L2, SumSquare), 1 (Prod), -inf / lowest (Max, LogSum, LogSumExp), +inf / max (Min).
#include <algorithm>

#include "backends/cpu/red_kernels.h"
#include "backends/cpu/red_ref.h"
#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

using cpu::RedOp;

class ReduceK : public Kernel {
 public:
  ReduceK(const Node& n, int opset, RedOp op, bool axes_input) : node_(n), op_(op), axes_input_(axes_input) {
    keepdims_ = n.attr_int("keepdims", 1) != 0;
    noop_ = n.attr_int("noop_with_empty_axes", 0) != 0;
    if (axes_input_) {
      if (n.has_attr("axes")) fail(n.describe() + ": the axes attribute was replaced by the axes input in this opset");
    } else {
      axes_attr_ = n.attr_ints("axes");
      if (n.num_inputs() > 1 && n.has_input(1)) fail(n.describe() + ": axes is an attribute, not an input, in this opset");
    }
  }

  // Reduced-axis mask for a known rank; false when the axes are not known yet.
  bool mask_for(int rank, const Tensor* axes_val, bool axes_given, std::vector<bool>* mask, bool* noop) const {
    std::vector<int64_t> axes;
    if (axes_input_ && axes_given) {
      if (!axes_val) return false;
      if (axes_val->rank() > 1) fail(node_.describe() + ": axes must be a 1-D tensor, got " + shape_str(axes_val->shape()));
      axes = to_int64s(*axes_val);
    } else if (!axes_input_) {
      axes = axes_attr_;
    }
    *noop = false;
    mask->assign(rank, false);
    if (axes.empty()) {
      if (noop_) *noop = true;
      else mask->assign(rank, true);
      return true;
    }
    for (int64_t a : axes) {
      int d = normalize_axis(a, rank, node_, "reduction axis");
      if ((*mask)[d]) fail(node_.describe() + ": axis " + std::to_string(a) + " is listed twice");
      (*mask)[d] = true;
    }
    return true;
  }

  void check_dtype(DType t) const {
    if (t == DType::Bool && (op_ == RedOp::Max || op_ == RedOp::Min)) return;
    if (t == DType::Bool || t == DType::String || t == DType::Undefined)
      unsupported(node_.describe() + ": input type " + dtype_name(t) + " is not supported");
  }

  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    check_dtype(x.dtype);
    const bool axes_given = axes_input_ && ctx.has_input(1);
    if (!x.has_shape) { ctx.set_output(0, unknown_type(x.dtype)); return; }
    std::vector<bool> mask;
    bool noop = false;
    if (!mask_for(x.rank(), axes_given ? ctx.input_value(1) : nullptr, axes_given, &mask, &noop)) {
      TensorType t = unknown_type(x.dtype);
      if (keepdims_) {
        t.has_shape = true;
        t.dims.assign(x.rank(), Dim());
      } else {
        const TensorType& at = ctx.input_type(1);
        if (at.has_shape && at.rank() == 1 && at.dims[0].known() && at.dims[0].value > 0) {
          t.has_shape = true;
          t.dims.assign(std::max<int64_t>(0, x.rank() - at.dims[0].value), Dim());
        }
      }
      ctx.set_output(0, t);
      return;
    }
    if (noop) { ctx.set_output(0, x); return; }
    TensorType t = unknown_type(x.dtype);
    t.has_shape = true;
    for (int d = 0; d < x.rank(); ++d) {
      if (!mask[d]) t.dims.push_back(x.dims[d]);
      else if (keepdims_) t.dims.push_back(Dim::of(1));
    }
    ctx.set_output(0, t);
  }

  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const bool axes_given = axes_input_ && ctx.has_input(1);
    std::vector<bool> mask;
    bool noop = false;
    mask_for(x.rank(), axes_given ? &ctx.input(1) : nullptr, axes_given, &mask, &noop);
    Tensor& y = ctx.output(0);
    if (noop) {
      if (x.nbytes()) std::memcpy(y.raw(), x.raw(), x.nbytes());
      return;
    }
    if (y.numel() == 0) return;
    // Merge the shape into runs of reduced / kept axes (size-1 axes dropped).
    std::vector<std::pair<int64_t, bool>> runs;
    for (int d = 0; d < x.rank(); ++d) {
      if (x.dim(d) == 1) continue;
      if (!runs.empty() && runs.back().second == mask[d]) runs.back().first *= x.dim(d);
      else runs.push_back({x.dim(d), mask[d]});
    }
    int64_t outer = 1, R = 1, inner = 1;
    bool simple = true;  // [outer kept][R reduced][inner kept]
    {
      size_t i = 0;
      if (i < runs.size() && !runs[i].second) outer = runs[i++].first;
      if (i < runs.size() && runs[i].second) R = runs[i++].first;
      if (i < runs.size() && !runs[i].second) inner = runs[i++].first;
      if (i != runs.size()) simple = false;
    }
    const DType dt = x.dtype();
    if (dt == DType::Float32 || dt == DType::Float16 || dt == DType::BFloat16) {
      Tensor xf = cpu::red_as_f32(x);
      Tensor yf = cpu::red_out_f32(y);
      if (simple) cpu::red_reduce_f32(op_, xf.data<float>(), yf.data<float>(), outer, R, inner);
      else cpu::ref::reduce<float, double>(op_, xf.data<float>(), x.shape(), mask, yf.data<float>());
      cpu::red_store_f32(yf, y);
      return;
    }
    if (dt == DType::Bool) {
      cpu::ref::reduce<uint8_t, int64_t>(op_, x.data<uint8_t>(), x.shape(), mask, y.data<uint8_t>());
      return;
    }
    visit_numeric(dt, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_floating_point_v<T>) {
        cpu::ref::reduce<T, double>(op_, x.data<T>(), x.shape(), mask, y.data<T>());
      } else {
        if (cpu::ref::red_needs_double(op_)) cpu::ref::reduce<T, double>(op_, x.data<T>(), x.shape(), mask, y.data<T>());
        else cpu::ref::reduce<T, int64_t>(op_, x.data<T>(), x.shape(), mask, y.data<T>());
      }
    });
  }

 private:
  Node node_;  // a copy: kernels may outlive the graph they were made from
  RedOp op_;
  bool axes_input_;
  bool keepdims_ = true, noop_ = false;
  std::vector<int64_t> axes_attr_;
};

template <RedOp OP, bool AXES_INPUT>
class ReduceT : public ReduceK {
 public:
  ReduceT(const Node& n, int opset) : ReduceK(n, opset, OP, AXES_INPUT) {}
};

template <RedOp OP>
void add_reduce(Registry& r, const char* name, int axes_input_since) {
  r.add(name, 1, make_kernel<ReduceT<OP, false>>());
  r.add(name, axes_input_since, make_kernel<ReduceT<OP, true>>());
}

}  // namespace

void register_reduce(Registry& r) {
  add_reduce<RedOp::Sum>(r, "ReduceSum", 13);
  add_reduce<RedOp::Mean>(r, "ReduceMean", 18);
  add_reduce<RedOp::Max>(r, "ReduceMax", 18);
  add_reduce<RedOp::Min>(r, "ReduceMin", 18);
  add_reduce<RedOp::Prod>(r, "ReduceProd", 18);
  add_reduce<RedOp::L1>(r, "ReduceL1", 18);
  add_reduce<RedOp::L2>(r, "ReduceL2", 18);
  add_reduce<RedOp::LogSum>(r, "ReduceLogSum", 18);
  add_reduce<RedOp::LogSumExp>(r, "ReduceLogSumExp", 18);
  add_reduce<RedOp::SumSquare>(r, "ReduceSumSquare", 18);
}

}  // namespace kiln
