#include "backends/cpu/mm_ref.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "kiln/status.h"

namespace kiln::mm {
namespace {

[[noreturn]] void bad(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }

template <class T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

// Calls f(T{}) for the dtypes the reference matmul/gemm support.
template <class F>
void visit_mm(DType t, F&& f) {
  switch (t) {
    case DType::Float32: f(float{}); break;
    case DType::Float64: f(double{}); break;
    case DType::Int32: f(int32_t{}); break;
    case DType::Int64: f(int64_t{}); break;
    case DType::UInt32: f(uint32_t{}); break;
    case DType::UInt64: f(uint64_t{}); break;
    default: throw Error(ErrorCode::Unsupported, std::string("type ") + dtype_name(t) + " is not supported for matrix products");
  }
}

template <class T>
void matmul_t(const T* A, const Shape& as, const T* B, const Shape& bs, T* Y, const Shape& ys) {
  const int r = (int)ys.size();
  const int64_t M = ys[r - 2], N = ys[r - 1], K = as[r - 1];
  int64_t batch = 1;
  for (int i = 0; i < r - 2; ++i) batch *= ys[i];
  // Offsets of each output batch into A and B (broadcast dims stride 0).
  std::vector<int64_t> aoff(batch), boff(batch);
  for (int64_t bi = 0; bi < batch; ++bi) {
    int64_t rem = bi, ao = 0, bo = 0, astr = M * K, bstr = K * N;
    for (int i = r - 3; i >= 0; --i) {
      int64_t idx = rem % ys[i];
      rem /= ys[i];
      if (as[i] != 1) ao += idx * astr;
      if (bs[i] != 1) bo += idx * bstr;
      astr *= as[i];
      bstr *= bs[i];
    }
    aoff[bi] = ao;
    boff[bi] = bo;
  }
  const int64_t total = batch * M;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < total; ++row) {
    const int64_t bi = row / M, m = row % M;
    const T* a = A + aoff[bi] + m * K;
    const T* b = B + boff[bi];
    T* y = Y + row * N;
    std::vector<Acc<T>> acc((size_t)N, Acc<T>(0));
    for (int64_t k = 0; k < K; ++k) {
      const Acc<T> av = (Acc<T>)a[k];
      const T* brow = b + k * N;
      for (int64_t n = 0; n < N; ++n) acc[n] += av * (Acc<T>)brow[n];
    }
    for (int64_t n = 0; n < N; ++n) y[n] = (T)acc[n];
  }
}

template <class T>
void gemm_t(const T* A, const T* B, const T* C, const Shape& cs, T* Y, int64_t M, int64_t N, int64_t K, bool ta,
            bool tb, double alpha, double beta) {
  const int64_t cm = cs.size() == 2 ? cs[0] : 1;
  const int64_t cn = cs.empty() ? 1 : cs.back();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      Acc<T> acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const T av = ta ? A[k * M + m] : A[m * K + k];
        const T bv = tb ? B[n * K + k] : B[k * N + n];
        acc += (Acc<T>)av * (Acc<T>)bv;
      }
      double v = (double)acc * alpha;
      if (C) v += beta * (double)C[(cm == 1 ? 0 : m) * cn + (cn == 1 ? 0 : n)];
      if constexpr (std::is_floating_point_v<T>) {
        Y[m * N + n] = (T)v;
      } else {
        // Integers: exact when no scaling is involved, otherwise rounded from double.
        const Acc<T> cv = C ? (Acc<T>)C[(cm == 1 ? 0 : m) * cn + (cn == 1 ? 0 : n)] : 0;
        Y[m * N + n] = (alpha == 1 && (!C || beta == 1)) ? (T)(acc + cv) : (T)std::llround(v);
      }
    }
  }
}

// ---- pooling -------------------------------------------------------------------------------------

template <class T>
void pool_t(const PoolAttrs& a, const PoolGeom& g, const T* X, T* Y, int64_t* I) {
  const int nsp = g.nsp;
  int64_t in_size = 1, out_size = 1;
  for (int i = 0; i < nsp; ++i) { in_size *= g.in[i]; out_size *= g.out[i]; }
  const int64_t planes = g.N * g.C;
  // Row-major strides of the input's spatial dims, and column-major ones for storage_order 1.
  std::vector<int64_t> rstr(nsp), cstr(nsp);
  for (int i = nsp - 1, s = 1; i >= 0; --i) { rstr[i] = s; s *= (int)g.in[i]; }
  for (int i = 0, s = 1; i < nsp; ++i) { cstr[i] = s; s *= (int)g.in[i]; }
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* x = X + pl * in_size;
    std::vector<int64_t> o(nsp, 0), start(nsp), k(nsp);
    for (int64_t oi = 0; oi < out_size; ++oi) {
      // Decode output position.
      for (int64_t rem = oi, i = nsp - 1; i >= 0; --i) { o[i] = rem % g.out[i]; rem /= g.out[i]; }
      for (int i = 0; i < nsp; ++i) start[i] = o[i] * g.strides[i] - g.pad_l[i];
      double best = -std::numeric_limits<double>::infinity(), sum = 0;
      int64_t best_idx = -1, count = 0, count_pad = 0;
      std::fill(k.begin(), k.end(), 0);
      bool done = nsp == 0;
      while (!done) {
        bool inside = true, in_padded = true;
        int64_t off = 0, coff = 0;
        for (int i = 0; i < nsp; ++i) {
          const int64_t p = start[i] + k[i] * g.dilations[i];
          if (p < 0 || p >= g.in[i]) inside = false;
          if (p < -g.pad_l[i] || p >= g.in[i] + g.pad_r[i]) in_padded = false;
          off += p * rstr[i];
          coff += p * cstr[i];
        }
        if (in_padded) ++count_pad;
        if (inside) {
          const double v = (double)x[off];
          ++count;
          if (a.kind == PoolKind::Max) {
            if (v > best || best_idx < 0) { best = v; best_idx = a.storage_order ? coff : off; }
          } else if (a.kind == PoolKind::Avg) {
            sum += v;
          } else {
            sum += std::pow(std::fabs(v), a.p);
          }
        }
        // Next kernel position.
        int i = nsp - 1;
        for (; i >= 0; --i) {
          if (++k[i] < g.kernel[i]) break;
          k[i] = 0;
        }
        if (i < 0) done = true;
      }
      double r;
      if (a.kind == PoolKind::Max) r = best;
      else if (a.kind == PoolKind::Avg) {
        const int64_t div = a.count_include_pad ? count_pad : count;
        r = div > 0 ? sum / (double)div : std::numeric_limits<double>::quiet_NaN();
      } else {
        r = std::pow(sum, 1.0 / a.p);
      }
      if constexpr (std::is_floating_point_v<T>) Y[pl * out_size + oi] = (T)r;
      else Y[pl * out_size + oi] = best_idx >= 0 ? (T)r : std::numeric_limits<T>::lowest();
      if (I) I[pl * out_size + oi] = best_idx < 0 ? -1 : pl * in_size + best_idx;
    }
  }
}

template <class T>
void global_t(PoolKind kind, double p, const T* X, T* Y, int64_t planes, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* x = X + pl * n;
    if (kind == PoolKind::Max) {
      T m = n ? x[0] : std::numeric_limits<T>::lowest();
      for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
      Y[pl] = m;
    } else if (kind == PoolKind::Avg) {
      if constexpr (std::is_same_v<T, float>) {
        // Eight independent partial sums (vectorisable), combined in double.
        float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
          for (int j = 0; j < 8; ++j) part[j] += x[i + j];
        double s = 0;
        for (int j = 0; j < 8; ++j) s += part[j];
        for (; i < n; ++i) s += x[i];
        Y[pl] = (float)(s / (double)n);
      } else {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += (double)x[i];
        Y[pl] = (T)(s / (double)n);
      }
    } else {
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += std::pow(std::fabs((double)x[i]), p);
      Y[pl] = (T)std::pow(s, 1.0 / p);
    }
  }
}

}  // namespace

void ref_matmul(DType t, const void* a, const Shape& as, const void* b, const Shape& bs, void* y, const Shape& ys) {
  if (as.size() != ys.size() || bs.size() != ys.size() || ys.size() < 2) bad("ref_matmul: operand ranks differ");
  visit_mm(t, [&](auto tag) {
    using T = decltype(tag);
    matmul_t<T>((const T*)a, as, (const T*)b, bs, (T*)y, ys);
  });
}

void ref_gemm(DType t, const void* a, const void* b, const void* c, const Shape& cs, void* y, int64_t M, int64_t N,
              int64_t K, bool trans_a, bool trans_b, double alpha, double beta) {
  visit_mm(t, [&](auto tag) {
    using T = decltype(tag);
    gemm_t<T>((const T*)a, (const T*)b, (const T*)c, cs, (T*)y, M, N, K, trans_a, trans_b, alpha, beta);
  });
}

Shape PoolGeom::out_shape() const {
  Shape s{N, C};
  s.insert(s.end(), out.begin(), out.end());
  return s;
}

int64_t pool_out_dim(const PoolAttrs& a, int i, int64_t in, int64_t* pl, int64_t* pr) {
  const int64_t k = a.kernel[i], s = a.strides[i], d = a.dilations[i];
  const int64_t dk = (k - 1) * d + 1;
  const int nsp = (int)a.kernel.size();
  if (in < 0) return -1;
  int64_t out, b = 0, e = 0;
  if (a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER") {
    out = (in + s - 1) / s;
    const int64_t total = std::max<int64_t>(0, (out - 1) * s + dk - in);
    b = a.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    e = total - b;
  } else if (a.auto_pad == "VALID") {
    out = in >= dk ? (in - dk) / s + 1 : 0;
    if (a.ceil_mode && in >= dk) out = (in - dk + s - 1) / s + 1;
  } else {
    b = a.pads[i];
    e = a.pads[i + nsp];
    const int64_t span = in + b + e - dk;
    if (span < 0) return 0;
    out = (a.ceil_mode ? (span + s - 1) / s : span / s) + 1;
    // ONNX: in ceil mode the last window must start inside the input or the left padding.
    if (a.ceil_mode && (out - 1) * s >= in + b) --out;
  }
  if (pl) *pl = b;
  if (pr) *pr = e;
  return out;
}

PoolGeom pool_geometry(const PoolAttrs& a, const Shape& xs, const std::string& who) {
  const int nsp = (int)a.kernel.size();
  if ((int)xs.size() != nsp + 2)
    bad(who + ": input of shape " + shape_str(xs) + " does not match a " + std::to_string(nsp) +
        "-D kernel (expected rank " + std::to_string(nsp + 2) + ")");
  PoolGeom g;
  g.nsp = nsp;
  g.N = xs[0];
  g.C = xs[1];
  g.kernel = a.kernel;
  g.strides = a.strides;
  g.dilations = a.dilations;
  g.in.assign(xs.begin() + 2, xs.end());
  g.out.resize(nsp);
  g.pad_l.resize(nsp);
  g.pad_r.resize(nsp);
  for (int i = 0; i < nsp; ++i) {
    g.out[i] = pool_out_dim(a, i, g.in[i], &g.pad_l[i], &g.pad_r[i]);
    if (g.out[i] <= 0)
      bad(who + ": input of shape " + shape_str(xs) + " is too small for the pooling window on spatial axis " +
          std::to_string(i) + " (kernel " + std::to_string(a.kernel[i]) + ", dilation " + std::to_string(a.dilations[i]) + ")");
  }
  return g;
}

void ref_pool(DType t, const PoolAttrs& a, const PoolGeom& g, const void* x, void* y, int64_t* indices) {
  switch (t) {
    case DType::Float32: pool_t<float>(a, g, (const float*)x, (float*)y, indices); break;
    case DType::Float64: pool_t<double>(a, g, (const double*)x, (double*)y, indices); break;
    case DType::Int8: pool_t<int8_t>(a, g, (const int8_t*)x, (int8_t*)y, indices); break;
    case DType::UInt8: pool_t<uint8_t>(a, g, (const uint8_t*)x, (uint8_t*)y, indices); break;
    default: throw Error(ErrorCode::Unsupported, std::string("type ") + dtype_name(t) + " is not supported for pooling");
  }
}

void global_pool(DType t, PoolKind kind, double p, const void* x, void* y, int64_t planes, int64_t plane_size) {
  switch (t) {
    case DType::Float32: global_t<float>(kind, p, (const float*)x, (float*)y, planes, plane_size); break;
    case DType::Float64: global_t<double>(kind, p, (const double*)x, (double*)y, planes, plane_size); break;
    case DType::Int8: global_t<int8_t>(kind, p, (const int8_t*)x, (int8_t*)y, planes, plane_size); break;
    case DType::UInt8: global_t<uint8_t>(kind, p, (const uint8_t*)x, (uint8_t*)y, planes, plane_size); break;
    default: throw Error(ErrorCode::Unsupported, std::string("type ") + dtype_name(t) + " is not supported for pooling");
  }
}

}  // namespace kiln::mm
