// Preprocessing stages of the nnU-Net pipeline: transpose, crop to non-zero, intensity normalisation
// (segmentation-pipeline.md sections 3-5).
#include "pipeline/seg/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <vector>

namespace kiln::seg {

namespace {

std::array<int, 3> checked_perm(const std::array<int, 3>& perm, const char* what) {
  bool seen[3] = {false, false, false};
  for (int p : perm) {
    if (p < 0 || p > 2 || seen[p])
      seg_fail(ErrorCode::InvalidArgument, std::string(what) + ": transpose permutation [" + std::to_string(perm[0]) +
                                               ", " + std::to_string(perm[1]) + ", " + std::to_string(perm[2]) +
                                               "] is not a permutation of (0, 1, 2)");
    seen[p] = true;
  }
  return perm;
}

}  // namespace

Tensor transpose_volume(const Tensor& data, const std::array<int, 3>& perm) {
  checked_perm(perm, "transpose_volume");
  if (data.rank() != 4)
    seg_fail(ErrorCode::InvalidArgument,
             "transpose_volume: expected a (C, X, Y, Z) volume, got shape " + shape_str(data.shape()));
  if (perm[0] == 0 && perm[1] == 1 && perm[2] == 2) return data;  // numpy's transpose is a view: no copy either
  const size_t es = dtype_size(data.dtype());
  if (es == 0) seg_fail(ErrorCode::InvalidArgument, "transpose_volume: unsupported dtype");
  const int64_t C = data.dim(0);
  const int64_t in_dims[3] = {data.dim(1), data.dim(2), data.dim(3)};
  const int64_t in_strides[3] = {in_dims[1] * in_dims[2], in_dims[2], 1};
  const int64_t od[3] = {in_dims[perm[0]], in_dims[perm[1]], in_dims[perm[2]]};
  const int64_t os[3] = {in_strides[perm[0]], in_strides[perm[1]], in_strides[perm[2]]};  // input stride per out axis
  Tensor out(data.dtype(), {C, od[0], od[1], od[2]});
  const int64_t vol = od[0] * od[1] * od[2];
  const char* src = static_cast<const char*>(data.raw());
  char* dst = static_cast<char*>(out.raw());
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < od[0]; ++i) {
      const char* s_c = src + (size_t)(c * vol) * es;
      char* d = dst + (size_t)(c * vol + i * od[1] * od[2]) * es;
      for (int64_t j = 0; j < od[1]; ++j) {
        const char* s = s_c + (size_t)(i * os[0] + j * os[1]) * es;
        for (int64_t k = 0; k < od[2]; ++k, d += es) std::memcpy(d, s + (size_t)(k * os[2]) * es, es);
      }
    }
  }
  return out;
}

Spacing transpose_spacing(const Spacing& s, const std::array<int, 3>& perm) {
  checked_perm(perm, "transpose_spacing");
  return {s[perm[0]], s[perm[1]], s[perm[2]]};
}

CropResult crop_to_nonzero(const Tensor& data) {
  if (data.rank() != 4 || data.dtype() != DType::Float32)
    seg_fail(ErrorCode::InvalidArgument, "crop_to_nonzero: expected a float32 (C, X, Y, Z) volume, got " +
                                             std::string(dtype_name(data.dtype())) + " " + shape_str(data.shape()));
  const int64_t C = data.dim(0), X = data.dim(1), Y = data.dim(2), Z = data.dim(3);
  const int64_t vol = X * Y * Z;
  const float* x = data.data<float>();

  // state: 1 = non-zero in some channel, 0 = background not (yet) reached from the border, 2 = background reached.
  std::vector<uint8_t> state(static_cast<size_t>(vol), 0);
#pragma omp parallel for schedule(static)
  for (int64_t v = 0; v < vol; ++v) {
    uint8_t nz = 0;
    for (int64_t c = 0; c < C; ++c) nz |= (x[c * vol + v] != 0.0f);
    state[v] = nz;
  }

  // scipy.ndimage.binary_fill_holes with the default (6-connected) structure: background voxels that are
  // not face-connected to the array border are holes and become foreground. Breadth-first flood fill from
  // the border; the queue holds only the current front, so memory stays O(surface) rather than O(volume).
  std::deque<int64_t> queue;
  auto seed = [&](int64_t v) {
    if (state[v] == 0) {
      state[v] = 2;
      queue.push_back(v);
    }
  };
  for (int64_t i = 0; i < X; ++i)
    for (int64_t j = 0; j < Y; ++j) {
      const bool border_ij = (i == 0 || i == X - 1 || j == 0 || j == Y - 1);
      const int64_t base = (i * Y + j) * Z;
      if (border_ij) {
        for (int64_t k = 0; k < Z; ++k) seed(base + k);
      } else if (Z > 0) {
        seed(base);
        seed(base + Z - 1);
      }
    }
  const int64_t sx = Y * Z, sy = Z;
  while (!queue.empty()) {
    const int64_t v = queue.front();
    queue.pop_front();
    const int64_t i = v / sx, j = (v / sy) % Y, k = v % Z;
    if (i > 0) seed(v - sx);
    if (i + 1 < X) seed(v + sx);
    if (j > 0) seed(v - sy);
    if (j + 1 < Y) seed(v + sy);
    if (k > 0) seed(v - 1);
    if (k + 1 < Z) seed(v + 1);
  }

  // Half-open bbox of the filled mask (state != 2) per axis; an axis without any foreground keeps its full extent.
  int64_t lo[3] = {X, Y, Z}, hi[3] = {-1, -1, -1};
  for (int64_t i = 0; i < X; ++i)
    for (int64_t j = 0; j < Y; ++j) {
      const uint8_t* row = state.data() + (i * Y + j) * Z;
      for (int64_t k = 0; k < Z; ++k)
        if (row[k] != 2) {
          lo[0] = std::min(lo[0], i), hi[0] = std::max(hi[0], i);
          lo[1] = std::min(lo[1], j), hi[1] = std::max(hi[1], j);
          lo[2] = std::min(lo[2], k), hi[2] = std::max(hi[2], k);
        }
    }
  CropResult r;
  const int64_t full[3] = {X, Y, Z};
  for (int d = 0; d < 3; ++d) {
    if (hi[d] < 0) {
      r.bbox.lo[d] = 0, r.bbox.hi[d] = full[d];
    } else {
      r.bbox.lo[d] = lo[d], r.bbox.hi[d] = hi[d] + 1;
    }
  }
  const Shape3 sz = r.bbox.size();
  r.data = Tensor(DType::Float32, {C, sz[0], sz[1], sz[2]});
  r.mask = Tensor(DType::UInt8, {sz[0], sz[1], sz[2]});
  float* od = r.data.data<float>();
  uint8_t* om = r.mask.data<uint8_t>();
  const int64_t cvol = sz[0] * sz[1] * sz[2];
  for (int64_t i = 0; i < sz[0]; ++i)
    for (int64_t j = 0; j < sz[1]; ++j) {
      const int64_t src = ((i + r.bbox.lo[0]) * Y + (j + r.bbox.lo[1])) * Z + r.bbox.lo[2];
      const int64_t dst = (i * sz[1] + j) * sz[2];
      for (int64_t k = 0; k < sz[2]; ++k) om[dst + k] = state[src + k] != 2 ? 1 : 0;
      for (int64_t c = 0; c < C; ++c)
        std::memcpy(od + c * cvol + dst, x + c * vol + src, sizeof(float) * (size_t)sz[2]);
    }
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// numpy float32 reductions, bit for bit.
//
// numpy 1.24 reduces a float32 array with np.add.reduce in chunks of its iterator buffer size (8192 elements);
// each chunk is summed with numpy's pairwise summation (pairwise_sum_FLOAT in loops_utils.h.src) and added to
// the running float32 result in order. Pairwise summation of n elements:
//   n < 8:      sequential sum starting from 0;
//   n <= 128:   8 accumulators r[0..7] initialised with the first 8 elements, each adds every 8th element,
//               combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the n % 8 remaining elements added in order;
//   otherwise:  split at n2 = n/2 rounded down to a multiple of 8 and add the two halves' pairwise sums.
// Verified against numpy 1.24.2 (python/make_seg_preprocess_refs.py writes the test data) for sizes up to 1e5.
// All additions are separate float32 operations (no FMA can arise: no products in the summed expressions).
namespace {

constexpr int64_t kNumpyBufSize = 8192;

float pairwise_sum_f32(const float* a, int64_t n) {
  if (n < 8) {
    float res = 0.0f;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    float r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum_f32(a, n2) + pairwise_sum_f32(a + n2, n - n2);
}

// np.add.reduce(a) for a contiguous float32 array (any shape, reduced over all axes).
float numpy_sum_f32(const float* a, int64_t n) {
  float res = 0.0f;
  for (int64_t i = 0; i < n; i += kNumpyBufSize) res += pairwise_sum_f32(a + i, std::min(kNumpyBufSize, n - i));
  return res;
}

// x.mean() and x.std() (ddof 0) as numpy 1.24 computes them for a contiguous float32 array:
//   mean = float32(double(sum) / n)                 (_mean: float32 scalar / intp -> float64, cast back)
//   std:  m = float32(sum) / float32(n)              (_var: keepdims array / intp -> float32 division)
//         ss = sum of float32 (x - m)^2              (the square stored as float32 before the sum)
//         std = float32(sqrt(float32(double(ss) / n)))
void numpy_mean_std_f32(const float* a, int64_t n, float* mean_out, float* std_out) {
  const float s = numpy_sum_f32(a, n);
  *mean_out = static_cast<float>(static_cast<double>(s) / static_cast<double>(n));
  const float m = s / static_cast<float>(n);
  std::vector<float> buf(static_cast<size_t>(std::min(kNumpyBufSize, n)));
  float ss = 0.0f;
  for (int64_t i = 0; i < n; i += kNumpyBufSize) {
    const int64_t len = std::min(kNumpyBufSize, n - i);
    for (int64_t k = 0; k < len; ++k) {
      const float d = a[i + k] - m;
      buf[k] = d * d;  // stored: the square is rounded to float32 before being summed
    }
    ss += pairwise_sum_f32(buf.data(), len);
  }
  const float var = static_cast<float>(static_cast<double>(ss) / static_cast<double>(n));
  *std_out = static_cast<float>(std::sqrt(static_cast<double>(var)));  // correctly rounded, like sqrtf
}

// Python's max(std, 1e-8) with a float32 std: the float32 std unless 1e-8 is larger, then 1e-8 (rounded to float32
// when it divides the float32 array).
float denom_of(float std) { return (1e-8 > static_cast<double>(std)) ? static_cast<float>(1e-8) : std; }

}  // namespace

void normalize_channel(float* x, int64_t n, const std::string& scheme, bool use_mask_for_norm, const uint8_t* mask,
                       const IntensityProperties& props) {
  if (n < 0 || (n > 0 && x == nullptr))
    seg_fail(ErrorCode::InvalidArgument, "normalize_channel(" + scheme + "): invalid data pointer/size");
  if (scheme == "CTNormalization") {
    // np.clip(image, p0.5, p99.5); image -= mean; image /= max(std, 1e-8): float32 arithmetic, scalars as float32.
    const float lo = static_cast<float>(props.percentile_00_5), hi = static_cast<float>(props.percentile_99_5);
    const float mean = static_cast<float>(props.mean);
    const float den = static_cast<float>(std::max(props.std, 1e-8));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      float v = std::min(std::max(x[i], lo), hi);
      v -= mean;
      x[i] = v / den;
    }
    return;
  }
  if (scheme == "ZScoreNormalization") {
    if (use_mask_for_norm) {
      if (mask == nullptr)
        seg_fail(ErrorCode::InvalidArgument, "normalize_channel(ZScoreNormalization): use_mask_for_norm needs a mask");
      std::vector<float> sel;
      for (int64_t i = 0; i < n; ++i)
        if (mask[i]) sel.push_back(x[i]);
      if (sel.empty()) return;  // numpy: mean of an empty selection is nan, but nothing is assigned
      float mean, std;
      numpy_mean_std_f32(sel.data(), (int64_t)sel.size(), &mean, &std);
      const float den = denom_of(std);
      for (int64_t i = 0; i < n; ++i)
        if (mask[i]) x[i] = (x[i] - mean) / den;
    } else {
      if (n == 0) return;
      float mean, std;
      numpy_mean_std_f32(x, n, &mean, &std);
      const float den = denom_of(std);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[i] - mean;
        x[i] = v / den;
      }
    }
    return;
  }
  if (scheme == "RescaleTo01Normalization") {
    if (n == 0) return;
    // image -= image.min(); image /= np.clip(image.max(), 1e-8, None)
    float mn = x[0];
    for (int64_t i = 1; i < n; ++i) mn = std::min(mn, x[i]);
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      x[i] -= mn;
      mx = std::max(mx, x[i]);
    }
    const float den = std::max(mx, static_cast<float>(1e-8));
    for (int64_t i = 0; i < n; ++i) x[i] /= den;
    return;
  }
  if (scheme == "RGBTo01Normalization") {
    for (int64_t i = 0; i < n; ++i)
      if (!(x[i] >= 0.0f && x[i] <= 255.0f))
        seg_fail(ErrorCode::InvalidArgument, "normalize_channel(RGBTo01Normalization): intensity " +
                                                 std::to_string(x[i]) + " outside the expected range [0, 255]");
    for (int64_t i = 0; i < n; ++i) x[i] /= 255.0f;
    return;
  }
  if (scheme == "NoNormalization") return;
  seg_fail(ErrorCode::Unsupported, "normalization scheme '" + scheme +
                                       "' is not supported (kiln implements CTNormalization, ZScoreNormalization, "
                                       "RescaleTo01Normalization, RGBTo01Normalization, NoNormalization)");
}

}  // namespace kiln::seg
