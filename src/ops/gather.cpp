// Gather, GatherElements, GatherND. Indices are validated before any copy (error names the node).
#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

void check_index_type(const Node& n, DType t) {
  if (t != DType::Int64 && t != DType::Int32)
    fail(n.describe() + ": indices must be int32 or int64, got " + dtype_name(t));
}

// Normalises negative indices; throws when any is outside [-n, n).
void fix_indices(const Node& n, std::vector<int64_t>& idx, int64_t limit, const char* what) {
  for (auto& v : idx) {
    if (v < -limit || v >= limit)
      fail(n.describe() + ": index " + std::to_string(v) + " is out of range for " + what + " of size " + std::to_string(limit));
    if (v < 0) v += limit;
  }
}

class GatherK : public Kernel {
 public:
  GatherK(const Node& n, int) : axis_(n.attr_int("axis", 0)) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    const TensorType& ind = ctx.input_type(1);
    check_index_type(n, ind.dtype);
    if (!x.has_shape || !ind.has_shape) { ctx.set_output(0, unknown_type(x.dtype)); return; }
    const int ax = normalize_axis(axis_, x.rank(), n);
    std::vector<Dim> out(x.dims.begin(), x.dims.begin() + ax);
    out.insert(out.end(), ind.dims.begin(), ind.dims.end());
    out.insert(out.end(), x.dims.begin() + ax + 1, x.dims.end());
    ctx.set_output(0, data::make_type(x.dtype, out));
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    const int ax = normalize_axis(axis_, x.rank(), n);
    auto idx = to_int64s(ctx.input(1));
    const int64_t N = x.shape()[ax];
    fix_indices(n, idx, N, "the gather axis");
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; ++d) outer *= x.shape()[d];
    for (int d = ax + 1; d < x.rank(); ++d) inner *= x.shape()[d];
    const size_t es = dtype_size(x.dtype());
    const int64_t row = inner * (int64_t)es, ni = (int64_t)idx.size();
    const uint8_t* src = (const uint8_t*)x.raw();
    uint8_t* dst = (uint8_t*)ctx.output(0).raw();
    if (row == 0 || ni == 0) return;
#pragma omp parallel for schedule(static) if (outer * ni * row > (1 << 18) && outer * ni > 1)
    for (int64_t w = 0; w < outer * ni; ++w) {
      const int64_t o = w / ni, j = w - o * ni;
      std::memcpy(dst + w * row, src + (o * N + idx[j]) * row, (size_t)row);
    }
  }

 private:
  int64_t axis_;
};

class GatherElementsK : public Kernel {
 public:
  GatherElementsK(const Node& n, int) : axis_(n.attr_int("axis", 0)) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    const TensorType& ind = ctx.input_type(1);
    check_index_type(n, ind.dtype);
    if (x.has_shape && ind.has_shape && x.rank() != ind.rank())
      fail(n.describe() + ": data " + x.str() + " and indices " + ind.str() + " must have the same rank");
    if (x.has_shape) normalize_axis(axis_, x.rank(), n);
    if (!ind.has_shape) { ctx.set_output(0, unknown_type(x.dtype)); return; }
    ctx.set_output(0, data::make_type(x.dtype, ind.dims));
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    const Tensor& it = ctx.input(1);
    const int r = x.rank();
    if (it.rank() != r) fail(n.describe() + ": data and indices must have the same rank");
    const int ax = normalize_axis(axis_, r, n);
    for (int d = 0; d < r; ++d)
      if (d != ax && it.shape()[d] > x.shape()[d])
        fail(n.describe() + ": indices " + shape_str(it.shape()) + " exceed data " + shape_str(x.shape()) + " on axis " + std::to_string(d));
    auto idx = to_int64s(it);
    fix_indices(n, idx, x.shape()[ax], "the gather axis");
    auto xs = strides_of(x.shape());
    const int64_t total = it.numel();
    visit_bytes(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* src = x.data<T>();
      T* dst = ctx.output(0).data<T>();
      std::vector<int64_t> pos(r, 0);
      int64_t base = 0;  // offset of pos without the axis term
      for (int64_t i = 0; i < total; ++i) {
        dst[i] = src[base + idx[i] * xs[ax]];
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
};

class GatherNDK : public Kernel {
 public:
  GatherNDK(const Node& n, int opset) : b_(opset >= 12 ? n.attr_int("batch_dims", 0) : 0) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    const TensorType& ind = ctx.input_type(1);
    if (ind.dtype != DType::Int64) fail(n.describe() + ": indices must be int64, got " + dtype_name(ind.dtype));
    if (!x.has_shape || !ind.has_shape) { ctx.set_output(0, unknown_type(x.dtype)); return; }
    const int r = x.rank(), q = ind.rank();
    if (r < 1 || q < 1) fail(n.describe() + ": data and indices must have rank >= 1");
    if (b_ < 0 || b_ >= std::min(r, q)) fail(n.describe() + ": batch_dims " + std::to_string(b_) + " must be less than both ranks");
    if (!ind.dims[q - 1].known()) {
      ctx.set_output(0, unknown_type(x.dtype));
      return;
    }
    const int64_t k = ind.dims[q - 1].value;
    if (k < 1 || k > r - b_)
      fail(n.describe() + ": last indices dimension " + std::to_string(k) + " must be in [1, " + std::to_string(r - b_) + "]");
    std::vector<Dim> out;
    for (int d = 0; d < b_; ++d) out.push_back(data::merge_equal(n, x.dims[d], ind.dims[d], "batch dimensions of data and indices"));
    for (int d = (int)b_; d < q - 1; ++d) out.push_back(ind.dims[d]);
    for (int d = (int)(b_ + k); d < r; ++d) out.push_back(x.dims[d]);
    ctx.set_output(0, data::make_type(x.dtype, out));
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    const Tensor& it = ctx.input(1);
    const int r = x.rank(), q = it.rank();
    const int64_t k = it.shape()[q - 1];
    int64_t batches = 1, tuples = 1, inner = 1;
    for (int d = 0; d < b_; ++d) batches *= x.shape()[d];
    for (int d = (int)b_; d < q - 1; ++d) tuples *= it.shape()[d];
    for (int d = (int)(b_ + k); d < r; ++d) inner *= x.shape()[d];
    std::vector<int64_t> st(k);
    {
      int64_t acc = inner;
      for (int64_t j = k - 1; j >= 0; --j) { st[j] = acc; acc *= x.shape()[b_ + j]; }
    }
    int64_t batch_elems = inner;
    for (int64_t j = 0; j < k; ++j) batch_elems *= x.shape()[b_ + j];
    const int64_t* ip = it.data<int64_t>();
    std::vector<int64_t> offs(batches * tuples);
    for (int64_t t = 0; t < batches * tuples; ++t) {
      int64_t off = (t / tuples) * batch_elems;
      for (int64_t j = 0; j < k; ++j) {
        int64_t v = ip[t * k + j], lim = x.shape()[b_ + j];
        if (v < -lim || v >= lim)
          fail(n.describe() + ": index " + std::to_string(v) + " is out of range for axis " + std::to_string(b_ + j) + " of size " + std::to_string(lim));
        off += (v < 0 ? v + lim : v) * st[j];
      }
      offs[t] = off;
    }
    const size_t es = dtype_size(x.dtype());
    const size_t row = (size_t)inner * es;
    uint8_t* dst = (uint8_t*)ctx.output(0).raw();
    const uint8_t* src = (const uint8_t*)x.raw();
    for (size_t t = 0; t < offs.size(); ++t) std::memcpy(dst + t * row, src + offs[t] * (int64_t)es, row);
  }

 private:
  int64_t b_;
};

}  // namespace

void register_gather(Registry& r) {
  r.add("Gather", 1, make_kernel<GatherK>());
  r.add("GatherElements", 11, make_kernel<GatherElementsK>());
  r.add("GatherND", 11, make_kernel<GatherNDK>());
}

}  // namespace kiln
