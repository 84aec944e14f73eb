// Smaller data operators: ConstantOfShape, Dropout (inference), OneHot, NonZero, Trilu, EyeLike,
// DepthToSpace, SpaceToDepth, Compress, ReverseSequence.
#include <cmath>

#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

using data::make_type;

// Writes `v` as one element of dtype t into *out (raw bytes).
void store_value(DType t, double v, void* out, const Node& n) {
  if (t == DType::Float16) { uint16_t h = float_to_half((float)v); std::memcpy(out, &h, 2); return; }
  if (t == DType::BFloat16) { uint16_t h = float_to_bfloat16((float)v); std::memcpy(out, &h, 2); return; }
  if (t == DType::Bool) { uint8_t b = v != 0; std::memcpy(out, &b, 1); return; }
  visit_numeric(t, [&](auto tag) {
    using T = decltype(tag);
    T x = (T)v;
    std::memcpy(out, &x, sizeof(T));
  });
}

// Output `i` if it was preallocated with `shape`, otherwise a fresh allocation.
Tensor& output_for(RunContext& ctx, int i, DType dt, const Shape& shape) {
  try {
    Tensor& t = ctx.output(i);
    if (t.shape() == shape && t.dtype() == dt) return t;
  } catch (const Error&) {
  }
  return ctx.allocate_output(i, dt, shape);
}

void fill_bytes(Tensor& y, const void* elem) {
  const size_t es = dtype_size(y.dtype());
  uint8_t* p = (uint8_t*)y.raw();
  for (int64_t i = 0; i < y.numel(); ++i) std::memcpy(p + i * (int64_t)es, elem, es);
}

// ---- ConstantOfShape ----
class ConstantOfShapeK : public Kernel {
 public:
  ConstantOfShapeK(const Node& n, int) {
    if (const Tensor* t = n.attr_tensor("value")) {
      if (t->numel() != 1) fail(n.describe() + ": value must hold exactly one element");
      value_ = *t;
    } else {
      value_ = Tensor(DType::Float32, {1});
    }
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& st = ctx.input_type(0);
    if (st.dtype != DType::Int64) fail(n.describe() + ": the shape input must be int64");
    if (auto s = data::known_ints(ctx, 0)) {
      for (int64_t v : *s)
        if (v < 0) fail(n.describe() + ": negative dimension " + std::to_string(v));
      ctx.set_output(0, value_.dtype(), *s);
    } else if (st.has_shape && st.rank() == 1 && st.dims[0].known()) {
      ctx.set_output(0, make_type(value_.dtype(), data::unknown_dims((int)st.dims[0].value)));
    } else {
      ctx.set_output(0, unknown_type(value_.dtype()));
    }
  }
  void run(RunContext& ctx) override {
    auto s = to_int64s(ctx.input(0));
    fill_bytes(output_for(ctx, 0, value_.dtype(), s), value_.raw());
  }

 private:
  Tensor value_;
};

// ---- Dropout (inference only) ----
class DropoutK : public Kernel {
 public:
  DropoutK(const Node& n, int opset) : opset_(opset), ratio_(n.attr_float("ratio", 0.5f)) {
    if (opset < 7 && n.attr_int("is_test", 0) == 0 && ratio_ > 0)
      unsupported(n.describe() + ": Dropout in training mode (is_test=0) is not supported");
  }
  DType mask_type(DType x) const { return opset_ >= 10 ? DType::Bool : x; }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    ctx.set_output(0, x);
    if (ctx.num_outputs() > 1) {
      TensorType m = x;
      m.dtype = mask_type(x.dtype);
      ctx.set_output(1, m);
    }
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    if (opset_ >= 12 && ctx.has_input(2)) {
      const Tensor& tm = ctx.input(2);
      bool training = tm.numel() > 0 && to_doubles(tm)[0] != 0;
      double ratio = ctx.has_input(1) ? to_doubles(ctx.input(1))[0] : 0.5;
      if (training && ratio != 0)
        unsupported(n.describe() + ": Dropout with training_mode=true and ratio " + std::to_string(ratio) +
                    " is random; kiln only runs inference");
    }
    Tensor& y = ctx.output(0);
    if (x.nbytes()) std::memcpy(y.raw(), x.raw(), x.nbytes());
    if (ctx.num_outputs() > 1 && ctx.has_output(1)) {
      Tensor& m = ctx.output(1);
      uint64_t one = 0;
      store_value(m.dtype(), 1.0, &one, n);
      fill_bytes(m, &one);
    }
  }

 private:
  int opset_;
  float ratio_;
};

// ---- OneHot ----
class OneHotK : public Kernel {
 public:
  OneHotK(const Node& n, int) : axis_(n.attr_int("axis", -1)) {}
  static int64_t depth_of(const Node& n, const Tensor& d) {
    if (d.numel() != 1) fail(n.describe() + ": depth must hold exactly one value");
    double v = to_doubles(d)[0];
    if (!(v >= 1)) fail(n.describe() + ": depth must be positive, got " + std::to_string(v));
    return (int64_t)v;
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& ind = ctx.input_type(0);
    const DType vt = ctx.input_type(2).dtype;
    if (!ind.has_shape) { ctx.set_output(0, unknown_type(vt)); return; }
    const int r = ind.rank() + 1;
    const int ax = normalize_axis(axis_, r, n);
    std::vector<Dim> out = ind.dims;
    const Tensor* d = ctx.input_value(1);
    out.insert(out.begin() + ax, d ? Dim::of(depth_of(n, *d)) : Dim());
    ctx.set_output(0, make_type(vt, out));
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& ind = ctx.input(0);
    const int64_t depth = depth_of(n, ctx.input(1));
    const Tensor& vals = ctx.input(2);
    if (vals.numel() != 2) fail(n.describe() + ": values must hold [off_value, on_value]");
    const int ax = normalize_axis(axis_, ind.rank() + 1, n);
    auto idx = to_doubles(ind);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; ++d) outer *= ind.shape()[d];
    for (int d = ax; d < ind.rank(); ++d) inner *= ind.shape()[d];
    Tensor& y = ctx.output(0);
    const size_t es = dtype_size(vals.dtype());
    const uint8_t* off = (const uint8_t*)vals.raw();
    const uint8_t* on = off + es;
    fill_bytes(y, off);
    uint8_t* p = (uint8_t*)y.raw();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        int64_t v = (int64_t)idx[o * inner + i];
        if (v < 0) v += depth;
        if (v < 0 || v >= depth) continue;
        std::memcpy(p + ((o * depth + v) * inner + i) * (int64_t)es, on, es);
      }
  }

 private:
  int64_t axis_;
};

// ---- NonZero ----
// Nonzero test on raw element bits (negative zero counts as zero for floats).
template <class T>
bool nonzero(T v, DType dt) {
  if constexpr (sizeof(T) == 4) {
    if (dt == DType::Float32) { float f; std::memcpy(&f, &v, 4); return f != 0; }
  } else if constexpr (sizeof(T) == 8) {
    if (dt == DType::Float64) { double f; std::memcpy(&f, &v, 8); return f != 0; }
  } else if constexpr (sizeof(T) == 2) {
    if (dt == DType::Float16 || dt == DType::BFloat16) return (v & 0x7fff) != 0;
  }
  return v != 0;
}

int64_t count_nonzero(const Tensor& x) {
  int64_t c = 0;
  visit_bytes(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) c += nonzero(p[i], x.dtype());
  });
  return c;
}

class NonZeroK : public Kernel {
 public:
  NonZeroK(const Node&, int) {}
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!x.has_shape) { ctx.set_output(0, make_type(DType::Int64, {Dim(), Dim()})); return; }
    const Tensor* v = ctx.input_value(0);
    ctx.set_output(0, make_type(DType::Int64, {Dim::of(std::max(x.rank(), 1)), v ? Dim::of(count_nonzero(*v)) : Dim()}));
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const int r = x.rank();
    const int64_t nnz = count_nonzero(x);
    Tensor& y = output_for(ctx, 0, DType::Int64, {std::max(r, 1), nnz});
    int64_t* out = y.data<int64_t>();
    int64_t j = 0;
    visit_bytes(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* p = x.data<T>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        if (!nonzero(p[i], x.dtype())) continue;
        int64_t rem = i;
        for (int d = r - 1; d >= 0; --d) {
          out[d * nnz + j] = rem % x.shape()[d];
          rem /= x.shape()[d];
        }
        if (r == 0) out[j] = 0;
        ++j;
      }
    });
  }
};

// ---- Trilu ----
class TriluK : public Kernel {
 public:
  TriluK(const Node& n, int) : upper_(n.attr_int("upper", 1) != 0) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (x.has_shape && x.rank() < 2) fail(n.describe() + ": input must have rank >= 2, got " + x.str());
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    int64_t k = 0;
    if (ctx.has_input(1)) {
      auto kv = to_int64s(ctx.input(1));
      if (kv.size() != 1) fail(n.describe() + ": k must be a scalar");
      k = kv[0];
    }
    Tensor& y = ctx.output(0);
    const int64_t R = x.dim(-2), C = x.dim(-1), mats = (R > 0 && C > 0) ? x.numel() / (R * C) : 0;
    const size_t es = dtype_size(x.dtype());
    std::memset(y.raw(), 0, y.nbytes());
    const uint8_t* s = (const uint8_t*)x.raw();
    uint8_t* d = (uint8_t*)y.raw();
    for (int64_t m = 0; m < mats; ++m)
      for (int64_t i = 0; i < R; ++i) {
        // Kept columns: upper keeps j >= i + k, lower keeps j <= i + k.
        int64_t j0 = upper_ ? std::clamp<int64_t>(i + k, 0, C) : 0;
        int64_t j1 = upper_ ? C : std::clamp<int64_t>(i + k + 1, 0, C);
        if (j1 > j0) {
          const int64_t at = (m * R + i) * C + j0;
          std::memcpy(d + at * (int64_t)es, s + at * (int64_t)es, (size_t)(j1 - j0) * es);
        }
      }
  }

 private:
  bool upper_;
};

// ---- EyeLike ----
class EyeLikeK : public Kernel {
 public:
  EyeLikeK(const Node& n, int) : k_(n.attr_int("k", 0)), dtype_((DType)n.attr_int("dtype", 0)) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    DType dt = dtype_ == DType::Undefined ? x.dtype : dtype_;
    if (!dtype_supported(dt)) unsupported(n.describe() + ": unsupported output dtype");
    if (x.has_shape && x.rank() != 2) fail(n.describe() + ": input must be 2-D, got " + x.str());
    if (!x.has_shape) { ctx.set_output(0, make_type(dt, {Dim(), Dim()})); return; }
    ctx.set_output(0, make_type(dt, x.dims));
  }
  void run(RunContext& ctx) override {
    Tensor& y = ctx.output(0);
    uint64_t one = 0;
    store_value(y.dtype(), 1.0, &one, ctx.node());
    const size_t es = dtype_size(y.dtype());
    const int64_t R = y.dim(0), C = y.dim(1);
    std::memset(y.raw(), 0, y.nbytes());
    for (int64_t i = 0; i < R; ++i) {
      int64_t j = i + k_;
      if (j >= 0 && j < C) std::memcpy((uint8_t*)y.raw() + (i * C + j) * (int64_t)es, &one, es);
    }
  }

 private:
  int64_t k_;
  DType dtype_;
};

// ---- DepthToSpace / SpaceToDepth ----
class DepthSpaceK : public Kernel {
 public:
  DepthSpaceK(const Node& n, int, bool to_space) : to_space_(to_space), b_(n.required_int("blocksize")) {
    if (b_ < 1) fail(n.describe() + ": blocksize must be positive");
    std::string m = n.attr_string("mode", "DCR");
    if (to_space && m != "DCR" && m != "CRD") fail(n.describe() + ": mode must be DCR or CRD, got '" + m + "'");
    crd_ = to_space && m == "CRD";
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (!x.has_shape) { ctx.set_output(0, make_type(x.dtype, data::unknown_dims(4))); return; }
    if (x.rank() != 4) fail(n.describe() + ": input must be 4-D (NCHW), got " + x.str());
    std::vector<Dim> o = x.dims;
    const int64_t bb = b_ * b_;
    auto scale = [&](const Dim& d, bool mul, int64_t f, const char* what) {
      if (!d.known()) return Dim();
      if (!mul && d.value % f != 0)
        fail(n.describe() + ": " + what + " " + std::to_string(d.value) + " of " + x.str() + " is not divisible by " + std::to_string(f));
      return Dim::of(mul ? d.value * f : d.value / f);
    };
    if (to_space_) {
      o[1] = scale(x.dims[1], false, bb, "channels");
      o[2] = scale(x.dims[2], true, b_, "height");
      o[3] = scale(x.dims[3], true, b_, "width");
    } else {
      o[1] = scale(x.dims[1], true, bb, "channels");
      o[2] = scale(x.dims[2], false, b_, "height");
      o[3] = scale(x.dims[3], false, b_, "width");
    }
    ctx.set_output(0, make_type(x.dtype, o));
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), b = b_;
    Shape s6;
    std::vector<int> perm;
    if (to_space_) {
      if (crd_) { s6 = {N, C / (b * b), b, b, H, W}; perm = {0, 1, 4, 2, 5, 3}; }
      else { s6 = {N, b, b, C / (b * b), H, W}; perm = {0, 3, 4, 1, 5, 2}; }
    } else {
      s6 = {N, C, H / b, b, W / b, b};
      perm = {0, 3, 5, 1, 2, 4};
    }
    data::transpose(ctx.output(0).raw(), x.raw(), s6, perm, dtype_size(x.dtype()));
  }

 private:
  bool to_space_;
  int64_t b_;
  bool crd_ = false;
};

// ---- Compress ----
class CompressK : public Kernel {
 public:
  CompressK(const Node& n, int) : has_axis_(n.has_attr("axis")), axis_(n.attr_int("axis", 0)) {}
  Shape out_shape(const Node& n, const Shape& xs, const Tensor& cond, std::vector<int64_t>* sel) const {
    if (cond.rank() != 1) fail(n.describe() + ": condition must be 1-D");
    const int64_t len = has_axis_ ? xs[normalize_axis(axis_, (int)xs.size(), n)] : shape_numel(xs);
    if (cond.numel() > len)
      fail(n.describe() + ": condition has " + std::to_string(cond.numel()) + " entries for an axis of size " + std::to_string(len));
    auto c = to_doubles(cond);
    sel->clear();
    for (int64_t i = 0; i < (int64_t)c.size(); ++i)
      if (c[i] != 0) sel->push_back(i);
    if (!has_axis_) return {(int64_t)sel->size()};
    Shape o = xs;
    o[normalize_axis(axis_, (int)xs.size(), n)] = (int64_t)sel->size();
    return o;
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    const Tensor* c = ctx.input_value(1);
    if (x.fully_known() && c) {
      std::vector<int64_t> sel;
      ctx.set_output(0, x.dtype, out_shape(n, x.concrete(), *c, &sel));
      return;
    }
    if (!has_axis_) { ctx.set_output(0, make_type(x.dtype, {Dim()})); return; }
    if (data::rank_unknown(ctx, 0, 0, x.dtype)) return;
    std::vector<Dim> o = x.dims;
    o[normalize_axis(axis_, x.rank(), n)] = Dim();
    ctx.set_output(0, make_type(x.dtype, o));
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    std::vector<int64_t> sel;
    Shape os = out_shape(n, x.shape(), ctx.input(1), &sel);
    Tensor& y = output_for(ctx, 0, x.dtype(), os);
    const size_t es = dtype_size(x.dtype());
    int64_t outer = 1, len = x.numel(), inner = 1;
    if (has_axis_) {
      const int ax = normalize_axis(axis_, x.rank(), n);
      len = x.shape()[ax];
      outer = inner = 1;
      for (int d = 0; d < ax; ++d) outer *= x.shape()[d];
      for (int d = ax + 1; d < x.rank(); ++d) inner *= x.shape()[d];
    }
    const int64_t row = inner * (int64_t)es, ns = (int64_t)sel.size();
    const uint8_t* s = (const uint8_t*)x.raw();
    uint8_t* d = (uint8_t*)y.raw();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < ns; ++j) std::memcpy(d + (o * ns + j) * row, s + (o * len + sel[j]) * row, (size_t)row);
  }

 private:
  bool has_axis_;
  int64_t axis_;
};

// ---- ReverseSequence ----
class ReverseSequenceK : public Kernel {
 public:
  ReverseSequenceK(const Node& n, int) : batch_axis_(n.attr_int("batch_axis", 1)), time_axis_(n.attr_int("time_axis", 0)) {
    if (!((batch_axis_ == 0 && time_axis_ == 1) || (batch_axis_ == 1 && time_axis_ == 0)))
      fail(n.describe() + ": batch_axis and time_axis must be 0 and 1 (in either order)");
  }
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    if (x.has_shape && x.rank() < 2) fail(n.describe() + ": input must have rank >= 2, got " + x.str());
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    auto lens = to_int64s(ctx.input(1));
    const int64_t B = x.dim((int)batch_axis_), T = x.dim((int)time_axis_);
    if ((int64_t)lens.size() != B) fail(n.describe() + ": sequence_lens has " + std::to_string(lens.size()) + " entries for batch " + std::to_string(B));
    for (auto l : lens)
      if (l < 0 || l > T) fail(n.describe() + ": sequence length " + std::to_string(l) + " is outside [0, " + std::to_string(T) + "]");
    int64_t inner = 1;
    for (int d = 2; d < x.rank(); ++d) inner *= x.shape()[d];
    const size_t row = (size_t)inner * dtype_size(x.dtype());
    auto xs = strides_of(x.shape());
    const int64_t sb = xs[batch_axis_], st = xs[time_axis_];
    const int64_t es = (int64_t)dtype_size(x.dtype());
    const uint8_t* s = (const uint8_t*)x.raw();
    uint8_t* d = (uint8_t*)ctx.output(0).raw();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t src_t = t < lens[b] ? lens[b] - 1 - t : t;
        std::memcpy(d + (b * sb + t * st) * es, s + (b * sb + src_t * st) * es, row);
      }
  }

 private:
  int64_t batch_axis_, time_axis_;
};

}  // namespace

void register_misc_data(Registry& r) {
  r.add("ConstantOfShape", 9, make_kernel<ConstantOfShapeK>());
  r.add("Dropout", 1, make_kernel<DropoutK>());
  r.add("OneHot", 9, make_kernel<OneHotK>());
  r.add("NonZero", 9, make_kernel<NonZeroK>());
  r.add("Trilu", 14, make_kernel<TriluK>());
  r.add("EyeLike", 9, make_kernel<EyeLikeK>());
  r.add("DepthToSpace", 1, [](const Node& n, int o) -> std::unique_ptr<Kernel> { return std::make_unique<DepthSpaceK>(n, o, true); });
  r.add("SpaceToDepth", 1, [](const Node& n, int o) -> std::unique_ptr<Kernel> { return std::make_unique<DepthSpaceK>(n, o, false); });
  r.add("Compress", 9, make_kernel<CompressK>());
  r.add("ReverseSequence", 10, make_kernel<ReverseSequenceK>());
}

}  // namespace kiln
