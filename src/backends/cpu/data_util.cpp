// Strided copy / transpose kernels and symbolic-shape helpers for the data-movement operators.
#include "backends/cpu/data_util.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

namespace kiln {
namespace data {

namespace {

constexpr int64_t kParallelBytes = 1 << 19;  // below this a copy is not worth waking threads

// Drops size-1 axes and merges axes that are contiguous in the source. Returns false when empty.
bool simplify(const Shape& shape, const std::vector<int64_t>& strides, Shape* s, std::vector<int64_t>* t) {
  s->clear();
  t->clear();
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) return false;
    if (shape[i] == 1) continue;
    if (!s->empty() && t->back() == strides[i] * shape[i]) {
      s->back() *= shape[i];
      t->back() = strides[i];
    } else {
      s->push_back(shape[i]);
      t->push_back(strides[i]);
    }
  }
  return true;
}

template <class T>
void copy_elems_strided(T* dst, const T* src, int64_t n, int64_t stride) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i * stride];
}

// Offset of outer index r (over shape[0..k)) in the source.
inline int64_t outer_offset(int64_t r, const Shape& s, const std::vector<int64_t>& t, int k) {
  int64_t off = 0;
  for (int d = k - 1; d >= 0; --d) {
    int64_t q = r / s[d];
    off += (r - q * s[d]) * t[d];
    r = q;
  }
  return off;
}

// Rows of the last axis: each row is a run (memcpy when the run is contiguous, strided otherwise).
void copy_rows(uint8_t* dst, const uint8_t* src, const Shape& s, const std::vector<int64_t>& t, size_t esize) {
  const int k = (int)s.size();
  const int64_t run = s[k - 1], st = t[k - 1];
  int64_t rows = 1;
  for (int d = 0; d < k - 1; ++d) rows *= s[d];
  const int64_t total = rows * run * (int64_t)esize;
  const size_t run_bytes = (size_t)run * esize;
#pragma omp parallel if (total > kParallelBytes && rows > 1)
  {
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t r0 = rows * tid / nt, r1 = rows * (tid + 1) / nt;
    if (r0 < r1) {
      // Odometer over the outer axes, started at r0.
      std::vector<int64_t> idx(k > 1 ? k - 1 : 1, 0);
      int64_t rem = r0;
      for (int d = k - 2; d >= 0; --d) { idx[d] = rem % s[d]; rem /= s[d]; }
      int64_t off = outer_offset(r0, s, t, k - 1);
      for (int64_t r = r0; r < r1; ++r) {
        uint8_t* o = dst + r * (int64_t)run_bytes;
        const uint8_t* i = src + off * (int64_t)esize;
        if (st == 1) {
          std::memcpy(o, i, run_bytes);
        } else {
          visit_bytes(esize == 1 ? DType::UInt8 : esize == 2 ? DType::UInt16 : esize == 4 ? DType::UInt32 : DType::UInt64,
                      [&](auto tag) {
                        using T = decltype(tag);
                        copy_elems_strided((T*)o, (const T*)i, run, st);
                      });
        }
        for (int d = k - 2; d >= 0; --d) {
          off += t[d];
          if (++idx[d] < s[d]) break;
          off -= t[d] * s[d];
          idx[d] = 0;
        }
      }
    }
  }
}

#ifdef __AVX2__
// dst[i * ds + j] = src[i + j * ss] for an 8x8 block of 32-bit elements.
inline void transpose8x8(uint32_t* dst, int64_t ds, const uint32_t* src, int64_t ss) {
  __m256 r0 = _mm256_loadu_ps((const float*)(src + 0 * ss)), r1 = _mm256_loadu_ps((const float*)(src + 1 * ss));
  __m256 r2 = _mm256_loadu_ps((const float*)(src + 2 * ss)), r3 = _mm256_loadu_ps((const float*)(src + 3 * ss));
  __m256 r4 = _mm256_loadu_ps((const float*)(src + 4 * ss)), r5 = _mm256_loadu_ps((const float*)(src + 5 * ss));
  __m256 r6 = _mm256_loadu_ps((const float*)(src + 6 * ss)), r7 = _mm256_loadu_ps((const float*)(src + 7 * ss));
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps((float*)(dst + 0 * ds), _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps((float*)(dst + 1 * ds), _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps((float*)(dst + 2 * ds), _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps((float*)(dst + 3 * ds), _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps((float*)(dst + 4 * ds), _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps((float*)(dst + 5 * ds), _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps((float*)(dst + 6 * ds), _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps((float*)(dst + 7 * ds), _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

// 2-D tiled transpose of axes P (source-contiguous) and L (destination-contiguous, last).
template <class T>
void tiled(T* dst, const T* src, const Shape& s, const std::vector<int64_t>& t, int P) {
  constexpr int64_t B = sizeof(T) >= 8 ? 16 : 32;
  const int k = (int)s.size(), L = k - 1;
  std::vector<int64_t> dstr(k);
  {
    int64_t acc = 1;
    for (int d = k - 1; d >= 0; --d) { dstr[d] = acc; acc *= s[d]; }
  }
  // Outer axes: everything but P and L.
  Shape os;
  std::vector<int64_t> ot, od;
  for (int d = 0; d < k; ++d)
    if (d != P && d != L) { os.push_back(s[d]); ot.push_back(t[d]); od.push_back(dstr[d]); }
  int64_t n_outer = 1;
  for (auto v : os) n_outer *= v;
  const int64_t nP = s[P], nL = s[L], tL = t[L], dP = dstr[P];
  const int64_t bP = (nP + B - 1) / B, bL = (nL + B - 1) / B;
  const int64_t items = n_outer * bP * bL;
  const int64_t total = n_outer * nP * nL * (int64_t)sizeof(T);
  const int no = (int)os.size();
#pragma omp parallel for schedule(static) if (total > kParallelBytes && items > 1)
  for (int64_t it = 0; it < items; ++it) {
    int64_t o = it / (bP * bL), rem = it - o * (bP * bL);
    const int64_t ib = rem / bL, jb = rem - (rem / bL) * bL;
    int64_t soff = 0, doff = 0;
    for (int d = no - 1; d >= 0; --d) {
      int64_t q = o / os[d], x = o - q * os[d];
      soff += x * ot[d];
      doff += x * od[d];
      o = q;
    }
    const int64_t i0 = ib * B, i1 = std::min(nP, i0 + B);
    const int64_t j0 = jb * B, j1 = std::min(nL, j0 + B);
    const T* sp = src + soff;
    T* dp = dst + doff;
#ifdef __AVX2__
    if constexpr (sizeof(T) == 4) {
      // Full 8x8 blocks with AVX2, the ragged edges below element by element.
      const int64_t i8 = i0 + (i1 - i0) / 8 * 8, j8 = j0 + (j1 - j0) / 8 * 8;
      for (int64_t i = i0; i < i8; i += 8)
        for (int64_t j = j0; j < j8; j += 8)
          transpose8x8((uint32_t*)(dp + i * dP + j), dP, (const uint32_t*)(sp + i + j * tL), tL);
      for (int64_t i = i0; i < i1; ++i) {
        T* drow = dp + i * dP;
        const T* scol = sp + i;
        for (int64_t j = (i < i8 ? j8 : j0); j < j1; ++j) drow[j] = scol[j * tL];
      }
      continue;
    }
#endif
    for (int64_t i = i0; i < i1; ++i) {
      T* drow = dp + i * dP;
      const T* scol = sp + i;
      for (int64_t j = j0; j < j1; ++j) drow[j] = scol[j * tL];
    }
  }
}

}  // namespace

void strided_copy(void* dst, const void* src, const Shape& shape, const std::vector<int64_t>& src_strides, size_t esize) {
  Shape s;
  std::vector<int64_t> t;
  if (!simplify(shape, src_strides, &s, &t)) return;
  if (s.empty()) { std::memcpy(dst, src, esize); return; }
  const int k = (int)s.size();
  if (t[k - 1] != 1 && k >= 2) {
    int P = -1;
    for (int d = k - 2; d >= 0; --d)
      if (t[d] == 1) { P = d; break; }
    // Tiling pays off when both axes are long enough to fill a tile.
    if (P >= 0 && s[P] >= 4 && s[k - 1] >= 4) {
      switch (esize) {
        case 1: tiled((uint8_t*)dst, (const uint8_t*)src, s, t, P); return;
        case 2: tiled((uint16_t*)dst, (const uint16_t*)src, s, t, P); return;
        case 4: tiled((uint32_t*)dst, (const uint32_t*)src, s, t, P); return;
        case 8: tiled((uint64_t*)dst, (const uint64_t*)src, s, t, P); return;
        default: break;
      }
    }
  }
  copy_rows((uint8_t*)dst, (const uint8_t*)src, s, t, esize);
}

void strided_copy_naive(void* dst, const void* src, const Shape& shape, const std::vector<int64_t>& src_strides, size_t esize) {
  const int64_t n = shape_numel(shape);
  const int k = (int)shape.size();
  for (int64_t i = 0; i < n; ++i) {
    int64_t r = i, off = 0;
    for (int d = k - 1; d >= 0; --d) {
      off += (r % shape[d]) * src_strides[d];
      r /= shape[d];
    }
    std::memcpy((uint8_t*)dst + i * (int64_t)esize, (const uint8_t*)src + off * (int64_t)esize, esize);
  }
}

static void transpose_setup(const Shape& in_shape, const std::vector<int>& perm, Shape* out, std::vector<int64_t>* st) {
  auto is = strides_of(in_shape);
  out->clear();
  st->clear();
  for (int p : perm) { out->push_back(in_shape[p]); st->push_back(is[p]); }
}

void transpose(void* dst, const void* src, const Shape& in_shape, const std::vector<int>& perm, size_t esize) {
  Shape out;
  std::vector<int64_t> st;
  transpose_setup(in_shape, perm, &out, &st);
  strided_copy(dst, src, out, st, esize);
}

// Few channels (an RGB image entering a channels-last network): the general path copies rows of C elements, one
// short strided row per position; here each position gathers its C values from C sequential streams.
template <class T>
static void few_channels_to_cl(const T* src, T* dst, int64_t N, int64_t C, int64_t S) {
  for (int64_t n = 0; n < N; ++n) {
    const T* in = src + n * C * S;
    T* out = dst + n * C * S;
#pragma omp parallel for schedule(static) if (C * S * (int64_t)sizeof(T) > kParallelBytes)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t c = 0; c < C; ++c) out[s * C + c] = in[c * S + s];
  }
}

void layout_copy(const void* src, void* dst, int64_t N, int64_t C, int64_t S, size_t esize, bool to_cl) {
  if (to_cl && C > 1 && C <= 4 && S >= 64 && esize == 4) {
    few_channels_to_cl(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), N, C, S);
    return;
  }
  transpose(dst, src, to_cl ? Shape{N, C, S} : Shape{N, S, C}, {0, 2, 1}, esize);
}

void transpose_naive(void* dst, const void* src, const Shape& in_shape, const std::vector<int>& perm, size_t esize) {
  Shape out;
  std::vector<int64_t> st;
  transpose_setup(in_shape, perm, &out, &st);
  strided_copy_naive(dst, src, out, st, esize);
}

std::optional<std::vector<int64_t>> known_ints(const InferContext& ctx, int i) {
  if (!ctx.has_input(i) || !ctx.input_value(i)) return std::nullopt;
  return to_int64s(*ctx.input_value(i));
}

Dim dim_product(const std::vector<Dim>& dims, size_t begin, size_t end) {
  int64_t known = 1;
  int n_unknown = 0;
  Dim last;
  for (size_t i = begin; i < end; ++i) {
    if (dims[i].known()) known *= dims[i].value;
    else { ++n_unknown; last = dims[i]; }
  }
  if (n_unknown == 0) return Dim::of(known);
  if (known == 0) return Dim::of(0);
  if (n_unknown == 1 && known == 1) return last;
  return Dim();
}

Dim merge_equal(const Node& n, const Dim& a, const Dim& b, const std::string& what) {
  if (a.known() && b.known()) {
    if (a.value != b.value)
      fail(n.describe() + ": " + what + ": dimension " + std::to_string(a.value) + " does not match " + std::to_string(b.value));
    return a;
  }
  if (a.known()) return a;
  if (b.known()) return b;
  return a.symbol.empty() ? b : a;
}

std::vector<int64_t> physical_order(const std::vector<int64_t>& logical) {
  std::vector<int64_t> p = logical;
  if (p.size() >= 3) {
    p.erase(p.begin() + 1);
    p.push_back(logical[1]);
  }
  return p;
}

}  // namespace data
}  // namespace kiln
