// Sliding-window inference, nnU-Net v2 style (segmentation-pipeline.md sections 7-11 and 18).
//
// Numeric contract (what makes the result bit-identical to nnU-Net's CPU predictor given identical network outputs):
//  * mirror average in float32: identity output, then each flipped view added in itertools.combinations order,
//    then divided by the number of views;
//  * Gaussian weight = the fp16 map's exact value; product in float32; accumulation acc = half(float(acc) + p)
//    in tile order (axis 0 outermost); weights w = half(float(w) + float(g)); result half(float(acc) / float(w));
//  * folds: half(float(a) + float(b)) in fold order, then half(float(sum) / n).
#include "pipeline/seg/sliding_window.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace kiln::seg {

namespace {

[[noreturn]] void bad(const std::string& msg) { seg_fail(ErrorCode::InvalidArgument, "sliding window: " + msg); }

std::string shape3_str(const Shape3& s) {
  return "(" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + ")";
}

// numpy.round / Python round on a double: round half to even.
double round_half_even(double x) {
  double r = std::floor(x);
  double d = x - r;
  if (d > 0.5) return r + 1;
  if (d < 0.5) return r;
  return std::fmod(r, 2.0) == 0.0 ? r : r + 1;
}

// Parallel regions only pay off above this many elements (tiny tiles in tests would otherwise be dominated by
// OpenMP fork/join on a loaded machine).
constexpr int64_t kParallelMin = 1 << 15;

inline float h2f(uint16_t h) { return half_to_float(h); }

// Hides a value from the optimiser so that a product is rounded to float32 before the following addition:
// GCC contracts a * b + c into an FMA across statements (-ffp-contract=fast is its default), which would skip
// the rounding nnU-Net's separate `p *= gaussian` and `acc += p` perform.
inline float rounded(float v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm volatile("" : "+x"(v));
  return v;
#else
  volatile float t = v;
  return t;
#endif
}
inline uint16_t f2h(float f) { return float_to_half(f); }

// Non-empty combinations of `axes` in itertools.combinations order (size 1 first, lexicographic by position).
std::vector<std::array<bool, 3>> mirror_combinations(const std::vector<int>& axes) {
  for (size_t i = 0; i < axes.size(); ++i) {
    if (axes[i] < 0 || axes[i] > 2)
      bad("mirror axis " + std::to_string(axes[i]) + " out of range (spatial axes are 0, 1, 2)");
    for (size_t j = 0; j < i; ++j)
      if (axes[j] == axes[i]) bad("mirror axis " + std::to_string(axes[i]) + " listed twice");
  }
  std::vector<std::array<bool, 3>> out;
  const int n = (int)axes.size();
  for (int r = 1; r <= n; ++r) {
    // indices idx[0] < idx[1] < ... < idx[r-1], lexicographic
    std::vector<int> idx(r);
    for (int i = 0; i < r; ++i) idx[i] = i;
    while (true) {
      std::array<bool, 3> f{false, false, false};
      for (int i = 0; i < r; ++i) f[axes[idx[i]]] = true;
      out.push_back(f);
      int i = r - 1;
      while (i >= 0 && idx[i] == n - r + i) --i;
      if (i < 0) break;
      ++idx[i];
      for (int j = i + 1; j < r; ++j) idx[j] = idx[j - 1] + 1;
    }
  }
  return out;
}

// dst (C, p0, p1, p2) = src[:, s0:s0+p0, s1:s1+p1, s2:s2+p2] with the axes in `flip` reversed.
void extract_tile(const float* src, int64_t C, const Shape3& full, const Shape3& start, const Shape3& p,
                  const std::array<bool, 3>& flip, float* dst) {
  const int64_t rows = C * p[0] * p[1];
#pragma omp parallel for schedule(static) if (rows * p[2] >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / (p[0] * p[1]);
    const int64_t i = (r / p[1]) % p[0];
    const int64_t j = r % p[1];
    const int64_t si = start[0] + (flip[0] ? p[0] - 1 - i : i);
    const int64_t sj = start[1] + (flip[1] ? p[1] - 1 - j : j);
    const float* s = src + ((c * full[0] + si) * full[1] + sj) * full[2] + start[2];
    float* d = dst + r * p[2];
    if (flip[2]) {
      for (int64_t k = 0; k < p[2]; ++k) d[k] = s[p[2] - 1 - k];
    } else {
      std::memcpy(d, s, sizeof(float) * (size_t)p[2]);
    }
  }
}

// pred (K, p0, p1, p2) (+)= out with the axes in `flip` reversed (flip is its own inverse). `add` = false copies.
void flip_accumulate(const float* out, int64_t K, const Shape3& p, const std::array<bool, 3>& flip, bool add,
                     float* pred) {
  const int64_t rows = K * p[0] * p[1];
#pragma omp parallel for schedule(static) if (rows * p[2] >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / (p[0] * p[1]);
    const int64_t i = (r / p[1]) % p[0];
    const int64_t j = r % p[1];
    const int64_t si = flip[0] ? p[0] - 1 - i : i;
    const int64_t sj = flip[1] ? p[1] - 1 - j : j;
    const float* s = out + ((c * p[0] + si) * p[1] + sj) * p[2];
    float* d = pred + r * p[2];
    const int64_t n = p[2];
    if (flip[2]) {
      if (add) {
        for (int64_t k = 0; k < n; ++k) d[k] += s[n - 1 - k];
      } else {
        for (int64_t k = 0; k < n; ++k) d[k] = s[n - 1 - k];
      }
    } else {
      if (add) {
        for (int64_t k = 0; k < n; ++k) d[k] += s[k];
      } else {
        std::memcpy(d, s, sizeof(float) * (size_t)n);
      }
    }
  }
}

}  // namespace

std::vector<int64_t> compute_steps(int64_t image, int64_t tile, double step_size) {
  if (tile <= 0) bad("tile size must be positive, got " + std::to_string(tile));
  if (image < tile)
    bad("image size " + std::to_string(image) + " is smaller than the tile size " + std::to_string(tile) +
        " (pad to the patch size first)");
  if (!(step_size > 0.0 && step_size <= 1.0))
    bad("step size must be in (0, 1], got " + std::to_string(step_size));
  const double target_step = (double)tile * step_size;
  const int64_t n = (int64_t)std::ceil((double)(image - tile) / target_step) + 1;
  std::vector<int64_t> steps;
  if (n > 1) {
    const double actual = (double)(image - tile) / (double)(n - 1);
    steps.reserve((size_t)n);
    for (int64_t i = 0; i < n; ++i) steps.push_back((int64_t)round_half_even(actual * (double)i));
  } else {
    steps.push_back(0);
  }
  return steps;
}

TileLayout plan_tiles(const Shape3& shape, const std::vector<int64_t>& patch, double step_size) {
  if (patch.size() != 2 && patch.size() != 3)
    bad("patch size must have 2 (2d configuration) or 3 (3d) values, got " + std::to_string(patch.size()));
  for (int64_t p : patch)
    if (p <= 0) bad("patch size must be positive, got " + std::to_string(p));
  for (int d = 0; d < 3; ++d)
    if (shape[d] <= 0) bad("the volume has an empty spatial axis: " + shape3_str(shape));
  TileLayout L;
  L.per_slice = patch.size() == 2;
  // A 2d patch is the trailing two axes of a one-slice 3D tile; axis 0 is neither padded nor stepped over.
  L.tile = L.per_slice ? Shape3{1, patch[0], patch[1]} : Shape3{patch[0], patch[1], patch[2]};
  for (int d = 0; d < 3; ++d) {
    L.padded[d] = std::max(shape[d], L.tile[d]);
    L.pad_lo[d] = (L.padded[d] - shape[d]) / 2;
  }
  std::array<std::vector<int64_t>, 3> steps;
  for (int d = 0; d < 3; ++d) {
    if (d == 0 && L.per_slice) {
      steps[0].resize((size_t)L.padded[0]);  // every slice (compute_steps with a 1-voxel tile would repeat some)
      for (int64_t s = 0; s < L.padded[0]; ++s) steps[0][(size_t)s] = s;
    } else {
      steps[d] = compute_steps(L.padded[d], L.tile[d], step_size);
    }
  }
  L.starts.reserve(steps[0].size() * steps[1].size() * steps[2].size());
  for (int64_t s0 : steps[0])
    for (int64_t s1 : steps[1])
      for (int64_t s2 : steps[2]) L.starts.push_back({s0, s1, s2});
  return L;
}

std::vector<int> volume_mirror_axes(const std::vector<int>& patch_axes, size_t patch_dims) {
  if (patch_dims != 2 && patch_dims != 3)
    bad("mirroring: the patch must have 2 or 3 axes, got " + std::to_string(patch_dims));
  std::vector<int> out;
  for (size_t i = 0; i < patch_axes.size(); ++i) {
    const int a = patch_axes[i];
    if (a < 0 || a >= (int)patch_dims)
      bad("mirror axis " + std::to_string(a) + " out of range for a " + std::to_string(patch_dims) +
          "-D patch (axes 0.." + std::to_string(patch_dims - 1) + ")");
    for (size_t j = 0; j < i; ++j)
      if (patch_axes[j] == a) bad("mirror axis " + std::to_string(a) + " listed twice");
    out.push_back(patch_dims == 2 ? a + 1 : a);
  }
  return out;
}

Tensor gaussian_map_fp16(const Shape3& tile, double sigma_scale, double value_scaling) {
  for (int d = 0; d < 3; ++d)
    if (tile[d] <= 0) bad("Gaussian map: tile size must be positive, got " + shape3_str(tile));
  if (!(sigma_scale > 0) || !(value_scaling > 0)) bad("Gaussian map: sigma_scale and value_scaling must be positive");
  // Closed form of gaussian_filter(delta at tile//2, sigma = tile * sigma_scale, mode constant): a separable
  // product of 1D Gaussians; the filter's kernel normalisation cancels in the division by the maximum.
  std::array<std::vector<double>, 3> e;
  for (int d = 0; d < 3; ++d) {
    const double sigma = (double)tile[d] * sigma_scale;
    const int64_t c = tile[d] / 2;
    e[d].resize((size_t)tile[d]);
    for (int64_t i = 0; i < tile[d]; ++i) {
      const double x = (double)(i - c);
      e[d][(size_t)i] = std::exp(-0.5 * x * x / (sigma * sigma));
    }
  }
  // The maximum is at the centre (every factor is 1 there).
  double gmax = 0;
  for (int64_t i = 0; i < tile[0]; ++i)
    for (int64_t j = 0; j < tile[1]; ++j)
      for (int64_t k = 0; k < tile[2]; ++k) gmax = std::max(gmax, e[0][i] * e[1][j] * e[2][k]);
  const double divisor = gmax / value_scaling;
  Tensor out(DType::Float16, {tile[0], tile[1], tile[2]});
  uint16_t* g = out.data<uint16_t>();
  uint16_t min_nonzero = 0x7c00;
  int64_t idx = 0;
  for (int64_t i = 0; i < tile[0]; ++i)
    for (int64_t j = 0; j < tile[1]; ++j)
      for (int64_t k = 0; k < tile[2]; ++k, ++idx) {
        const double v = e[0][i] * e[1][j] * e[2][k] / divisor;
        // torch's double -> half conversion goes through float (c10::Half(float)).
        const uint16_t h = f2h((float)v);
        g[idx] = h;
        if (h != 0 && h < min_nonzero) min_nonzero = h;  // positive halves order like their bits
      }
  for (int64_t n = 0; n < idx; ++n)
    if (g[n] == 0) g[n] = min_nonzero;
  return out;
}

namespace {

// The sliding window of sections 7-10 over a TileLayout. `mirror` are volume axes (0..2). A per-slice (2d) layout
// feeds the network (N, C, p0, p1) views of the (N, C, 1, p0, p1) tile buffer (same memory) and expects
// (N, K, p0, p1) back.
Tensor run_sliding_window(Session& net, const Tensor& data, const TileLayout& L, const std::vector<int>& mirror,
                          const SlidingWindowOptions& opt) {
  if (opt.max_batch < 1) bad("max_batch must be at least 1, got " + std::to_string(opt.max_batch));
  if (net.inputs().empty() || net.outputs().empty()) bad("the network has no inputs or no outputs");
  const std::string input_name = net.inputs()[0].name;
  const Shape3 patch = L.tile;
  const bool per_slice = L.per_slice;

  const int64_t C = data.dim(0);
  const Shape3 shape = spatial_shape(data);
  const Shape3 padded = L.padded, lo = L.pad_lo;
  bool needs_pad = false;
  for (int d = 0; d < 3; ++d) needs_pad |= padded[d] != shape[d];

  // 7. zero padding up to the patch size, centred, the extra voxel after.
  Tensor padded_data;
  const float* src = data.data<float>();
  if (needs_pad) {
    padded_data = Tensor(DType::Float32, {C, padded[0], padded[1], padded[2]});
    float* dst = padded_data.data<float>();
    const int64_t rows = C * shape[0] * shape[1];
#pragma omp parallel for schedule(static) if (rows * shape[2] >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t c = r / (shape[0] * shape[1]);
      const int64_t i = (r / shape[1]) % shape[0];
      const int64_t j = r % shape[1];
      std::memcpy(dst + ((c * padded[0] + i + lo[0]) * padded[1] + j + lo[1]) * padded[2] + lo[2],
                  src + r * shape[2], sizeof(float) * (size_t)shape[2]);
    }
    src = padded_data.data<float>();
  }

  // 8. tiles, axis 0 outermost (2d: slice, then axis 1, then axis 2).
  const std::vector<Shape3>& tiles = L.starts;

  // 9. weights (a 2d patch's map is the 3D map of the one-slice tile: the factor of the size-1 axis is exactly 1).
  const int64_t tile_n = patch[0] * patch[1] * patch[2];
  std::vector<float> gauss((size_t)tile_n, 1.0f);
  std::vector<uint16_t> gauss_h((size_t)tile_n, f2h(1.0f));
  if (opt.use_gaussian) {
    Tensor g = gaussian_map_fp16(patch);
    const uint16_t* gh = g.data<uint16_t>();
    for (int64_t n = 0; n < tile_n; ++n) {
      gauss_h[(size_t)n] = gh[n];
      gauss[(size_t)n] = h2f(gh[n]);
    }
  }

  // 10.1 views: identity, then the mirror combinations.
  std::vector<std::array<bool, 3>> views{{false, false, false}};
  for (auto& f : mirror_combinations(mirror)) views.push_back(f);
  const int64_t V = (int64_t)views.size();
  const int64_t B = std::min<int64_t>(V, opt.max_batch);
  const int64_t in_view = C * tile_n;

  Tensor batch(DType::Float32, {B, C, patch[0], patch[1], patch[2]});
  auto net_shape = [&](int64_t n, int64_t ch) {
    return per_slice ? Shape{n, ch, patch[1], patch[2]} : Shape{n, ch, patch[0], patch[1], patch[2]};
  };
  int64_t K = -1;
  std::vector<float> pred;
  Tensor acc, weights;  // fp16 (K, padded...), fp16 (padded...)
  const int64_t vol = padded[0] * padded[1] * padded[2];

  std::vector<Tensor> outs;
  for (size_t t = 0; t < tiles.size(); ++t) {
    const Shape3& st = tiles[t];
    for (int64_t v0 = 0; v0 < V; v0 += B) {
      const int64_t nb = std::min(B, V - v0);
      Tensor in = nb == B && !per_slice ? batch : Tensor::view(DType::Float32, net_shape(nb, C), batch.raw());
      for (int64_t b = 0; b < nb; ++b)
        extract_tile(src, C, padded, st, patch, views[(size_t)(v0 + b)], batch.data<float>() + b * in_view);
      outs.clear();
      Status s = net.run({{input_name, in}}, &outs);
      if (!s.ok()) seg_fail(s.code(), "sliding window: network evaluation of tile " + std::to_string(t) + " at " +
                                          shape3_str(st) + " failed: " + s.message());
      if (outs.empty()) bad("the network returned no outputs");
      const Tensor& o = outs[0];
      const int rank = per_slice ? 4 : 5;
      bool ok = o.dtype() == DType::Float32 && o.rank() == rank && o.dim(0) == nb && o.dim(1) > 0 &&
                (K < 0 || o.dim(1) == K);
      for (int d = per_slice ? 1 : 0; ok && d < 3; ++d) ok = o.dim(rank - 3 + d) == patch[d];
      if (!ok) {
        const Shape want = net_shape(nb, 0);
        std::string ws = "(" + std::to_string(nb) + ", K";
        for (size_t d = 2; d < want.size(); ++d) ws += ", " + std::to_string(want[d]);
        bad("network output must be float32 " + ws + "), got " + dtype_name(o.dtype()) + " " + shape_str(o.shape()));
      }
      if (K < 0) {
        K = o.dim(1);
        pred.assign((size_t)(K * tile_n), 0.0f);
        acc = Tensor(DType::Float16, {K, padded[0], padded[1], padded[2]});
        weights = Tensor(DType::Float16, {padded[0], padded[1], padded[2]});
      }
      const int64_t out_view = K * tile_n;
      for (int64_t b = 0; b < nb; ++b)
        flip_accumulate(o.data<float>() + b * out_view, K, patch, views[(size_t)(v0 + b)], v0 + b > 0, pred.data());
    }

    // Mirror average (float32 division), Gaussian product (float32), fp16 accumulation.
    const float nviews = (float)V;
    uint16_t* a = acc.data<uint16_t>();
    uint16_t* w = weights.data<uint16_t>();
    const int64_t rows = K * patch[0] * patch[1];
#pragma omp parallel for schedule(static) if (rows * patch[2] >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t c = r / (patch[0] * patch[1]);
      const int64_t i = (r / patch[1]) % patch[0];
      const int64_t j = r % patch[1];
      const float* pr = pred.data() + r * patch[2];
      const float* g = gauss.data() + (i * patch[1] + j) * patch[2];
      uint16_t* dst = a + ((c * padded[0] + st[0] + i) * padded[1] + st[1] + j) * padded[2] + st[2];
      for (int64_t k = 0; k < patch[2]; ++k) {
        float p = pr[k];
        if (V > 1) p = p / nviews;
        if (opt.use_gaussian) p = rounded(p * g[k]);
        dst[k] = f2h(h2f(dst[k]) + p);
      }
    }
    const int64_t wrows = patch[0] * patch[1];
#pragma omp parallel for schedule(static) if (wrows * patch[2] >= kParallelMin)
    for (int64_t r = 0; r < wrows; ++r) {
      const int64_t i = r / patch[1];
      const int64_t j = r % patch[1];
      const float* g = gauss.data() + r * patch[2];
      uint16_t* dst = w + ((st[0] + i) * padded[1] + st[1] + j) * padded[2] + st[2];
      for (int64_t k = 0; k < patch[2]; ++k) dst[k] = f2h(h2f(dst[k]) + g[k]);
    }
    if (opt.progress) opt.progress((int)t + 1, (int)tiles.size());
  }

  // Final fp16 division, padding removed.
  Tensor out(DType::Float16, {K, shape[0], shape[1], shape[2]});
  const uint16_t* a = acc.data<uint16_t>();
  const uint16_t* w = weights.data<uint16_t>();
  uint16_t* o = out.data<uint16_t>();
  const int64_t rows = K * shape[0] * shape[1];
  int64_t n_inf = 0;
#pragma omp parallel for schedule(static) reduction(+ : n_inf) if (rows * shape[2] >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / (shape[0] * shape[1]);
    const int64_t i = (r / shape[1]) % shape[0];
    const int64_t j = r % shape[1];
    const int64_t pos = ((i + lo[0]) * padded[1] + j + lo[1]) * padded[2] + lo[2];
    const uint16_t* ar = a + c * vol + pos;
    const uint16_t* wr = w + pos;
    uint16_t* dr = o + r * shape[2];
    for (int64_t k = 0; k < shape[2]; ++k) {
      const uint16_t h = f2h(h2f(ar[k]) / h2f(wr[k]));
      n_inf += (h & 0x7fff) == 0x7c00;
      dr[k] = h;
    }
  }
  if (n_inf > 0)
    seg_fail(ErrorCode::RuntimeError, "sliding window: " + std::to_string(n_inf) +
                                          " logits are infinite after fp16 accumulation (fp16 overflow; the network "
                                          "produced logits too large for nnU-Net's fp16 accumulators)");
  return out;
}

}  // namespace

Tensor predict_sliding_window(Session& net, const Tensor& data, const Shape3& patch, const SlidingWindowOptions& opt) {
  if (data.dtype() != DType::Float32 || data.rank() != 4)
    bad("input must be float32 (C, X, Y, Z), got " + std::string(dtype_name(data.dtype())) + " " +
        shape_str(data.shape()));
  for (int d = 0; d < 3; ++d)
    if (patch[d] <= 0) bad("patch size must be positive, got " + shape3_str(patch));
  const TileLayout L = plan_tiles(spatial_shape(data), {patch[0], patch[1], patch[2]}, opt.step_size);
  return run_sliding_window(net, data, L, volume_mirror_axes(opt.mirror_axes, 3), opt);
}

Tensor predict_sliding_window_2d(Session& net, const Tensor& data, const std::array<int64_t, 2>& patch,
                                 const SlidingWindowOptions& opt) {
  if (data.dtype() != DType::Float32 || data.rank() != 4)
    bad("input must be float32 (C, X, Y, Z) (a 2d configuration predicts every index of X as a 2D image), got " +
        std::string(dtype_name(data.dtype())) + " " + shape_str(data.shape()));
  if (patch[0] <= 0 || patch[1] <= 0)
    bad("2d patch size must be positive, got (" + std::to_string(patch[0]) + ", " + std::to_string(patch[1]) + ")");
  const TileLayout L = plan_tiles(spatial_shape(data), {patch[0], patch[1]}, opt.step_size);
  return run_sliding_window(net, data, L, volume_mirror_axes(opt.mirror_axes, 2), opt);
}

Tensor average_folds_fp16(const std::vector<Tensor>& fold_logits) {
  if (fold_logits.empty()) bad("average_folds_fp16: no fold logits given");
  const Tensor& f0 = fold_logits[0];
  for (size_t f = 0; f < fold_logits.size(); ++f) {
    const Tensor& t = fold_logits[f];
    if (t.dtype() != DType::Float16)
      bad("average_folds_fp16: fold " + std::to_string(f) + " logits must be float16, got " + dtype_name(t.dtype()));
    if (t.shape() != f0.shape())
      bad("average_folds_fp16: fold " + std::to_string(f) + " logits have shape " + shape_str(t.shape()) +
          ", fold 0 has " + shape_str(f0.shape()));
  }
  Tensor out = f0.clone();
  uint16_t* o = out.data<uint16_t>();
  const int64_t n = out.numel();
  for (size_t f = 1; f < fold_logits.size(); ++f) {
    const uint16_t* x = fold_logits[f].data<uint16_t>();
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) o[i] = f2h(h2f(o[i]) + h2f(x[i]));
  }
  if (fold_logits.size() > 1) {
    const float nf = (float)fold_logits.size();
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) o[i] = f2h(h2f(o[i]) / nf);
  }
  return out;
}

}  // namespace kiln::seg
