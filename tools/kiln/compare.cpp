#include "compare.h"

#include <cmath>
#include <cstdio>
#include <vector>

#include "common.h"

namespace kiln::cli {

namespace {

std::string index_str(int64_t flat, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int d = (int)shape.size() - 1; d >= 0; --d) {
    if (shape[d] > 0) {
      idx[d] = flat % shape[d];
      flat /= shape[d];
    }
  }
  return shape_str(idx);
}

// Argmax over axis 1 for every (outer, inner) position; first maximum wins, NaN never wins.
// `gap` (optional) receives the difference between the largest and the second-largest value.
std::vector<int64_t> argmax_axis1(const Values& v, const Shape& s, std::vector<double>* gap = nullptr) {
  int64_t outer = s[0], k = s[1], inner = 1;
  for (size_t d = 2; d < s.size(); ++d) inner *= s[d];
  std::vector<int64_t> r((size_t)(outer * inner), -1);
  if (gap) gap->assign(r.size(), INFINITY);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      int64_t best = -1;
      double bv = 0, second = -INFINITY;
      for (int64_t j = 0; j < k; ++j) {
        double x = v[(o * k + j) * inner + i];
        if (std::isnan(x)) continue;
        if (best < 0 || x > bv) {
          if (best >= 0) second = bv;
          best = j;
          bv = x;
        } else if (x > second) {
          second = x;
        }
      }
      r[o * inner + i] = best;
      if (gap) (*gap)[o * inner + i] = bv - second;
    }
  return r;
}

}  // namespace

Comparison compare(const Tensor& got, const Tensor& want, const Tolerance& o) {
  Comparison c;
  if (got.dtype() != want.dtype()) {
    c.pass = c.comparable = false;
    c.detail = std::string("type ") + dtype_name(got.dtype()) + ", expected " + dtype_name(want.dtype());
    return c;
  }
  if (got.shape() != want.shape()) {
    c.pass = c.comparable = false;
    c.detail = "shape " + shape_str(got.shape()) + ", expected " + shape_str(want.shape());
    return c;
  }
  Values g(got), w(want);
  const bool exact = !is_float_dtype(want.dtype());
  double scale = 0;
  for (int64_t i = 0; i < w.size(); ++i)
    if (std::isfinite(w[i])) scale = std::max(scale, std::fabs(w[i]));
  const double atol = o.atol + o.scale_atol * scale;
  int64_t worst = -1;
  double worst_excess = -1;
  for (int64_t i = 0; i < g.size(); ++i) {
    double a = g[i], b = w[i];
    bool ok;
    double d;
    if (std::isnan(a) || std::isnan(b)) {
      ok = std::isnan(a) && std::isnan(b);
      d = ok ? 0 : INFINITY;
    } else if (std::isinf(a) || std::isinf(b)) {
      ok = a == b;
      d = ok ? 0 : INFINITY;
    } else {
      d = std::fabs(a - b);
      ok = exact ? a == b : d <= atol + o.rtol * std::fabs(b);
    }
    c.max_abs = std::max(c.max_abs, d);
    if (b != 0 && !std::isnan(b)) c.max_rel = std::max(c.max_rel, d / std::fabs(b));
    else if (d > 0) c.max_rel = INFINITY;
    if (!ok) {
      ++c.bad;
      double excess = std::isinf(d) ? INFINITY : d - (atol + o.rtol * std::fabs(b));
      if (worst < 0 || excess > worst_excess) { worst = (int64_t)i; worst_excess = excess; }
    }
  }
  if (c.bad) {
    c.pass = false;
    c.detail = std::to_string(c.bad) + " of " + std::to_string(g.size()) + " elements " +
               (exact ? "differ" : "outside tolerance") + "; worst at " + index_str(worst, want.shape()) + ": got " +
               fmt_num(g[worst]) + ", want " + fmt_num(w[worst]);
  }
  if (want.rank() >= 2 && want.dim(1) > 0 && want.numel() > 0) {
    std::vector<double> gap;
    auto ag = argmax_axis1(g, want.shape()), aw = argmax_axis1(w, want.shape(), &gap);
    c.argmax_positions = (int64_t)ag.size();
    // A flip where the reference's two best scores are within 2 * atol is a numerical tie: two results each
    // within atol of the truth may legitimately rank them either way.
    for (size_t i = 0; i < ag.size(); ++i) {
      if (ag[i] == aw[i]) continue;
      ++c.argmax_diff;
      if (!(gap[i] <= 2 * atol)) ++c.argmax_decisive;
    }
    if (o.argmax && c.argmax_decisive) {
      c.pass = false;
      c.detail += std::string(c.detail.empty() ? "" : "; ") + "argmax over axis 1 differs at " +
                  std::to_string(c.argmax_decisive) + " of " + std::to_string(c.argmax_positions) +
                  " positions where the reference's top-2 gap exceeds 2 * atol";
    }
  }
  return c;
}

static std::string fmt_err(double v) {
  if (std::isinf(v)) return "inf";
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

std::string error_summary(const Comparison& c, const Tolerance& tol) {
  std::string s = "max abs err " + fmt_err(c.max_abs) + "  max rel err " + fmt_err(c.max_rel);
  if (c.argmax_positions >= 0 && (tol.argmax || c.argmax_diff))
    s += "  argmax diff " + std::to_string(c.argmax_diff) + "/" + std::to_string(c.argmax_positions) +
         (c.argmax_diff ? " (" + std::to_string(c.argmax_diff - c.argmax_decisive) + " at near-ties)" : "");
  return s;
}

}  // namespace kiln::cli
