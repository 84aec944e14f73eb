// GridSample (opset 16: 4-D; opset 20: N-D): samples X at the normalized grid positions.
#include <cmath>

#include "ops/common.h"

namespace kiln {
namespace {

enum class GsMode { Linear, Nearest, Cubic };
enum class GsPad { Zeros, Border, Reflection };

class GridSampleK : public Kernel {
 public:
  GridSampleK(const Node& n, int opset) : n_(n), opset_(opset) {
    align_ = n.attr_int("align_corners", 0) != 0;
    std::string m = n.attr_string("mode", opset >= 20 ? "linear" : "bilinear");
    if (m == "bilinear" || m == "linear") mode_ = GsMode::Linear;
    else if (m == "nearest") mode_ = GsMode::Nearest;
    else if (m == "bicubic" || m == "cubic") mode_ = GsMode::Cubic;
    else fail(n.describe() + ": unknown mode '" + m + "' (expected linear/bilinear, nearest or cubic/bicubic)");
    std::string p = n.attr_string("padding_mode", "zeros");
    if (p == "zeros") pad_ = GsPad::Zeros;
    else if (p == "border") pad_ = GsPad::Border;
    else if (p == "reflection") pad_ = GsPad::Reflection;
    else fail(n.describe() + ": unknown padding_mode '" + p + "' (expected zeros, border or reflection)");
  }

  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    const TensorType& g = ctx.input_type(1);
    if (!x.has_shape || !g.has_shape) {
      if (x.has_shape && g.has_shape == false && x.rank() < 3) fail(n_.describe() + ": X must have rank >= 3");
      ctx.set_output(0, unknown_type(x.dtype));
      return;
    }
    check_ranks(x.rank(), g.rank());
    const int r = x.rank() - 2;
    if (g.dims.back().known() && g.dims.back().value != r)
      fail(n_.describe() + ": grid's last dimension must be " + std::to_string(r) + " (the spatial rank of X), got " +
           std::to_string(g.dims.back().value));
    if (x.dims[0].known() && g.dims[0].known() && x.dims[0].value != g.dims[0].value)
      fail(n_.describe() + ": X and grid batch sizes differ: " + x.str() + " vs " + g.str());
    TensorType out;
    out.dtype = x.dtype;
    out.has_shape = true;
    out.dims.push_back(x.dims[0].known() ? x.dims[0] : g.dims[0]);
    out.dims.push_back(x.dims[1]);
    for (int i = 1; i <= r; ++i) out.dims.push_back(g.dims[i]);
    ctx.set_output(0, out);
  }

  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const Tensor& g = ctx.input(1);
    check_ranks(x.rank(), g.rank());
    const int r = x.rank() - 2;
    if (g.shape().back() != r || g.shape()[0] != x.shape()[0])
      fail(n_.describe() + ": grid " + shape_str(g.shape()) + " does not fit X " + shape_str(x.shape()));
    Tensor& y = ctx.output(0);
    if (x.dtype() != DType::Float32 && x.dtype() != DType::Float64)
      unsupported(n_.describe() + ": GridSample supports float32/float64 X, got " + dtype_name(x.dtype()));
    if (g.dtype() != DType::Float32 && g.dtype() != DType::Float64)
      unsupported(n_.describe() + ": GridSample supports float32/float64 grids, got " + dtype_name(g.dtype()));
    if (y.numel() == 0) return;
    for (int i = 0; i < r; ++i)
      if (x.shape()[2 + i] == 0) fail(n_.describe() + ": X has an empty spatial dimension " + shape_str(x.shape()));
    auto go = [&](auto xt, auto gt) {
      using T = decltype(xt);
      using G = decltype(gt);
      sample<T, G>(x, g, y, r);
    };
    if (x.dtype() == DType::Float32) {
      if (g.dtype() == DType::Float32) go(float{}, float{}); else go(float{}, double{});
    } else {
      if (g.dtype() == DType::Float32) go(double{}, float{}); else go(double{}, double{});
    }
  }

 private:
  void check_ranks(int xr, int gr) const {
    if (xr < 3) fail(n_.describe() + ": X must have rank >= 3 ([N, C, spatial...]), got rank " + std::to_string(xr));
    if (opset_ < 20 && xr != 4) fail(n_.describe() + ": GridSample-16 needs a 4-D X, got rank " + std::to_string(xr));
    if (gr != xr) fail(n_.describe() + ": grid must have the rank of X (" + std::to_string(xr) + "), got " + std::to_string(gr));
  }

  double reflect(double v, double lo, double hi) const {
    double rng = hi - lo;
    if (rng <= 0) return lo;
    if (v < lo) {
      double dx = lo - v;
      int64_t k = (int64_t)(dx / rng);
      double rem = dx - (double)k * rng;
      return k % 2 == 0 ? lo + rem : hi - rem;
    }
    if (v > hi) {
      double dx = v - hi;
      int64_t k = (int64_t)(dx / rng);
      double rem = dx - (double)k * rng;
      return k % 2 == 0 ? hi - rem : lo + rem;
    }
    return v;
  }

  // Input index read for integer position i (-1: zero padding).
  int64_t pixel_index(int64_t i, int64_t L, double lo, double hi) const {
    switch (pad_) {
      case GsPad::Zeros: return i >= 0 && i < L ? i : -1;
      case GsPad::Border: return std::clamp<int64_t>(i, 0, L - 1);
      case GsPad::Reflection: return std::clamp<int64_t>((int64_t)reflect((double)i, lo, hi), 0, L - 1);
    }
    return -1;
  }

  static void cubic_coeffs(double t, double* c) {
    const double A = -0.75;
    double t1 = t + 1, t2 = 1 - t, t3 = 2 - t;
    c[0] = ((A * t1 - 5 * A) * t1 + 8 * A) * t1 - 4 * A;
    c[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
    c[2] = ((A + 2) * t2 - (A + 3)) * t2 * t2 + 1;
    c[3] = ((A * t3 - 5 * A) * t3 + 8 * A) * t3 - 4 * A;
  }

  template <class T, class G>
  void sample(const Tensor& x, const Tensor& g, Tensor& y, int r) const {
    const int64_t N = x.shape()[0], C = x.shape()[1];
    std::vector<int64_t> L(r);
    int64_t plane = 1, P = 1;
    for (int i = 0; i < r; ++i) { L[i] = x.shape()[2 + i]; plane *= L[i]; P *= g.shape()[1 + i]; }
    std::vector<int64_t> st(r, 1);
    for (int i = r - 2; i >= 0; --i) st[i] = st[i + 1] * L[i + 1];
    const int taps = mode_ == GsMode::Nearest ? 1 : mode_ == GsMode::Linear ? 2 : 4;
    const T* xd = x.data<T>();
    const G* gd = g.data<G>();
    T* yd = y.data<T>();
#pragma omp parallel
    {
      std::vector<int64_t> idx((size_t)r * taps);
      std::vector<double> w((size_t)r * taps);
      std::vector<int> k(r);
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t p = 0; p < P; ++p) {
          const G* gp = gd + (n * P + p) * r;
          for (int i = 0; i < r; ++i) {
            const double nv = (double)gp[r - 1 - i];  // grid holds (x, y, z...): innermost axis first
            const double lo = align_ ? 0.0 : -0.5, hi = align_ ? (double)(L[i] - 1) : (double)L[i] - 0.5;
            double v = align_ ? (nv + 1) / 2 * (double)(L[i] - 1) : ((nv + 1) * (double)L[i] - 1) / 2;
            if (mode_ == GsMode::Nearest) v = std::nearbyint(v);  // round half to even, as the conformance data (and PyTorch) do
            if (v < lo || v > hi) {
              if (pad_ == GsPad::Border) v = std::clamp(v, 0.0, (double)(L[i] - 1));
              else if (pad_ == GsPad::Reflection) v = reflect(v, lo, hi);
            }
            int64_t* ix = &idx[(size_t)i * taps];
            double* wi = &w[(size_t)i * taps];
            if (!std::isfinite(v) || v < -8.0 || v > (double)L[i] + 8.0) {  // NaN or far outside (zeros padding): all taps read zero
              for (int t = 0; t < taps; ++t) { ix[t] = -1; wi[t] = 0; }
              continue;
            }
            if (mode_ == GsMode::Nearest) {
              ix[0] = pixel_index((int64_t)v, L[i], lo, hi);
              wi[0] = 1;
            } else if (mode_ == GsMode::Linear) {
              double f = std::floor(v), t = v - f;
              ix[0] = pixel_index((int64_t)f, L[i], lo, hi);
              ix[1] = pixel_index((int64_t)f + 1, L[i], lo, hi);
              wi[0] = 1 - t;
              wi[1] = t;
            } else {
              double f = std::floor(v), t = v - f;
              cubic_coeffs(t, wi);
              for (int q = 0; q < 4; ++q) ix[q] = pixel_index((int64_t)f - 1 + q, L[i], lo, hi);
            }
          }
          for (int64_t c = 0; c < C; ++c) {
            const T* xp = xd + (n * C + c) * plane;
            double acc = 0;
            std::fill(k.begin(), k.end(), 0);
            while (true) {
              double wt = 1;
              int64_t off = 0;
              bool zero = false;
              for (int i = 0; i < r; ++i) {
                int64_t j = idx[(size_t)i * taps + k[i]];
                if (j < 0) { zero = true; break; }
                wt *= w[(size_t)i * taps + k[i]];
                off += j * st[i];
              }
              if (!zero) acc += wt * (double)xp[off];
              int d = r - 1;
              while (d >= 0 && ++k[d] == taps) { k[d] = 0; --d; }
              if (d < 0) break;
            }
            yd[(n * C + c) * P + p] = (T)acc;
          }
        }
      }
    }
  }

  Node n_;  // a copy: the kernel must not depend on the graph's node storage
  int opset_;
  bool align_ = false;
  GsMode mode_ = GsMode::Linear;
  GsPad pad_ = GsPad::Zeros;
};

}  // namespace

void register_grid_sample(Registry& r) {
  r.add("GridSample", 16, make_kernel<GridSampleK>());
  r.add("GridSample", 20, make_kernel<GridSampleK>());
}

}  // namespace kiln
