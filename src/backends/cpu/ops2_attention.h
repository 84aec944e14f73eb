// Scaled dot-product attention kernels (ONNX Attention, opset 23/24), float32, on normalised
// 4-D buffers. The op (src/ops/attention.cpp) converts 3-D inputs, concatenates the KV cache and
// turns masks into an additive float bias before calling these.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

namespace kiln::cpu::ops2 {

struct AttnArgs {
  int64_t B = 0, Hq = 0, Hkv = 0, Sq = 0, T = 0, D = 0, Dv = 0;  // T: total kv length (past + new)
  const float* q = nullptr;  // [B, Hq, Sq, D]
  const float* k = nullptr;  // [B, Hkv, T, D]
  const float* v = nullptr;  // [B, Hkv, T, Dv]
  float scale = 1;
  float softcap = 0;          // <= 0: off
  // Additive mask, read broadcast: element (b, h, i, j) at mask[b*ms[0] + h*ms[1] + i*ms[2] + j]
  // for j < mask_len; keys j >= mask_len are masked out (the spec pads a short mask with -inf).
  const float* mask = nullptr;
  int64_t ms[3] = {0, 0, 0};
  int64_t mask_len = 0;
  bool causal = false;
  const int64_t* causal_offset = nullptr;  // per batch: key j allowed for query i iff j <= i + offset[b]
  const int64_t* kv_valid = nullptr;       // per batch: keys j >= kv_valid[b] masked (nonpad_kv_seqlen); null: none
  int qk_mode = 0;            // what qk_out receives: 0/1 softcapped scores, 2 plus bias, 3 softmax
  float* qk_out = nullptr;    // [B, Hq, Sq, T] or null
  float* y = nullptr;         // [B, Hq, Sq, Dv]
};

// Additive bias of one score row (b, h, i) into row[0..T).
inline void attn_bias_row(const AttnArgs& a, int64_t b, int64_t h, int64_t i, float* row) {
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < a.T; ++j) row[j] = 0.f;
  if (a.mask) {
    const float* m = a.mask + b * a.ms[0] + h * a.ms[1] + i * a.ms[2];
    const int64_t n = a.mask_len < a.T ? a.mask_len : a.T;
    for (int64_t j = 0; j < n; ++j) row[j] = m[j];
    for (int64_t j = n; j < a.T; ++j) row[j] = ninf;
  }
  if (a.causal) {
    const int64_t last = i + a.causal_offset[b];  // last allowed key
    for (int64_t j = last + 1 < 0 ? 0 : last + 1; j < a.T; ++j) row[j] = ninf;
  }
  if (a.kv_valid)
    for (int64_t j = a.kv_valid[b] < 0 ? 0 : a.kv_valid[b]; j < a.T; ++j) row[j] = ninf;
}

// Plain loops, double accumulation: the semantics the fast kernel is tested against.
void attention_ref(const AttnArgs& a);
// Blocked float32 kernel, OpenMP over (batch, head, query block).
void attention_fast(const AttnArgs& a);

}  // namespace kiln::cpu::ops2
