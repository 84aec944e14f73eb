// Resampling as nnU-Net's resample_data_or_seg_to_shape (is_seg = False), segmentation-pipeline.md section 6.
//
// skimage.transform.resize(x, shape, order, mode='edge', anti_aliasing=False) is ndi.zoom(grid_mode=True,
// mode='nearest') followed by clipping to the input's [min, max]. It is computed here with the separable
// formulation of section 6.4: one 1D pass per axis (axis 0, then 1, then 2) in double, each with precomputed
// per-output source indices and weights; order 3 prefilters every (12-voxel edge-extended) line with scipy's
// cubic B-spline filter and its mode-'nearest' (reflect) initial conditions.
#include "pipeline/seg/resample.h"

// No fused multiply-adds in this file (GCC contracts a*b+c by default in GNU mode with -march=haswell): scipy's
// interpolation rounds every product and sum separately, and with FMA the linear (order 1) interpolation of
// float16 logits landed 1 half-ulp off numpy's result on a few exact rounding midpoints. Without contraction the
// float16 references of the unit tests are reproduced bit for bit.
#pragma GCC optimize("fp-contract=off")

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace kiln::seg {

Shape3 compute_new_shape(const Shape3& shape, const Spacing& old_spacing, const Spacing& new_spacing) {
  Shape3 out{};
  for (int d = 0; d < 3; ++d) {
    if (!(old_spacing[d] > 0) || !(new_spacing[d] > 0) || !std::isfinite(old_spacing[d]) ||
        !std::isfinite(new_spacing[d]))
      seg_fail(ErrorCode::InvalidArgument, "compute_new_shape: spacing of axis " + std::to_string(d) +
                                               " must be finite and > 0 (old " + std::to_string(old_spacing[d]) +
                                               ", new " + std::to_string(new_spacing[d]) + ")");
    const double v = old_spacing[d] / new_spacing[d] * static_cast<double>(shape[d]);
    out[d] = static_cast<int64_t>(std::nearbyint(v));  // default rounding mode: half to even, like Python round
  }
  return out;
}

namespace {

constexpr double kAnisoThreshold = 3.0;

bool do_separate_z(const Spacing& s) {
  const double mx = std::max({s[0], s[1], s[2]}), mn = std::min({s[0], s[1], s[2]});
  return (mx / mn) > kAnisoThreshold;  // strict
}

std::vector<int> lowres_axes(const Spacing& s) {
  const double mx = std::max({s[0], s[1], s[2]});
  std::vector<int> axes;
  for (int d = 0; d < 3; ++d)
    if (mx / s[d] == 1.0) axes.push_back(d);  // exact comparison, as np.where(max / spacing == 1)
  return axes;
}

}  // namespace

SeparateZ decide_separate_z(const Spacing& current, const Spacing& target, std::optional<bool> force_separate_z) {
  for (int d = 0; d < 3; ++d)
    if (!(current[d] > 0) || !(target[d] > 0))
      seg_fail(ErrorCode::InvalidArgument, "decide_separate_z: spacings must be > 0 (axis " + std::to_string(d) + ")");
  SeparateZ r;
  std::vector<int> axes;
  if (force_separate_z.has_value()) {
    r.enabled = *force_separate_z;
    if (r.enabled) axes = lowres_axes(current);
  } else if (do_separate_z(current)) {
    r.enabled = true;
    axes = lowres_axes(current);
  } else if (do_separate_z(target)) {
    r.enabled = true;
    axes = lowres_axes(target);
  }
  if (r.enabled) {
    if (axes.size() == 1) {
      r.axis = axes[0];
    } else {  // two or three tied low-resolution axes: no separate z
      r.enabled = false;
      r.axis = -1;
    }
  }
  return r;
}

namespace {

// ---- float16 storage -------------------------------------------------------------------------------------------
// double -> IEEE half, round to nearest even, directly from double (as numpy's float64 -> float16 cast).
uint16_t double_to_half(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  const uint16_t sign = static_cast<uint16_t>((bits >> 48) & 0x8000);
  const uint64_t absb = bits & 0x7fffffffffffffffULL;
  const double a = std::fabs(d);
  if (std::isnan(d)) return sign | 0x7e00;
  if (a >= 65520.0) return sign | 0x7c00;  // 65520 is the midpoint 65504..65536 and ties to even = inf
  if (a < 0x1p-14) {                       // subnormal (or rounds up to the smallest normal: q == 1024)
    const double q = std::nearbyint(a * 0x1p24);  // exact scaling, round half to even
    return sign | static_cast<uint16_t>(q);
  }
  // normal: keep 10 of the 52 mantissa bits, round half to even on the 42 dropped ones (a carry into the
  // exponent field is the correct result)
  const uint32_t e = static_cast<uint32_t>(absb >> 52) - 1023 + 15;
  uint32_t h = (e << 10) | static_cast<uint32_t>((absb >> 42) & 0x3ff);
  const uint64_t rem = absb & ((1ULL << 42) - 1), halfway = 1ULL << 41;
  if (rem > halfway || (rem == halfway && (h & 1))) ++h;
  return sign | static_cast<uint16_t>(h);
}

// ---- one separable 1D pass ---------------------------------------------------------------------------------------
constexpr int kPad = 12;  // scipy's _prepad_for_spline_filter for mode 'nearest'

struct AxisTable {
  int order = 3;
  int64_t n = 0, m = 0;
  std::vector<int64_t> idx;   // per output: first source index (into the extended line for order 3)
  std::vector<double> w;      // per output: `taps` weights
  int taps = 4;
};

AxisTable make_table(int64_t n, int64_t m, int order) {
  AxisTable t;
  t.order = order, t.n = n, t.m = m;
  t.taps = order == 3 ? 4 : order == 1 ? 2 : 1;
  t.idx.resize(m);
  t.w.resize(m * t.taps);
  const double scale = static_cast<double>(n) / static_cast<double>(m);
  for (int64_t o = 0; o < m; ++o) {
    const double c = (static_cast<double>(o) + 0.5) * scale - 0.5;
    double* w = &t.w[o * t.taps];
    if (order == 3) {
      const double f = std::floor(c);
      const double u = c - f;
      const double u2 = u * u, u3 = u2 * u;
      w[0] = (1.0 - u) * (1.0 - u) * (1.0 - u) / 6.0;
      w[1] = (3.0 * u3 - 6.0 * u2 + 4.0) / 6.0;
      w[2] = (-3.0 * u3 + 3.0 * u2 + 3.0 * u + 1.0) / 6.0;
      w[3] = u3 / 6.0;
      // coefficients at extended indices f-1+12 .. f+2+12; c is in [-0.5, n-0.5], so they lie in [10, n+13]
      t.idx[o] = static_cast<int64_t>(f) - 1 + kPad;
    } else if (order == 1) {
      const double cc = std::min(std::max(c, 0.0), static_cast<double>(n - 1));
      const double f = std::floor(cc);
      const int64_t i0 = static_cast<int64_t>(f);
      t.idx[o] = i0;
      w[1] = cc - f;
      w[0] = 1.0 - w[1];
    } else {
      int64_t i = static_cast<int64_t>(std::floor(c + 0.5));
      t.idx[o] = std::min(std::max<int64_t>(i, 0), n - 1);
      w[0] = 1.0;
    }
  }
  return t;
}

// scipy's cubic B-spline prefilter (pole z = sqrt(3) - 2) over the first dimension of an (N, B) block, every
// column independently, with the mode-'nearest' (reflect) initial conditions of ni_splines.c (section 6.4).
void prefilter_cubic(double* c, int64_t N, int64_t B) {
  const double z = std::sqrt(3.0) - 2.0;
  const double gain = (1.0 - z) * (1.0 - 1.0 / z);
  for (int64_t i = 0; i < N * B; ++i) c[i] *= gain;
  // causal initial value: c0 + z/(1 - z^2N) * (c0 + z^N c[N-1] + sum_{i=1..N-1} z^i (c[i] + z^N c[N-1-i]))
  const double zN = std::pow(z, static_cast<double>(N));
  double acc_small[256];
  std::vector<double> acc_big;
  double* acc = acc_small;
  if (B > 256) {
    acc_big.resize(B);
    acc = acc_big.data();
  }
  for (int64_t j = 0; j < B; ++j) acc[j] = c[j] + zN * c[(N - 1) * B + j];
  double zi = z;
  for (int64_t i = 1; i < N; ++i) {
    const double* ci = c + i * B;
    const double* cr = c + (N - 1 - i) * B;
    for (int64_t j = 0; j < B; ++j) acc[j] += zi * (ci[j] + zN * cr[j]);
    zi *= z;
  }
  const double k0 = z / (1.0 - zN * zN);
  for (int64_t j = 0; j < B; ++j) c[j] = c[j] + k0 * acc[j];
  for (int64_t i = 1; i < N; ++i) {
    double* ci = c + i * B;
    const double* cp = ci - B;
    for (int64_t j = 0; j < B; ++j) ci[j] += z * cp[j];
  }
  const double kN = z / (z - 1.0);
  for (int64_t j = 0; j < B; ++j) c[(N - 1) * B + j] *= kN;
  for (int64_t i = N - 2; i >= 0; --i) {
    double* ci = c + i * B;
    const double* cn = ci + B;
    for (int64_t j = 0; j < B; ++j) ci[j] = z * (cn[j] - ci[j]);
  }
}

// Gathers an (n, bw) block of the source, column j being line (ob, j0 + j) of `src` (outer, n, inner), into rows
// `row0`.. of `blk` with row stride bw; rows outside [0, n) repeat the edge samples (np.pad mode 'edge').
// When inner == 1 the "columns" are consecutive lines (a small transpose), so every pass runs vectorised over
// columns, also along the contiguous last axis.

// src (outer, n, inner) -> dst (outer, m, inner), both double, along the middle dimension.
void resample_pass(const double* src, double* dst, int64_t outer, int64_t inner, const AxisTable& t) {
  const int64_t n = t.n, m = t.m;
  // Tasks: blocks of up to B columns. For inner > 1 a task is (outer index, block of inner columns); for inner == 1
  // a task is a group of up to B consecutive lines. Each output value is computed by exactly one task, in the same
  // order whatever the thread count (deterministic).
  const bool lines = inner == 1;
  const int64_t B = lines ? 32 : (inner >= 64 ? 256 : inner);
  const int64_t ncols = lines ? outer : inner;
  const int64_t nblk = (ncols + B - 1) / B;
  const int64_t tasks = lines ? nblk : outer * nblk;
  const int64_t N = t.order == 3 ? n + 2 * kPad : n;
  const int64_t off = t.order == 3 ? kPad : 0;
#pragma omp parallel
  {
    std::vector<double> ext, res;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t ob = lines ? task * B : task / nblk;
      const int64_t j0 = lines ? 0 : (task % nblk) * B;
      const int64_t bw = lines ? std::min(B, outer - ob) : std::min(B, inner - j0);
      ext.resize(static_cast<size_t>(N * bw));
      // gather (with edge extension for order 3)
      if (!lines) {
        const double* s = src + ob * n * inner + j0;
        for (int64_t i = 0; i < N; ++i) {
          const int64_t si = std::min(std::max<int64_t>(i - off, 0), n - 1);
          std::memcpy(&ext[i * bw], s + si * inner, sizeof(double) * (size_t)bw);
        }
      } else {
        for (int64_t j = 0; j < bw; ++j) {
          const double* s = src + (ob + j) * n;
          for (int64_t i = 0; i < N; ++i) ext[i * bw + j] = s[std::min(std::max<int64_t>(i - off, 0), n - 1)];
        }
      }
      if (t.order == 3) prefilter_cubic(ext.data(), N, bw);
      // evaluate into res (m, bw)
      res.resize(static_cast<size_t>(m * bw));
      for (int64_t o = 0; o < m; ++o) {
        double* dr = &res[o * bw];
        if (t.order == 3) {
          const double* w = &t.w[o * 4];
          const double* c0 = &ext[t.idx[o] * bw];
          const double *c1 = c0 + bw, *c2 = c1 + bw, *c3 = c2 + bw;
          for (int64_t j = 0; j < bw; ++j) dr[j] = w[0] * c0[j] + w[1] * c1[j] + w[2] * c2[j] + w[3] * c3[j];
        } else if (t.order == 1) {
          const int64_t i0 = t.idx[o], i1 = std::min(i0 + 1, n - 1);
          const double w0 = t.w[o * 2], w1 = t.w[o * 2 + 1];
          const double *a = &ext[i0 * bw], *b = &ext[i1 * bw];
          for (int64_t j = 0; j < bw; ++j) dr[j] = w0 * a[j] + w1 * b[j];
        } else {
          std::memcpy(dr, &ext[t.idx[o] * bw], sizeof(double) * (size_t)bw);
        }
      }
      // scatter
      if (!lines) {
        double* d = dst + ob * m * inner + j0;
        for (int64_t o = 0; o < m; ++o) std::memcpy(d + o * inner, &res[o * bw], sizeof(double) * (size_t)bw);
      } else {
        for (int64_t j = 0; j < bw; ++j) {
          double* d = dst + (ob + j) * m;
          for (int64_t o = 0; o < m; ++o) d[o] = res[o * bw + j];
        }
      }
    }
  }
}

// Resamples a double volume of shape `dims` along each axis listed in `axes` (in that order) to `target`.
std::vector<double> resample_axes(std::vector<double> v, Shape3& dims, const Shape3& target,
                                  const std::vector<int>& axes, int order) {
  for (int a : axes) {
    const int64_t outer = a == 0 ? 1 : a == 1 ? dims[0] : dims[0] * dims[1];
    const int64_t inner = a == 0 ? dims[1] * dims[2] : a == 1 ? dims[2] : 1;
    AxisTable t = make_table(dims[a], target[a], order);
    std::vector<double> out(static_cast<size_t>(outer * target[a] * inner));
    resample_pass(v.data(), out.data(), outer, inner, t);
    v.swap(out);
    dims[a] = target[a];
  }
  return v;
}

void check_order(int order, const char* what, bool allow3) {
  if (!(order == 0 || order == 1 || (allow3 && order == 3)))
    seg_fail(ErrorCode::Unsupported, std::string("resample_to_shape: ") + what + " = " + std::to_string(order) +
                                         " is not supported (expected " + (allow3 ? "0, 1 or 3" : "0 or 1") + ")");
}

}  // namespace

Tensor resample_to_shape(const Tensor& data, const Shape3& new_shape, const Spacing& current_spacing,
                         const Spacing& new_spacing, const ResampleOptions& opt) {
  if (data.rank() != 4 || (data.dtype() != DType::Float32 && data.dtype() != DType::Float16))
    seg_fail(ErrorCode::InvalidArgument, "resample_to_shape: expected a float32 or float16 (C, X, Y, Z) volume, got " +
                                             std::string(dtype_name(data.dtype())) + " " + shape_str(data.shape()));
  check_order(opt.order, "order", true);
  check_order(opt.order_z, "order_z", false);
  const Shape3 old_shape = spatial_shape(data);
  for (int d = 0; d < 3; ++d) {
    if (new_shape[d] <= 0)
      seg_fail(ErrorCode::InvalidArgument, "resample_to_shape: target shape must be positive, got axis " +
                                               std::to_string(d) + " = " + std::to_string(new_shape[d]));
    if (old_shape[d] <= 0)
      seg_fail(ErrorCode::InvalidArgument, "resample_to_shape: input has an empty axis " + std::to_string(d));
  }
  if (old_shape == new_shape) return data;  // nnU-Net returns the array untouched (no dtype change, no copy)

  const SeparateZ sz = decide_separate_z(current_spacing, new_spacing, opt.force_separate_z);
  const int64_t C = data.dim(0);
  const int64_t vol = old_shape[0] * old_shape[1] * old_shape[2];
  const int64_t new_vol = new_shape[0] * new_shape[1] * new_shape[2];
  const bool half = data.dtype() == DType::Float16;
  Tensor out(data.dtype(), {C, new_shape[0], new_shape[1], new_shape[2]});

  for (int64_t c = 0; c < C; ++c) {
    std::vector<double> v(static_cast<size_t>(vol));
    if (half) {
      const uint16_t* s = data.data<uint16_t>() + c * vol;
      for (int64_t i = 0; i < vol; ++i) v[i] = half_to_float(s[i]);
    } else {
      const float* s = data.data<float>() + c * vol;
      for (int64_t i = 0; i < vol; ++i) v[i] = s[i];
    }
    Shape3 dims = old_shape;
    std::vector<double> r;
    if (!sz.enabled) {
      double mn = std::numeric_limits<double>::infinity(), mx = -mn;
      for (double x : v) mn = std::min(mn, x), mx = std::max(mx, x);
      r = resample_axes(std::move(v), dims, new_shape, {0, 1, 2}, opt.order);
      for (double& x : r) x = std::min(std::max(x, mn), mx);
    } else {
      const int za = sz.axis;
      // Slice-wise min/max of the input (each skimage 2D resize clips to its own slice's range).
      const int64_t nz = old_shape[za];
      std::vector<double> smin(nz, std::numeric_limits<double>::infinity()), smax(nz, -std::numeric_limits<double>::infinity());
      for (int64_t i = 0; i < old_shape[0]; ++i)
        for (int64_t j = 0; j < old_shape[1]; ++j)
          for (int64_t k = 0; k < old_shape[2]; ++k) {
            const double x = v[(i * old_shape[1] + j) * old_shape[2] + k];
            const int64_t s = za == 0 ? i : za == 1 ? j : k;
            smin[s] = std::min(smin[s], x), smax[s] = std::max(smax[s], x);
          }
      std::vector<int> plane;
      for (int d = 0; d < 3; ++d)
        if (d != za) plane.push_back(d);
      Shape3 mid = new_shape;
      mid[za] = old_shape[za];
      r = resample_axes(std::move(v), dims, mid, plane, opt.order);
      for (int64_t i = 0; i < mid[0]; ++i)
        for (int64_t j = 0; j < mid[1]; ++j)
          for (int64_t k = 0; k < mid[2]; ++k) {
            const int64_t s = za == 0 ? i : za == 1 ? j : k;
            double& x = r[(i * mid[1] + j) * mid[2] + k];
            x = std::min(std::max(x, smin[s]), smax[s]);
          }
      // Across slices: map_coordinates(order_z, mode='nearest') at scale*(i+0.5)-0.5; in-plane coordinates are
      // exact integers there, so this is a 1D pass along the slice axis (no clipping, as nnU-Net).
      if (old_shape[za] != new_shape[za]) r = resample_axes(std::move(r), dims, new_shape, {za}, opt.order_z);
    }
    if (half) {
      uint16_t* d = out.data<uint16_t>() + c * new_vol;
      for (int64_t i = 0; i < new_vol; ++i) d[i] = double_to_half(r[i]);
    } else {
      float* d = out.data<float>() + c * new_vol;
      for (int64_t i = 0; i < new_vol; ++i) d[i] = static_cast<float>(r[i]);
    }
  }
  return out;
}

}  // namespace kiln::seg
