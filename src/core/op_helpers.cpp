// Implementation of the helpers declared in ops/common.h.
#include "ops/common.h"

namespace kiln {

std::vector<int64_t> to_int64s(const Tensor& t) {
  std::vector<int64_t> v((size_t)t.numel());
  switch (t.dtype()) {
    case DType::Int64: for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.data<int64_t>()[i]; break;
    case DType::Int32: for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.data<int32_t>()[i]; break;
    case DType::UInt8: case DType::Bool: for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.data<uint8_t>()[i]; break;
    default: fail(std::string("expected an int64 or int32 tensor, got ") + dtype_name(t.dtype()));
  }
  return v;
}

std::vector<double> to_doubles(const Tensor& t) {
  std::vector<double> v((size_t)t.numel());
  if (t.dtype() == DType::Float16) {
    for (int64_t i = 0; i < t.numel(); ++i) v[i] = half_to_float(t.data<uint16_t>()[i]);
  } else if (t.dtype() == DType::BFloat16) {
    for (int64_t i = 0; i < t.numel(); ++i) v[i] = bfloat16_to_float(t.data<uint16_t>()[i]);
  } else if (t.dtype() == DType::Bool) {
    for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.data<uint8_t>()[i];
  } else {
    visit_numeric(t.dtype(), [&](auto tag) {
      using T = decltype(tag);
      for (int64_t i = 0; i < t.numel(); ++i) v[i] = (double)t.data<T>()[i];
    });
  }
  return v;
}

TensorType broadcast_types(const Node& n, const std::vector<const TensorType*>& ins, DType out_dtype) {
  TensorType r;
  r.dtype = out_dtype;
  int rank = 0;
  for (auto* t : ins) {
    if (!t) continue;
    if (!t->has_shape) return r;  // unknown rank in, unknown out
    rank = std::max(rank, t->rank());
  }
  r.has_shape = true;
  r.dims.assign(rank, Dim::of(1));
  std::vector<bool> set(rank, false);
  for (auto* t : ins) {
    if (!t) continue;
    int off = rank - t->rank();
    for (int i = 0; i < t->rank(); ++i) {
      const Dim& d = t->dims[i];
      Dim& o = r.dims[off + i];
      if (d.known() && d.value == 1) continue;
      if (!set[off + i] || (o.known() && o.value == 1)) { o = d; set[off + i] = true; continue; }
      if (o.known() && d.known() && o.value != d.value) {
        std::string shapes;
        for (auto* x : ins) if (x) shapes += (shapes.empty() ? "" : " and ") + x->str();
        fail(n.describe() + ": shapes " + shapes + " cannot be broadcast together");
      }
      if (!o.known() && d.known()) o = d;  // a symbol meeting a number must be that number
    }
  }
  return r;
}

Shape broadcast_shapes(const Node& n, const std::vector<Shape>& shapes) {
  std::vector<TensorType> ts;
  for (auto& s : shapes) ts.push_back(TensorType::of(DType::Float32, s));
  std::vector<const TensorType*> ps;
  for (auto& t : ts) ps.push_back(&t);
  return broadcast_types(n, ps, DType::Float32).concrete();
}

std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size());
  int64_t acc = 1;
  for (int i = (int)s.size() - 1; i >= 0; --i) { st[i] = acc; acc *= s[i]; }
  return st;
}

std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out_shape) {
  std::vector<int64_t> st(out_shape.size(), 0);
  auto ins = strides_of(in);
  int off = (int)out_shape.size() - (int)in.size();
  for (size_t i = 0; i < in.size(); ++i) st[off + i] = in[i] == 1 ? 0 : ins[i];
  return st;
}

}  // namespace kiln
