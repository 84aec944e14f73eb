#include "backends/cpu/deconv_gemm.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include <dnnl.h>
#include <omp.h>

#include "backends/cpu/dnnl_common.h"

namespace kiln::cpu {

bool GemmDeconv::applies(const ConvParams& p) {
  if (!p.transpose || p.G != 1) return false;
  for (int i = 0; i < 3; ++i)
    if (p.k[i] != p.stride[i] || p.dil[i] != 1 || p.pad_l[i] != 0 || p.out[i] != p.in[i] * p.k[i]) return false;
  return true;
}

void GemmDeconv::pack(const ConvParams& p, const float* w) {
  // oneDNN generates its sgemm kernels on the first call (~20 ms): done here, in prepare, not in the first run.
  static std::once_flag warm;
  std::call_once(warm, [] {
    float a[16] = {}, b[16] = {}, c[16];
    dnnl_sgemm('N', 'N', 4, 4, 4, 1.f, a, 4, b, 4, 0.f, c, 4);
    dnnl_sgemm('T', 'N', 4, 4, 4, 1.f, a, 4, b, 4, 0.f, c, 4);
  });
  const int64_t T = p.k_size();
  packed_.resize((size_t)(p.C * T * p.M));
  // ONNX: W[c][m][t] -> packed[c][t][m]
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t m = 0; m < p.M; ++m)
      for (int64_t t = 0; t < T; ++t) packed_[(size_t)((c * T + t) * p.M + m)] = w[(c * p.M + m) * T + t];
}

void GemmDeconv::unpack(const ConvParams& p, float* w) const {
  const int64_t T = p.k_size();
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t m = 0; m < p.M; ++m)
      for (int64_t t = 0; t < T; ++t) w[(c * p.M + m) * T + t] = packed_[(size_t)((c * T + t) * p.M + m)];
}

void GemmDeconv::run(const ConvParams& p, const float* x, const float* b, float* y, bool x_cl, bool y_cl,
                     const std::vector<PostOp>& post) const {
  const int64_t T = p.k_size(), M = p.M, C = p.C, TM = T * M, S = p.in_size();
  const int64_t k0 = p.k[0], k1 = p.k[1], k2 = p.k[2];
  const int64_t in1 = p.in[1], in2 = p.in[2];
  const int64_t o1 = p.out[1], o2 = p.out[2], So = p.out_size();
  // Rows per product: the result block (R x T*M floats) stays within ~512 KiB, in the core's L2 while it is
  // scattered.
  const int64_t R = std::clamp<int64_t>(((int64_t)1 << 17) / std::max<int64_t>(TM, 1) / 16 * 16, 16, 1024);
  const int64_t per_image = (S + R - 1) / R, chunks = p.N * per_image;
  // Bias repeated for the k2 adjacent output cells that one row writes contiguously (channels-last).
  std::vector<float> brow((size_t)TM, 0.f);
  if (b)
    for (int64_t t = 0; t < T; ++t) std::memcpy(brow.data() + t * M, b, (size_t)M * sizeof(float));
  const float* B = packed_.data();
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t n = ch / per_image, r0 = (ch % per_image) * R, nr = std::min(R, S - r0);
    float* tmp = reinterpret_cast<float*>(scratch_buffer((size_t)(R * TM) * sizeof(float)));
    // Inside this parallel region oneDNN's sgemm runs on the calling thread.
    if (x_cl)
      dnnl_sgemm('N', 'N', nr, TM, C, 1.f, x + (n * S + r0) * C, C, B, TM, 0.f, tmp, TM);
    else
      dnnl_sgemm('T', 'N', nr, TM, C, 1.f, x + n * C * S + r0, S, B, TM, 0.f, tmp, TM);
    for (int64_t r = 0; r < nr; ++r) {
      float* row = tmp + r * TM;
      for (int64_t j = 0; j < TM; ++j) row[j] += brow[j];
    }
    if (!post.empty()) apply_post_ops_ref(post, tmp, nr * TM, nullptr);
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t cell = r0 + r, i2 = cell % in2, i1 = (cell / in2) % in1, i0 = cell / (in2 * in1);
      const float* row = tmp + r * TM;
      for (int64_t t0 = 0; t0 < k0; ++t0)
        for (int64_t t1 = 0; t1 < k1; ++t1) {
          const float* src = row + (t0 * k1 + t1) * k2 * M;
          const int64_t ocell = ((i0 * k0 + t0) * o1 + i1 * k1 + t1) * o2 + i2 * k2;  // first of k2 adjacent cells
          if (y_cl) {
            std::memcpy(y + (n * So + ocell) * M, src, (size_t)(k2 * M) * sizeof(float));
          } else {
            float* yn = y + n * M * So + ocell;
            for (int64_t t2 = 0; t2 < k2; ++t2)
              for (int64_t m = 0; m < M; ++m) yn[m * So + t2] = src[t2 * M + m];
          }
        }
    }
  }
}

}  // namespace kiln::cpu
