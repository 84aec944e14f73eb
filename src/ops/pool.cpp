// MaxPool, AveragePool, LpPool and their Global variants.
// float32 MaxPool/AveragePool run on oneDNN pooling where its semantics match ONNX; everything else
// (Indices output, Lp, other types, include-pad averages over a ceil_mode overhang) on the reference.
#include <omp.h>

#include <cmath>

#include "backends/cpu/data_util.h"
#include "backends/cpu/mm_dnnl.h"
#include "backends/cpu/mm_ref.h"
#include "backends/cpu/pool_cl.h"
#include "ops/common.h"

namespace kiln {
namespace {

using mm::PoolKind;

class PoolK : public Kernel {
 public:
  PoolK(const Node& n, int opset, PoolKind kind) : node_(n) {
    a_.kind = kind;
    if (!n.has_attr("kernel_shape")) fail(n.describe() + ": attribute kernel_shape is required");
    a_.kernel = n.required_ints("kernel_shape");
    const int nsp = (int)a_.kernel.size();
    if (nsp < 1) fail(n.describe() + ": kernel_shape must not be empty");
    for (auto k : a_.kernel)
      if (k < 1) fail(n.describe() + ": kernel_shape values must be >= 1, got " + shape_str(a_.kernel));
    a_.strides = n.attr_ints("strides", std::vector<int64_t>(nsp, 1));
    a_.dilations = n.attr_ints("dilations", std::vector<int64_t>(nsp, 1));
    a_.pads = n.attr_ints("pads", std::vector<int64_t>(2 * nsp, 0));
    if ((int)a_.strides.size() != nsp) fail(n.describe() + ": strides " + shape_str(a_.strides) + " must have " + std::to_string(nsp) + " values (one per kernel axis)");
    if ((int)a_.dilations.size() != nsp) fail(n.describe() + ": dilations " + shape_str(a_.dilations) + " must have " + std::to_string(nsp) + " values (one per kernel axis)");
    if ((int)a_.pads.size() != 2 * nsp) fail(n.describe() + ": pads " + shape_str(a_.pads) + " must have " + std::to_string(2 * nsp) + " values (begin and end per kernel axis)");
    for (auto s : a_.strides)
      if (s < 1) fail(n.describe() + ": strides must be >= 1, got " + shape_str(a_.strides));
    for (auto d : a_.dilations)
      if (d < 1) fail(n.describe() + ": dilations must be >= 1, got " + shape_str(a_.dilations));
    for (auto p : a_.pads)
      if (p < 0) fail(n.describe() + ": pads must be >= 0, got " + shape_str(a_.pads));
    a_.auto_pad = n.attr_string("auto_pad", "NOTSET");
    if (a_.auto_pad != "NOTSET" && a_.auto_pad != "VALID" && a_.auto_pad != "SAME_UPPER" && a_.auto_pad != "SAME_LOWER")
      fail(n.describe() + ": auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got '" + a_.auto_pad + "'");
    a_.ceil_mode = n.attr_int("ceil_mode", 0) != 0;
    a_.count_include_pad = n.attr_int("count_include_pad", 0) != 0;
    a_.storage_order = (int)n.attr_int("storage_order", 0);
    if (a_.storage_order != 0 && a_.storage_order != 1)
      fail(n.describe() + ": storage_order must be 0 or 1, got " + std::to_string(a_.storage_order));
    if (kind == PoolKind::Lp) a_.p = read_p(n, opset);
  }

  static double read_p(const Node& n, int opset) {
    auto it = n.attrs.find("p");
    if (it == n.attrs.end()) return 2;
    double p = it->second.kind == Attribute::Float ? it->second.f : (double)n.attr_int("p", 2);
    if (!(p > 0)) fail(n.describe() + ": p must be positive, got " + std::to_string(p));
    return p;
  }

  void check_dtype(DType t) const {
    const bool ok = t == DType::Float32 || t == DType::Float64 ||
                    (a_.kind == PoolKind::Max && (t == DType::Int8 || t == DType::UInt8));
    if (!ok) unsupported(node_.describe() + ": " + node_.op_type + " of " + dtype_name(t) + " is not supported");
  }

  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    check_dtype(x.dtype);
    const int nsp = (int)a_.kernel.size();
    TensorType y;
    y.dtype = x.dtype;
    if (x.has_shape) {
      if (x.rank() != nsp + 2)
        fail(node_.describe() + ": input " + x.str() + " must have rank " + std::to_string(nsp + 2) + " (N, C and " +
             std::to_string(nsp) + " spatial dims matching kernel_shape " + shape_str(a_.kernel) + ")");
      y.has_shape = true;
      y.dims = {x.dims[0], x.dims[1]};
      for (int i = 0; i < nsp; ++i) {
        const Dim& d = x.dims[2 + i];
        if (!d.known()) { y.dims.push_back(Dim()); continue; }
        const int64_t o = mm::pool_out_dim(a_, i, d.value);
        if (o <= 0)
          fail(node_.describe() + ": input " + x.str() + " is too small for the pooling window on spatial axis " + std::to_string(i) +
               " (kernel " + std::to_string(a_.kernel[i]) + ", dilation " + std::to_string(a_.dilations[i]) + ", pads " + shape_str(a_.pads) + ")");
        y.dims.push_back(Dim::of(o));
      }
    }
    ctx.set_output(0, y);
    if (ctx.num_outputs() > 1) {
      if (a_.kind != PoolKind::Max) fail(node_.describe() + ": only MaxPool has a second (Indices) output");
      TensorType ind = y;
      ind.dtype = DType::Int64;
      ctx.set_output(1, ind);
    }
  }

  // ChannelsLast in -> ChannelsLast out for float32 max/average pooling without the Indices output.
  LayoutRule layout_rule(const std::vector<const TensorType*>& types, const std::vector<Layout>& layouts) const override {
    if (a_.kind != PoolKind::Lp && types[0] && types[0]->dtype == DType::Float32 && layouts[0] == Layout::ChannelsLast &&
        node_.outputs.size() == 1)
      return LayoutRule::ChannelsLast;
    return LayoutRule::PlainOnly;
  }

  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    check_dtype(X.dtype());
    const mm::PoolGeom g = mm::pool_geometry(a_, X.shape(), node_.describe());
    if (ctx.input_layout(0) == Layout::ChannelsLast) {
      run_channels_last(ctx, g);
      return;
    }
    Tensor& Y = ctx.output(0);
    if (Y.shape() != g.out_shape()) fail(node_.describe() + ": output buffer " + shape_str(Y.shape()) + ", expected " + shape_str(g.out_shape()));
    int64_t* ind = nullptr;
    if (ctx.has_output(1)) {
      Tensor& I = ctx.output(1);
      if (I.shape() != g.out_shape() || I.dtype() != DType::Int64) fail(node_.describe() + ": Indices buffer has the wrong shape or type");
      ind = I.data<int64_t>();
    }
    if (Y.numel() == 0) return;
    if (X.dtype() == DType::Float32 && !ind && fast_.run(a_, g, X.data<float>(), Y.data<float>())) return;
    mm::ref_pool(X.dtype(), a_, g, X.raw(), Y.raw(), ind);
  }

  // X and Y are stored channels-last: 2D max pooling on kiln's own kernel, the rest on oneDNN, which handles that
  // layout directly; for the rare geometry it rejects, go through plain copies and the reference kernel.
  void run_channels_last(RunContext& ctx, const mm::PoolGeom& g) {
    const Tensor& X = ctx.input(0);
    Tensor& Y = ctx.output(0);
    if (Y.numel() == 0) return;
    const bool y_cl = ctx.output_layout(0) == Layout::ChannelsLast;
    if (y_cl && a_.kind == PoolKind::Max && g.nsp == 2) {
      cpu::max_pool_2d_cl(g, X.data<float>(), Y.data<float>());
      return;
    }
    if (y_cl && fast_.run(a_, g, X.data<float>(), Y.data<float>(), true)) return;
    const size_t es = dtype_size(X.dtype());
    const int64_t N = X.dim(0), C = X.dim(1);
    Tensor xp(X.dtype(), X.shape());
    data::layout_copy(X.raw(), xp.raw(), N, C, X.numel() / std::max<int64_t>(1, N * C), es, false);
    if (!y_cl) {
      mm::ref_pool(X.dtype(), a_, g, xp.raw(), Y.raw(), nullptr);
      return;
    }
    Tensor yp(Y.dtype(), Y.shape());
    mm::ref_pool(X.dtype(), a_, g, xp.raw(), yp.raw(), nullptr);
    data::layout_copy(yp.raw(), Y.raw(), N, C, Y.numel() / std::max<int64_t>(1, N * C), es, true);
  }

 private:
  Node node_;
  mm::PoolAttrs a_;
  mm::PoolCache fast_;
};

template <PoolKind K>
class PoolOf : public PoolK {
 public:
  PoolOf(const Node& n, int opset) : PoolK(n, opset, K) {}
};

class GlobalPoolK : public Kernel {
 public:
  GlobalPoolK(const Node& n, int opset, PoolKind kind) : node_(n), kind_(kind) {
    if (kind == PoolKind::Lp) p_ = PoolK::read_p(n, opset);
  }

  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    check_dtype(x.dtype);
    TensorType y;
    y.dtype = x.dtype;
    if (x.has_shape) {
      if (x.rank() < 2) fail(node_.describe() + ": input " + x.str() + " must have rank >= 2 (N, C, spatial...)");
      y.has_shape = true;
      y.dims = {x.dims[0], x.dims[1]};
      for (int i = 2; i < x.rank(); ++i) y.dims.push_back(Dim::of(1));
    }
    ctx.set_output(0, y);
  }

  // Global average/max pooling reads channels-last input directly; its output ([N, C, 1...]) is the same in both layouts.
  LayoutRule layout_rule(const std::vector<const TensorType*>& types, const std::vector<Layout>& layouts) const override {
    if (kind_ != PoolKind::Lp && types[0] && types[0]->dtype == DType::Float32 && layouts[0] == Layout::ChannelsLast)
      return LayoutRule::ChannelsLast;
    return LayoutRule::PlainOnly;
  }

  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    check_dtype(X.dtype());
    if (X.rank() < 2) fail(node_.describe() + ": input " + shape_str(X.shape()) + " must have rank >= 2");
    Tensor& Y = ctx.output(0);
    const int64_t planes = X.dim(0) * X.dim(1);
    if (Y.numel() != planes) fail(node_.describe() + ": output buffer " + shape_str(Y.shape()) + " does not match input " + shape_str(X.shape()));
    if (planes == 0) return;
    const int64_t size = X.numel() / planes;
    if (size == 0) fail(node_.describe() + ": input " + shape_str(X.shape()) + " has an empty spatial extent");
    if (ctx.input_layout(0) == Layout::ChannelsLast) {
      global_pool_channels_last(X.data<float>(), Y.data<float>(), X.dim(0), X.dim(1), size);
      return;
    }
    mm::global_pool(X.dtype(), kind_, p_, X.raw(), Y.raw(), planes, size);
  }

  // x: N x size x C (channels-last); y: N x C. Channels are contiguous, so the loops vectorise over C. Each image's
  // positions are split in T parts (each reads whole contiguous rows; a split over channel blocks left threads idle
  // when C is not a multiple of 128 and read each row in strided pieces), and the N x T parts are shared among the
  // threads in one parallel region (one per image cost efficientnet_b0's 7x7 maps at batch 8 as much as their sums).
  // The T partial results are combined in order, so a given thread count always gives the same answer.
  void global_pool_channels_last(const float* x, float* y, int64_t N, int64_t C, int64_t size) const {
    const bool is_max = kind_ == PoolKind::Max;
    const int T = size * C > 65536 ? std::max(1, std::min<int>(omp_get_max_threads(), (int)(size / 16))) : 1;
    // Per image, part and channel: a max, or a double sum of float partial sums over runs of 64 positions.
    std::vector<double> acc((size_t)(N * T * C));
    const int64_t items = N * T;
#pragma omp parallel if (items > 1 && N * size * C > 65536)
    {
      std::vector<float> part_buf((size_t)C);
      float* __restrict part = part_buf.data();
#pragma omp for schedule(static)
      for (int64_t item = 0; item < items; ++item) {
        const int64_t n = item / T, t = item % T;
        const float* __restrict xn = x + n * size * C;
        const int64_t s_begin = size * t / T, s_end = size * (t + 1) / T;
        double* __restrict a = acc.data() + (size_t)item * C;
        if (is_max) {
          for (int64_t c = 0; c < C; ++c) part[c] = s_begin < s_end ? xn[s_begin * C + c] : -INFINITY;
          for (int64_t s = s_begin + 1; s < s_end; ++s)
            for (int64_t c = 0; c < C; ++c) part[c] = std::max(part[c], xn[s * C + c]);
          for (int64_t c = 0; c < C; ++c) a[c] = part[c];
        } else {
          for (int64_t c = 0; c < C; ++c) a[c] = 0;
          for (int64_t s0 = s_begin; s0 < s_end; s0 += 64) {
            const int64_t s1 = std::min(s_end, s0 + 64);
            for (int64_t c = 0; c < C; ++c) part[c] = 0.f;
            for (int64_t s = s0; s < s1; ++s)
              for (int64_t c = 0; c < C; ++c) part[c] += xn[s * C + c];
            for (int64_t c = 0; c < C; ++c) a[c] += part[c];
          }
        }
      }
    }
    for (int64_t n = 0; n < N; ++n) {
      const double* an = acc.data() + (size_t)(n * T * C);
      float* yn = y + n * C;
      for (int64_t c = 0; c < C; ++c) {
        double r = an[c];
        for (int t = 1; t < T; ++t) r = is_max ? std::max(r, an[(size_t)t * C + c]) : r + an[(size_t)t * C + c];
        yn[c] = is_max ? (float)r : (float)(r / (double)size);
      }
    }
  }

 private:
  void check_dtype(DType t) const {
    const bool ok = t == DType::Float32 || t == DType::Float64 ||
                    (kind_ == PoolKind::Max && (t == DType::Int8 || t == DType::UInt8));
    if (!ok) unsupported(node_.describe() + ": " + node_.op_type + " of " + dtype_name(t) + " is not supported");
  }

  Node node_;
  PoolKind kind_;
  double p_ = 2;
};

template <PoolKind K>
class GlobalOf : public GlobalPoolK {
 public:
  GlobalOf(const Node& n, int opset) : GlobalPoolK(n, opset, K) {}
};

}  // namespace

void register_pool(Registry& r) {
  r.add("MaxPool", 1, make_kernel<PoolOf<PoolKind::Max>>());
  r.add("AveragePool", 1, make_kernel<PoolOf<PoolKind::Avg>>());
  r.add("LpPool", 1, make_kernel<PoolOf<PoolKind::Lp>>());
  r.add("GlobalMaxPool", 1, make_kernel<GlobalOf<PoolKind::Max>>());
  r.add("GlobalAveragePool", 1, make_kernel<GlobalOf<PoolKind::Avg>>());
  r.add("GlobalLpPool", 1, make_kernel<GlobalOf<PoolKind::Lp>>());
}

}  // namespace kiln
