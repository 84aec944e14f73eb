// Fast float32 kernels for reductions, softmax and normalisations (AVX2 where available, OpenMP over rows).
// Every kernel here has a plain reference in the op files; tests/unit/reduce_norm_test.cpp compares them.
#pragma once
#include <cstdint>

namespace kiln::cpu {

enum class RedOp { Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare };

// x viewed as [outer, R, inner] (contiguous), y as [outer, inner]. R may be 0 (empty-set results).
void red_reduce_f32(RedOp op, const float* x, float* y, int64_t outer, int64_t R, int64_t inner);

// Softmax (log=false) or LogSoftmax (log=true) over the middle axis of [outer, R, inner].
void red_softmax_f32(bool log, const float* x, float* y, int64_t outer, int64_t R, int64_t inner);

// exp of n floats (vectorised; max relative error about 2 ulp vs std::exp for |x| <= 87).
void red_exp_f32(const float* x, float* y, int64_t n);

// Mean and 1/sqrt(var + eps) of each row of [rows, n]; one read per row (shifted sums in double).
void red_row_moments_f32(const float* x, int64_t rows, int64_t n, float eps, float* mean, float* inv_std);

// y[r, i] = (x[r, i] - mean[r]) * inv_std[r] * scale[i] + bias[i]; scale/bias of length n (bias may be null).
void red_row_normalize_f32(const float* x, float* y, int64_t rows, int64_t n, const float* mean, const float* inv_std,
                           const float* scale, const float* bias);

// y[r, i] = x[r, i] * a[r] + b[r] (per-row affine, used by instance/group/batch norm).
void red_row_affine_f32(const float* x, float* y, int64_t rows, int64_t n, const float* a, const float* b);

// RMS norm rows: y = x / sqrt(mean(x^2) + eps) * scale[i].
void red_rms_norm_f32(const float* x, float* y, int64_t rows, int64_t n, float eps, const float* scale);

// C[b] = A[b] (MxK) * B[b] (KxN), all contiguous row-major; C is overwritten.
void red_batched_matmul_f32(const float* A, const float* B, float* C, int64_t batch, int64_t M, int64_t K, int64_t N);

}  // namespace kiln::cpu
