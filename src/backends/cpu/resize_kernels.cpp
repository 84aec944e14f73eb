// Resize sampling taps, reference kernel and fast CPU kernels (see resize_common.h).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cpu/resize_common.h"

namespace kiln::cpu {

namespace {

// Input coordinate of output index x on one axis.
double source_coord(double x, int64_t in, int64_t out, double scale, double rs, double re, const ResizeOptions& o) {
  const double out_w = scale * (double)in;  // the (unrounded) resized length, as the ONNX spec defines it
  switch (o.coord) {
    case CoordMode::HalfPixel: return (x + 0.5) / scale - 0.5;
    case CoordMode::HalfPixelSymmetric: {
      double adjustment = (double)out / out_w;
      double center = (double)in / 2;
      double offset = center * (1 - adjustment);
      return offset + (x + 0.5) / scale - 0.5;
    }
    case CoordMode::PytorchHalfPixel: return out > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
    case CoordMode::AlignCorners: return out_w == 1 ? 0.0 : x * (double)(in - 1) / (out_w - 1);
    case CoordMode::Asymmetric: return x / scale;
    case CoordMode::TfHalfPixelForNN: return (x + 0.5) / scale;
    case CoordMode::TfCropAndResize:
      if (out_w == 1) return (re - rs) * (double)(in - 1) / 2 + rs * (double)(in - 1);
      return x * (re - rs) * (double)(in - 1) / (out_w - 1) + rs * (double)(in - 1);
  }
  return 0;
}

double cubic_kernel(double x, double a) {  // Keys' cubic convolution kernel
  x = std::fabs(x);
  if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

}  // namespace

ResizeAxis make_resize_axis(int64_t in, int64_t out, double scale, double rs, double re, const ResizeOptions& o) {
  ResizeAxis ax;
  ax.in = in;
  ax.out = out;
  ax.extrap.assign((size_t)out, 0);
  const bool nearest = o.mode == ResizeMode::Nearest;
  // Tap window: point x_int + i for i in [start, start + taps).
  int start = 0, taps = 1;
  double support_scale = 1.0;  // argument scale of the filter (antialias stretches it)
  if (o.mode == ResizeMode::Linear) { start = 0; taps = 2; }
  if (o.mode == ResizeMode::Cubic) { start = -1; taps = 4; }
  if (!nearest && o.antialias && scale < 1.0) {
    support_scale = scale;
    double support = o.mode == ResizeMode::Linear ? 1.0 : 2.0;
    start = (int)std::floor(-support / scale) + 1;
    taps = 2 - 2 * start;
  }
  ax.taps = taps;
  ax.idx.resize((size_t)(out * taps));
  if (!nearest) ax.w.resize((size_t)(out * taps));
  std::vector<double> wd(taps);
  for (int64_t ox = 0; ox < out; ++ox) {
    double x = source_coord((double)ox, in, out, scale, rs, re, o);
    if (o.coord == CoordMode::TfCropAndResize && (x < 0 || x > (double)(in - 1))) {
      ax.extrap[ox] = 1;
      ax.any_extrap = true;
      for (int k = 0; k < taps; ++k) {
        ax.idx[ox * taps + k] = 0;
        if (!nearest) ax.w[ox * taps + k] = 0;
      }
      continue;
    }
    if (nearest) {
      double fl = std::floor(x), frac = x - fl;
      int64_t i = (int64_t)fl;
      if (frac != 0) {
        switch (o.nearest) {
          case NearestMode::RoundPreferFloor: i = frac <= 0.5 ? (int64_t)fl : (int64_t)fl + 1; break;
          case NearestMode::RoundPreferCeil: i = frac < 0.5 ? (int64_t)fl : (int64_t)fl + 1; break;
          case NearestMode::Floor: break;
          case NearestMode::Ceil: i = (int64_t)fl + 1; break;
          case NearestMode::Simple: i = scale < 1.0 ? (int64_t)std::ceil(x) : (int64_t)std::trunc(x); break;
        }
      }
      ax.idx[ox] = std::clamp<int64_t>(i, 0, in - 1);
      continue;
    }
    double fl = std::floor(x), t = x - fl;
    int64_t xi = (int64_t)fl;
    double sum = 0;
    for (int k = 0; k < taps; ++k) {
      int i = start + k;
      if (o.mode == ResizeMode::Linear) wd[k] = std::max(0.0, 1.0 - std::fabs(((double)i - t) * support_scale));
      else wd[k] = cubic_kernel(((double)i - t) * support_scale, o.cubic_a);
      sum += wd[k];
    }
    if (support_scale != 1.0 && sum != 0)
      for (auto& v : wd) v /= sum;
    if (o.exclude_outside) {
      double s2 = 0;
      for (int k = 0; k < taps; ++k) {
        int64_t p = xi + start + k;
        if (p < 0 || p >= in) wd[k] = 0;
        s2 += wd[k];
      }
      if (s2 != 0)
        for (auto& v : wd) v /= s2;
    }
    for (int k = 0; k < taps; ++k) {
      ax.idx[ox * taps + k] = std::clamp<int64_t>(xi + start + k, 0, in - 1);
      ax.w[ox * taps + k] = (float)wd[k];
    }
  }
  // Identity axes are common (N, C, unresized dims): detect them so kernels can skip the work.
  if (out == in && !ax.any_extrap) {
    bool id = true;
    for (int64_t ox = 0; ox < out && id; ++ox) {
      if (nearest) { id = ax.idx[ox] == ox; continue; }
      double self = 0, other = 0;
      for (int k = 0; k < taps; ++k)
        (ax.idx[ox * taps + k] == ox ? self : other) += std::fabs((double)ax.w[ox * taps + k]);
      id = self == 1.0 && other == 0.0;
    }
    if (id) {
      ax.identity = true;
      ax.taps = 1;
      ax.idx.resize((size_t)out);
      for (int64_t i = 0; i < out; ++i) ax.idx[i] = i;
      if (!nearest) ax.w.assign((size_t)out, 1.f);
    }
  }
  return ax;
}

ResizePlan make_resize_plan(const Shape& in, const Shape& out, const std::vector<double>& scales,
                            const std::vector<double>& roi_start, const std::vector<double>& roi_end, const ResizeOptions& o) {
  ResizePlan p;
  p.in_shape = in;
  p.out_shape = out;
  p.nearest = o.mode == ResizeMode::Nearest;
  p.extrapolation_value = o.extrapolation_value;
  for (size_t d = 0; d < in.size(); ++d) {
    p.axes.push_back(make_resize_axis(in[d], out[d], scales[d], roi_start[d], roi_end[d], o));
    p.any_extrap = p.any_extrap || p.axes.back().any_extrap;
  }
  return p;
}

// ---------------------------------------------------------------------------------------------------------
// Reference kernel.

template <class T>
static T from_double(double v) {
  if constexpr (std::is_integral_v<T>) {
    v = std::nearbyint(v);
    if (v < (double)std::numeric_limits<T>::lowest()) return std::numeric_limits<T>::lowest();
    if (v > (double)std::numeric_limits<T>::max()) return std::numeric_limits<T>::max();
    return (T)v;
  } else {
    return (T)v;
  }
}

template <class T>
void resize_reference(const ResizePlan& p, const T* x, T* y) {
  const int rank = (int)p.in_shape.size();
  const int64_t total = shape_numel(p.out_shape);
  std::vector<int64_t> in_strides(rank, 1);
  for (int d = rank - 2; d >= 0; --d) in_strides[d] = in_strides[d + 1] * p.in_shape[d + 1];
  std::vector<int64_t> oc(rank, 0), tap(rank, 0);
  for (int64_t e = 0; e < total; ++e) {
    // Output coordinates of element e.
    int64_t r = e;
    for (int d = rank - 1; d >= 0; --d) { oc[d] = r % p.out_shape[d]; r /= p.out_shape[d]; }
    bool extrap = false;
    for (int d = 0; d < rank; ++d) extrap = extrap || p.axes[d].extrap[oc[d]];
    if (extrap) { y[e] = from_double<T>(p.extrapolation_value); continue; }
    if (p.nearest) {
      int64_t off = 0;
      for (int d = 0; d < rank; ++d) off += p.axes[d].idx[oc[d]] * in_strides[d];
      y[e] = x[off];
      continue;
    }
    // Odometer over every combination of taps.
    std::fill(tap.begin(), tap.end(), 0);
    double acc = 0;
    while (true) {
      double w = 1;
      int64_t off = 0;
      for (int d = 0; d < rank; ++d) {
        const ResizeAxis& a = p.axes[d];
        size_t k = (size_t)(oc[d] * a.taps + tap[d]);
        w *= a.w[k];
        off += a.idx[k] * in_strides[d];
      }
      acc += w * (double)x[off];
      int d = rank - 1;
      while (d >= 0 && ++tap[d] == p.axes[d].taps) { tap[d] = 0; --d; }
      if (d < 0) break;
    }
    y[e] = from_double<T>(acc);
  }
}

template void resize_reference<float>(const ResizePlan&, const float*, float*);
template void resize_reference<double>(const ResizePlan&, const double*, double*);
template void resize_reference<int8_t>(const ResizePlan&, const int8_t*, int8_t*);
template void resize_reference<uint8_t>(const ResizePlan&, const uint8_t*, uint8_t*);
template void resize_reference<int16_t>(const ResizePlan&, const int16_t*, int16_t*);
template void resize_reference<uint16_t>(const ResizePlan&, const uint16_t*, uint16_t*);
template void resize_reference<int32_t>(const ResizePlan&, const int32_t*, int32_t*);
template void resize_reference<uint32_t>(const ResizePlan&, const uint32_t*, uint32_t*);
template void resize_reference<int64_t>(const ResizePlan&, const int64_t*, int64_t*);
template void resize_reference<uint64_t>(const ResizePlan&, const uint64_t*, uint64_t*);

// ---------------------------------------------------------------------------------------------------------
// Fast kernels: the leading identity axes fold into "planes"; the rest is viewed as [D, H, W] (padded with
// identity axes in front), requiring at most three non-folded axes.

namespace {

struct Layout3 {
  int64_t planes = 1;
  const ResizeAxis* ax[3] = {nullptr, nullptr, nullptr};  // D, H, W (nullptr = size-1 identity)
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1};
};

bool layout3(const ResizePlan& p, Layout3* L) {
  const int rank = (int)p.axes.size();
  int first = rank;
  for (int d = 0; d < rank; ++d)
    if (!p.axes[d].identity) { first = d; break; }
  if (first == rank) first = std::max(0, rank - 1);
  if (rank - first > 3) return false;
  for (int d = 0; d < first; ++d) L->planes *= p.in_shape[d];
  int slot = 3 - (rank - first);
  for (int d = first; d < rank; ++d, ++slot) {
    L->ax[slot] = &p.axes[d];
    L->in[slot] = p.in_shape[d];
    L->out[slot] = p.out_shape[d];
  }
  return true;
}

// Static 1-tap identity axis for padded slots.
const ResizeAxis& unit_axis(bool nearest) {
  static const ResizeAxis n = [] { ResizeAxis a; a.in = a.out = 1; a.identity = true; a.idx = {0}; a.extrap = {0}; return a; }();
  static const ResizeAxis l = [] { ResizeAxis a = n; a.w = {1.f}; return a; }();
  return nearest ? n : l;
}

}  // namespace

bool resize_fast_f32(const ResizePlan& p, const float* x, float* y) {
  Layout3 L;
  if (!layout3(p, &L)) return false;
  const ResizeAxis& AD = L.ax[0] ? *L.ax[0] : unit_axis(p.nearest);
  const ResizeAxis& AH = L.ax[1] ? *L.ax[1] : unit_axis(p.nearest);
  const ResizeAxis& AW = L.ax[2] ? *L.ax[2] : unit_axis(p.nearest);
  const int64_t iD = L.in[0], iH = L.in[1], iW = L.in[2], oD = L.out[0], oH = L.out[1], oW = L.out[2];
  const int64_t rows = L.planes * oD * oH;
  const float ev = p.extrapolation_value;
  if (rows == 0 || oW == 0) return true;

  if (p.nearest) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t oh = r % oH, od = (r / oH) % oD, pl = r / (oH * oD);
      float* yr = y + r * oW;
      if (AD.extrap[od] || AH.extrap[oh]) { std::fill(yr, yr + oW, ev); continue; }
      const float* xr = x + ((pl * iD + AD.idx[od]) * iH + AH.idx[oh]) * iW;
      const int64_t* ix = AW.idx.data();
      if (AW.identity) { std::memcpy(yr, xr, sizeof(float) * oW); continue; }
      if (AW.any_extrap) {
        for (int64_t ow = 0; ow < oW; ++ow) yr[ow] = AW.extrap[ow] ? ev : xr[ix[ow]];
      } else {
        for (int64_t ow = 0; ow < oW; ++ow) yr[ow] = xr[ix[ow]];
      }
    }
    return true;
  }

  const int tD = AD.taps, tH = AH.taps, tW = AW.taps;
#pragma omp parallel
  {
    std::vector<float> tmp((size_t)iW);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t oh = r % oH, od = (r / oH) % oD, pl = r / (oH * oD);
      float* yr = y + r * oW;
      if (AD.extrap[od] || AH.extrap[oh]) { std::fill(yr, yr + oW, ev); continue; }
      // Vertical pass: blend the tD*tH input rows this output row reads into tmp (or straight into yr).
      float* acc = AW.identity ? yr : tmp.data();
      bool first = true;
      for (int kd = 0; kd < tD; ++kd) {
        const float wd = AD.w[od * tD + kd];
        const int64_t id = AD.idx[od * tD + kd];
        for (int kh = 0; kh < tH; ++kh) {
          const float w = wd * AH.w[oh * tH + kh];
          const float* xr = x + ((pl * iD + id) * iH + AH.idx[oh * tH + kh]) * iW;
          if (first) {
            if (w == 1.f) std::memcpy(acc, xr, sizeof(float) * iW);
            else for (int64_t i = 0; i < iW; ++i) acc[i] = w * xr[i];
            first = false;
          } else {
            for (int64_t i = 0; i < iW; ++i) acc[i] += w * xr[i];
          }
        }
      }
      if (AW.identity) continue;
      // Horizontal pass.
      const int64_t* ix = AW.idx.data();
      const float* wx = AW.w.data();
      if (tW == 2) {
        for (int64_t ow = 0; ow < oW; ++ow) yr[ow] = wx[2 * ow] * acc[ix[2 * ow]] + wx[2 * ow + 1] * acc[ix[2 * ow + 1]];
      } else {
        for (int64_t ow = 0; ow < oW; ++ow) {
          float s = 0;
          for (int k = 0; k < tW; ++k) s += wx[ow * tW + k] * acc[ix[ow * tW + k]];
          yr[ow] = s;
        }
      }
      if (AW.any_extrap)
        for (int64_t ow = 0; ow < oW; ++ow)
          if (AW.extrap[ow]) yr[ow] = ev;
    }
  }
  return true;
}

bool resize_nearest_bytes(const ResizePlan& p, const void* xv, void* yv, size_t es) {
  if (!p.nearest || p.any_extrap) return false;
  Layout3 L;
  if (!layout3(p, &L)) return false;
  const ResizeAxis& AD = L.ax[0] ? *L.ax[0] : unit_axis(true);
  const ResizeAxis& AH = L.ax[1] ? *L.ax[1] : unit_axis(true);
  const ResizeAxis& AW = L.ax[2] ? *L.ax[2] : unit_axis(true);
  const int64_t iD = L.in[0], iH = L.in[1], iW = L.in[2], oD = L.out[0], oH = L.out[1], oW = L.out[2];
  const int64_t rows = L.planes * oD * oH;
  auto body = [&](auto tag) {
    using T = decltype(tag);
    const T* x = static_cast<const T*>(xv);
    T* y = static_cast<T*>(yv);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t oh = r % oH, od = (r / oH) % oD, pl = r / (oH * oD);
      const T* xr = x + ((pl * iD + AD.idx[od]) * iH + AH.idx[oh]) * iW;
      T* yr = y + r * oW;
      for (int64_t ow = 0; ow < oW; ++ow) yr[ow] = xr[AW.idx[ow]];
    }
  };
  switch (es) {
    case 1: body(uint8_t{}); break;
    case 2: body(uint16_t{}); break;
    case 4: body(uint32_t{}); break;
    case 8: body(uint64_t{}); break;
    default: return false;
  }
  return true;
}

}  // namespace kiln::cpu
