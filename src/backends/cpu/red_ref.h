// Plain reference kernels for reductions, arg-min/max, softmax and normalisations: simple loops, double
// accumulation. Used by the ops for dtypes and layouts without a fast path, and by the unit tests to check
// the fast kernels of red_kernels.h.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "backends/cpu/red_kernels.h"
#include "kiln/tensor.h"

namespace kiln::cpu::ref {

inline bool red_needs_double(RedOp op) { return op == RedOp::L2 || op == RedOp::LogSum || op == RedOp::LogSumExp; }

// y = reduction of x (shape `shape`) over the axes where mask[d] is true; y holds the non-reduced
// elements in order. Acc: double for floating T (and for L2/LogSum/LogSumExp), int64_t for integers.
template <class T, class Acc>
void reduce(RedOp op, const T* x, const Shape& shape, const std::vector<bool>& mask, T* y) {
  const int rank = (int)shape.size();
  int64_t out_n = 1, R = 1;
  for (int d = 0; d < rank; ++d) (mask[d] ? R : out_n) *= shape[d];
  std::vector<int64_t> ostride(rank, 0);
  int64_t ostep = 1;
  for (int d = rank - 1; d >= 0; --d)
    if (!mask[d]) { ostride[d] = ostep; ostep *= shape[d]; }
  Acc init = 0;
  constexpr bool inf_ok = std::numeric_limits<T>::has_infinity || std::is_floating_point_v<Acc>;
  if (op == RedOp::Max || op == RedOp::LogSumExp) init = inf_ok ? (Acc)-INFINITY : (Acc)std::numeric_limits<T>::lowest();
  if (op == RedOp::Min) init = inf_ok ? (Acc)INFINITY : (Acc)std::numeric_limits<T>::max();
  if (op == RedOp::Prod) init = 1;
  std::vector<Acc> acc((size_t)out_n, init), mx;
  const int64_t in_n = shape_numel(shape);
  // Visits every input element with its output offset.
  auto visit = [&](auto&& f) {
    std::vector<int64_t> idx(rank, 0);
    int64_t o = 0;
    for (int64_t i = 0; i < in_n; ++i) {
      f(i, o);
      for (int d = rank - 1; d >= 0; --d) {
        o += ostride[d];
        if (++idx[d] < shape[d]) break;
        o -= ostride[d] * idx[d];
        idx[d] = 0;
      }
    }
  };
  if (op == RedOp::LogSumExp) {
    mx = acc;
    visit([&](int64_t i, int64_t o) { mx[o] = std::max<Acc>(mx[o], (Acc)x[i]); });
    std::fill(acc.begin(), acc.end(), Acc(0));
    visit([&](int64_t i, int64_t o) { if (std::isfinite((double)mx[o])) acc[o] += std::exp((double)x[i] - (double)mx[o]); });
  } else {
    visit([&](int64_t i, int64_t o) {
      Acc v = (Acc)x[i];
      switch (op) {
        case RedOp::Sum: case RedOp::Mean: case RedOp::LogSum: acc[o] += v; break;
        case RedOp::Max: acc[o] = std::max(acc[o], v); break;
        case RedOp::Min: acc[o] = std::min(acc[o], v); break;
        case RedOp::Prod: acc[o] *= v; break;
        case RedOp::L1: acc[o] += v < 0 ? -v : v; break;
        case RedOp::L2: case RedOp::SumSquare: acc[o] += v * v; break;
        default: break;
      }
    });
  }
  for (int64_t o = 0; o < out_n; ++o) {
    Acc a = acc[o];
    switch (op) {
      case RedOp::Mean:
        if constexpr (std::is_floating_point_v<Acc>) a = a / (Acc)R;
        else a = R ? a / (Acc)R : 0;
        break;
      case RedOp::L2: a = (Acc)std::sqrt((double)a); break;
      case RedOp::LogSum: a = (Acc)std::log((double)a); break;
      case RedOp::LogSumExp:
        a = std::isfinite((double)mx[o]) ? (Acc)(std::log((double)a) + (double)mx[o]) : mx[o];
        break;
      default: break;
    }
    if constexpr (std::is_integral_v<T> && std::is_floating_point_v<Acc>) y[o] = (T)std::llround((double)a);
    else y[o] = (T)a;
  }
}

// kind 0: Softmax, 1: LogSoftmax, 2: Hardmax, over the middle axis of [outer, R, inner].
template <class T>
void softmax(int kind, const T* x, T* y, int64_t outer, int64_t R, int64_t inner) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) {
      const T* xs = x + o * R * inner + j;
      T* ys = y + o * R * inner + j;
      if (R == 0) continue;
      double m = -std::numeric_limits<double>::infinity();
      int64_t arg = 0;
      for (int64_t r = 0; r < R; ++r)
        if ((double)xs[r * inner] > m) { m = (double)xs[r * inner]; arg = r; }
      if (kind == 2) {
        for (int64_t r = 0; r < R; ++r) ys[r * inner] = (T)(r == arg ? 1 : 0);
        continue;
      }
      if (std::isinf(m) && m < 0) m = 0;
      double s = 0;
      for (int64_t r = 0; r < R; ++r) s += std::exp((double)xs[r * inner] - m);
      for (int64_t r = 0; r < R; ++r) {
        double v = (double)xs[r * inner] - m;
        ys[r * inner] = (T)(kind == 1 ? v - std::log(s) : std::exp(v) / s);
      }
    }
}

// Mean and 1/sqrt(var + eps) of each row of [rows, n], in double.
inline void row_moments(const float* x, int64_t rows, int64_t n, float eps, float* mean, float* inv_std) {
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0, q = 0;
    for (int64_t i = 0; i < n; ++i) s += x[r * n + i];
    double m = n ? s / (double)n : 0;
    for (int64_t i = 0; i < n; ++i) q += (x[r * n + i] - m) * (x[r * n + i] - m);
    mean[r] = (float)m;
    inv_std[r] = (float)(1.0 / std::sqrt((n ? q / (double)n : 0) + (double)eps));
  }
}

// LayerNorm over rows of [rows, n]: y = (x - mean) * inv_std * scale + bias (bias may be null).
inline void layer_norm(const float* x, float* y, int64_t rows, int64_t n, float eps, const float* scale, const float* bias,
                       float* mean, float* inv_std) {
  row_moments(x, rows, n, eps, mean, inv_std);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) {
      double v = ((double)x[r * n + i] - mean[r]) * inv_std[r] * scale[i];
      y[r * n + i] = (float)(bias ? v + bias[i] : v);
    }
}

inline void rms_norm(const float* x, float* y, int64_t rows, int64_t n, float eps, const float* scale) {
  for (int64_t r = 0; r < rows; ++r) {
    double q = 0;
    for (int64_t i = 0; i < n; ++i) q += (double)x[r * n + i] * x[r * n + i];
    double inv = 1.0 / std::sqrt((n ? q / (double)n : 0) + (double)eps);
    for (int64_t i = 0; i < n; ++i) y[r * n + i] = (float)(x[r * n + i] * inv * scale[i]);
  }
}

// InstanceNorm on [N, C, S]: per (n, c) statistics, scale/bias per channel.
inline void instance_norm(const float* x, float* y, int64_t N, int64_t C, int64_t S, float eps, const float* scale,
                          const float* bias) {
  std::vector<float> mean(N * C), inv(N * C);
  row_moments(x, N * C, S, eps, mean.data(), inv.data());
  for (int64_t r = 0; r < N * C; ++r)
    for (int64_t i = 0; i < S; ++i)
      y[r * S + i] = (float)(((double)x[r * S + i] - mean[r]) * inv[r] * scale[r % C] + bias[r % C]);
}

}  // namespace kiln::cpu::ref
