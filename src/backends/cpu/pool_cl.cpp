#include "backends/cpu/pool_cl.h"

#include <algorithm>
#include <limits>

namespace kiln::cpu {

void max_pool_2d_cl(const mm::PoolGeom& g, const float* x, float* y) {
  const int64_t N = g.N, C = g.C, H = g.in[0], W = g.in[1], OH = g.out[0], OW = g.out[1];
  const int64_t KH = g.kernel[0], KW = g.kernel[1], SH = g.strides[0], SW = g.strides[1];
  const int64_t DH = g.dilations[0], DW = g.dilations[1], PT = g.pad_l[0], PL = g.pad_l[1];
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < N * OH; ++row) {
    const int64_t n = row / OH, oh = row % OH;
    const float* xn = x + n * H * W * C;
    float* yr = y + row * OW * C;
    // In-bounds taps along H: kh in [kh0, kh1).
    const int64_t h0 = oh * SH - PT;
    int64_t kh0 = 0, kh1 = KH;
    while (kh0 < KH && h0 + kh0 * DH < 0) ++kh0;
    while (kh1 > kh0 && h0 + (kh1 - 1) * DH >= H) --kh1;
    for (int64_t ow = 0; ow < OW; ++ow) {
      float* yp = yr + ow * C;
      const int64_t w0 = ow * SW - PL;
      int64_t kw0 = 0, kw1 = KW;
      while (kw0 < KW && w0 + kw0 * DW < 0) ++kw0;
      while (kw1 > kw0 && w0 + (kw1 - 1) * DW >= W) --kw1;
      if (kh0 >= kh1 || kw0 >= kw1) {
        std::fill(yp, yp + C, -std::numeric_limits<float>::infinity());
        continue;
      }
      // Channels in blocks of kBlock held in registers across the window's taps (8 AVX2 registers), the rest
      // accumulated in y.
      constexpr int64_t kBlock = 64;
      int64_t c0 = 0;
      for (; c0 + kBlock <= C; c0 += kBlock) {
        float acc[kBlock];
        const float* first = xn + ((h0 + kh0 * DH) * W + w0 + kw0 * DW) * C + c0;
        for (int64_t c = 0; c < kBlock; ++c) acc[c] = first[c];
        for (int64_t kh = kh0; kh < kh1; ++kh)
          for (int64_t kw = kh == kh0 ? kw0 + 1 : kw0; kw < kw1; ++kw) {
            const float* xp = xn + ((h0 + kh * DH) * W + w0 + kw * DW) * C + c0;
            for (int64_t c = 0; c < kBlock; ++c) acc[c] = xp[c] > acc[c] ? xp[c] : acc[c];
          }
        for (int64_t c = 0; c < kBlock; ++c) yp[c0 + c] = acc[c];
      }
      if (c0 < C) {
        const float* first = xn + ((h0 + kh0 * DH) * W + w0 + kw0 * DW) * C;
        std::copy(first + c0, first + C, yp + c0);
        for (int64_t kh = kh0; kh < kh1; ++kh)
          for (int64_t kw = kh == kh0 ? kw0 + 1 : kw0; kw < kw1; ++kw) {
            const float* xp = xn + ((h0 + kh * DH) * W + w0 + kw * DW) * C;
#pragma omp simd
            for (int64_t c = c0; c < C; ++c) yp[c] = xp[c] > yp[c] ? xp[c] : yp[c];
          }
      }
    }
  }
}

}  // namespace kiln::cpu
