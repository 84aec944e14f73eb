// Concat: each input is copied as runs of contiguous bytes (outer x axis*inner).
#include <omp.h>

#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class ConcatK : public Kernel {
 public:
  ConcatK(const Node& n, int opset) : axis_(n.has_attr("axis") || opset >= 4 ? n.required_int("axis") : 1) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    if (ctx.num_inputs() == 0) fail(n.describe() + ": needs at least one input");
    const TensorType* ref = nullptr;
    DType dt = ctx.input_type(0).dtype;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      const TensorType& t = ctx.input_type(i);
      if (t.dtype != dt) fail(n.describe() + ": input " + std::to_string(i) + " is " + dtype_name(t.dtype) + ", input 0 is " + dtype_name(dt));
      if (t.has_shape && !ref) ref = &t;
    }
    if (!ref) { ctx.set_output(0, unknown_type(dt)); return; }
    const int r = ref->rank();
    const int ax = normalize_axis(axis_, r, n);
    std::vector<Dim> out = ref->dims;
    int64_t sum = 0;
    bool sum_known = true;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      const TensorType& t = ctx.input_type(i);
      if (!t.has_shape) { sum_known = false; continue; }
      if (t.rank() != r)
        fail(n.describe() + ": input " + std::to_string(i) + " " + t.str() + " has a different rank from " + ref->str());
      for (int d = 0; d < r; ++d) {
        if (d == ax) continue;
        // The message is only built for a clash (DenseNet's Concats have up to ~50 inputs each, and building it for
        // every one cost its load ~1 ms).
        const bool clash = out[d].known() && t.dims[d].known() && out[d].value != t.dims[d].value;
        out[d] = data::merge_equal(n, out[d], t.dims[d],
                                   clash ? "input " + std::to_string(i) + " " + t.str() + " vs " + ref->str() + " on axis " + std::to_string(d)
                                         : std::string());
      }
      if (t.dims[ax].known()) sum += t.dims[ax].value;
      else sum_known = false;
    }
    out[ax] = sum_known ? Dim::of(sum) : Dim();
    ctx.set_output(0, data::make_type(dt, out));
  }
  // Concatenating channels of channels-last tensors is a concatenation of their innermost rows.
  LayoutRule layout_rule(const std::vector<const TensorType*>& types, const std::vector<Layout>& layouts) const override {
    bool any_cl = false;
    for (size_t i = 0; i < types.size(); ++i) {
      if (!types[i] || !types[i]->fully_known() || types[i]->rank() < 3) return LayoutRule::PlainOnly;
      any_cl = any_cl || layouts[i] == Layout::ChannelsLast;
    }
    const int r = types.empty() ? 0 : types[0]->rank();
    if (!any_cl || (axis_ != 1 && axis_ != 1 - r)) return LayoutRule::PlainOnly;
    return LayoutRule::ChannelsLast;
  }

  void run(RunContext& ctx) override {
    Tensor& y = ctx.output(0);
    if (ctx.output_layout(0) == Layout::ChannelsLast) {
      run_channels_last(ctx);
      return;
    }
    const int r = y.rank();
    const int ax = normalize_axis(axis_, r, ctx.node());
    const size_t es = dtype_size(y.dtype());
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; ++d) outer *= y.shape()[d];
    for (int d = ax + 1; d < r; ++d) inner *= y.shape()[d];
    const int64_t out_row = y.shape()[ax] * inner * (int64_t)es;
    struct Part { const uint8_t* p; int64_t bytes, off; };
    std::vector<Part> parts;
    int64_t off = 0;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      const Tensor& x = ctx.input(i);
      if (x.rank() != r) fail(ctx.node().describe() + ": input ranks differ");
      int64_t b = x.shape()[ax] * inner * (int64_t)es;
      if (b) parts.push_back({(const uint8_t*)x.raw(), b, off});
      off += b;
    }
    if (off != out_row) fail(ctx.node().describe() + ": input sizes along the axis do not add up to the output");
    uint8_t* dst = (uint8_t*)y.raw();
    const int64_t total = outer * out_row;
    const int64_t np = (int64_t)parts.size();
#pragma omp parallel for schedule(static) if (total > (1 << 18) && outer * np > 1)
    for (int64_t w = 0; w < outer * np; ++w) {
      const int64_t o = w / np;
      const Part& p = parts[w - o * np];
      std::memcpy(dst + o * out_row + p.off, p.p + o * p.bytes, (size_t)p.bytes);
    }
  }

 private:
  // y is [N, spatial..., C] in memory; each input is channels-last (rows copied) or plain (transposed in).
  void run_channels_last(RunContext& ctx) {
    Tensor& y = ctx.output(0);
    const size_t es = dtype_size(y.dtype());
    const int64_t N = y.dim(0), C = y.dim(1), S = y.numel() / std::max<int64_t>(1, N * C);
    uint8_t* dst = (uint8_t*)y.raw();
    bool all_cl = true;
    for (int i = 0; i < ctx.num_inputs(); ++i) all_cl = all_cl && ctx.input_layout(i) == Layout::ChannelsLast;
    if (all_cl) {
      // One pass over the output rows, each assembled from every input's row (DenseNet concatenates up to ~50
      // inputs: one parallel region and sequential writes instead of one strided sweep per input).
      std::vector<const uint8_t*> srcs;
      std::vector<size_t> widths;
      for (int i = 0; i < ctx.num_inputs(); ++i) {
        srcs.push_back((const uint8_t*)ctx.input(i).raw());
        widths.push_back((size_t)(ctx.input(i).dim(1) * (int64_t)es));
      }
      const size_t row_bytes = (size_t)C * es;
#pragma omp parallel for schedule(static) if (N * S * C > (1 << 16))
      for (int64_t row = 0; row < N * S; ++row) {
        uint8_t* d = dst + row * row_bytes;
        for (size_t i = 0; i < srcs.size(); ++i) {
          std::memcpy(d, srcs[i] + row * widths[i], widths[i]);
          d += widths[i];
        }
      }
      return;
    }
    int64_t off = 0;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      const Tensor& x = ctx.input(i);
      const int64_t Ci = x.dim(1);
      const uint8_t* src = (const uint8_t*)x.raw();
      if (ctx.input_layout(i) == Layout::ChannelsLast) {
#pragma omp parallel for schedule(static) if (N * S * Ci > (1 << 16))
        for (int64_t row = 0; row < N * S; ++row)
          std::memcpy(dst + (row * C + off) * es, src + row * Ci * es, (size_t)(Ci * es));
      } else {
        visit_bytes(y.dtype(), [&](auto tag) {
          using T = decltype(tag);
          const T* xs = (const T*)src;
          T* ys = (T*)dst;
          for (int64_t n = 0; n < N; ++n)
#pragma omp parallel for schedule(static) if (S * Ci > (1 << 16))
            for (int64_t sp = 0; sp < S; ++sp)
              for (int64_t c = 0; c < Ci; ++c) ys[(n * S + sp) * C + off + c] = xs[(n * Ci + c) * S + sp];
        });
      }
      off += Ci;
    }
  }

  int64_t axis_;
};

}  // namespace

void register_concat(Registry& r) { r.add("Concat", 1, make_kernel<ConcatK>()); }

}  // namespace kiln
