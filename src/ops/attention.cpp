// Attention (opset 23; opset 24 adds the nonpad_kv_seqlen input): scaled dot-product attention with
// optional KV cache (past_key/past_value -> present_key/present_value), grouped-query heads,
// boolean or additive mask, causal masking, softcap and the optional qk_matmul_output.
//
// Semantics (ONNX reference): 3-D inputs [B, S, H*D] are split into heads; scores = scale * Q K^T
// (scale defaults to 1/sqrt(D)); softcap (if > 0) maps s -> softcap * tanh(s / softcap); then the
// bias (mask, causal, padding) is added and a softmax taken over keys. A fully masked row gives
// zero probabilities (and a zero output row) instead of NaN. Query head h uses KV head
// h / (q_heads / kv_heads). Causal masking is bottom-right aligned by an offset: past length when
// past_key is given, else nonpad_kv_seqlen[b] - q_len when that input is given, else 0.
// qk_matmul_output: modes 0/1 the (softcapped) scores, 2 scores plus bias, 3 the softmax.
// Computation is float32 (float16/bfloat16/float64 inputs are converted).
#include <cmath>
#include <cstring>

#include "backends/cpu/ops2_attention.h"
#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

Dim dim_add(const Dim& a, const Dim& b) { return a.known() && b.known() ? Dim::of(a.value + b.value) : Dim(); }
Dim dim_mul(const Dim& a, int64_t k) { return a.known() ? Dim::of(a.value * k) : Dim(); }
Dim dim_div(const Dim& a, int64_t k) { return a.known() ? Dim::of(a.value / k) : Dim(); }

void store_f32(const float* src, Tensor& y) {
  Tensor v = Tensor::view(DType::Float32, y.shape(), const_cast<float*>(src));
  cpu::red_store_f32(v, y);
}

class AttentionK : public Kernel {
 public:
  AttentionK(const Node& n, int opset) : n_(n) {
    causal_ = n.attr_int("is_causal", 0) != 0;
    q_heads_ = n.attr_int("q_num_heads", 0);
    kv_heads_ = n.attr_int("kv_num_heads", 0);
    mode_ = n.attr_int("qk_matmul_output_mode", 0);
    has_scale_ = n.has_attr("scale");
    scale_ = n.attr_float("scale", 1.f);
    softcap_ = n.attr_float("softcap", 0.f);
    if (mode_ < 0 || mode_ > 3) fail(n.describe() + ": qk_matmul_output_mode must be 0..3, got " + std::to_string(mode_));
    if (q_heads_ < 0 || kv_heads_ < 0) fail(n.describe() + ": q_num_heads/kv_num_heads must be positive");
    if (n.num_inputs() < 3) fail(n.describe() + ": expects inputs Q, K, V");
    if (n.has_input(4) != n.has_input(5)) fail(n.describe() + ": past_key and past_value must be given together");
  }

  void infer(InferContext& ctx) override {
    const TensorType& q = ctx.input_type(0);
    const TensorType& k = ctx.input_type(1);
    const TensorType& v = ctx.input_type(2);
    if (!is_float(q.dtype)) unsupported(n_.describe() + ": Q type " + dtype_name(q.dtype) + " is not supported (float types only)");
    if (k.dtype != q.dtype || v.dtype != q.dtype) fail(n_.describe() + ": Q, K, V must have the same type");
    for (int o = 0; o < ctx.num_outputs(); ++o) ctx.set_output(o, unknown_type(q.dtype));
    if (!q.has_shape || !k.has_shape || !v.has_shape) return;
    const int r = q.rank();
    if ((r != 3 && r != 4) || k.rank() != r || v.rank() != r)
      fail(n_.describe() + ": Q, K, V must all be 3-D or all 4-D, got " + q.str() + ", " + k.str() + ", " + v.str());
    const bool has_past = ctx.has_input(4);
    Dim past_len = Dim::of(0);
    if (has_past) {
      const TensorType& pk = ctx.input_type(4);
      const TensorType& pv = ctx.input_type(5);
      if (pk.has_shape && pk.rank() != 4) fail(n_.describe() + ": past_key must be 4-D, got " + pk.str());
      if (pv.has_shape && pv.rank() != 4) fail(n_.describe() + ": past_value must be 4-D, got " + pv.str());
      past_len = pk.has_shape ? pk.dims[2] : Dim();
    }
    std::vector<Dim> y, pk, pv, qk;
    if (r == 3) {
      if (q_heads_ <= 0 || kv_heads_ <= 0)
        fail(n_.describe() + ": 3-D inputs need positive q_num_heads and kv_num_heads attributes");
      auto check_div = [&](const Dim& d, int64_t h, const char* what) {
        if (d.known() && d.value % h != 0)
          fail(n_.describe() + ": " + what + " hidden size " + std::to_string(d.value) + " is not divisible by " + std::to_string(h) + " heads");
      };
      check_div(q.dims[2], q_heads_, "Q");
      check_div(k.dims[2], kv_heads_, "K");
      check_div(v.dims[2], kv_heads_, "V");
      const Dim dv = dim_div(v.dims[2], kv_heads_), dk = dim_div(k.dims[2], kv_heads_);
      y = {q.dims[0], q.dims[1], dim_mul(dv, q_heads_)};
      pk = {q.dims[0], Dim::of(kv_heads_), dim_add(past_len, k.dims[1]), dk};
      pv = {q.dims[0], Dim::of(kv_heads_), dim_add(past_len, v.dims[1]), dv};
      qk = {q.dims[0], Dim::of(q_heads_), q.dims[1], dim_add(past_len, k.dims[1])};
    } else {
      y = {q.dims[0], q.dims[1], q.dims[2], v.dims[3]};
      pk = {k.dims[0], k.dims[1], dim_add(past_len, k.dims[2]), k.dims[3]};
      pv = {v.dims[0], v.dims[1], dim_add(past_len, v.dims[2]), v.dims[3]};
      qk = {q.dims[0], q.dims[1], q.dims[2], dim_add(past_len, k.dims[2])};
    }
    auto set = [&](int o, std::vector<Dim> dims) {
      if (o >= ctx.num_outputs()) return;
      TensorType t;
      t.dtype = q.dtype;
      t.has_shape = true;
      t.dims = std::move(dims);
      ctx.set_output(o, t);
    };
    set(0, y);
    set(1, pk);
    set(2, pv);
    set(3, qk);
  }

  void run(RunContext& ctx) override {
    const Tensor& Q = ctx.input(0);
    const Tensor& K = ctx.input(1);
    const Tensor& V = ctx.input(2);
    const int r = Q.rank();
    if ((r != 3 && r != 4) || K.rank() != r || V.rank() != r)
      fail(n_.describe() + ": Q, K, V must all be 3-D or all 4-D, got " + shape_str(Q.shape()) + ", " + shape_str(K.shape()) + ", " + shape_str(V.shape()));
    int64_t B = Q.dim(0), Hq, Hkv, Sq, Skv, Skv_v, D, Dk, Dv;
    if (r == 3) {
      Hq = q_heads_, Hkv = kv_heads_;
      if (Hq <= 0 || Hkv <= 0) fail(n_.describe() + ": 3-D inputs need q_num_heads and kv_num_heads");
      if (Q.dim(2) % Hq || K.dim(2) % Hkv || V.dim(2) % Hkv)
        fail(n_.describe() + ": hidden sizes of Q/K/V are not divisible by the head counts");
      Sq = Q.dim(1), Skv = K.dim(1), Skv_v = V.dim(1);
      D = Q.dim(2) / Hq, Dk = K.dim(2) / Hkv, Dv = V.dim(2) / Hkv;
    } else {
      Hq = Q.dim(1), Hkv = K.dim(1);
      if (V.dim(1) != Hkv) fail(n_.describe() + ": K and V head counts differ");
      Sq = Q.dim(2), Skv = K.dim(2), Skv_v = V.dim(2);
      D = Q.dim(3), Dk = K.dim(3), Dv = V.dim(3);
    }
    if (K.dim(0) != B || V.dim(0) != B) fail(n_.describe() + ": batch sizes of Q, K, V differ");
    if (Hkv <= 0 || Hq % Hkv != 0)
      fail(n_.describe() + ": q heads (" + std::to_string(Hq) + ") must be a multiple of kv heads (" + std::to_string(Hkv) + ")");
    if (D != Dk) fail(n_.describe() + ": Q head size " + std::to_string(D) + " differs from K head size " + std::to_string(Dk));
    if (Skv != Skv_v) fail(n_.describe() + ": K and V sequence lengths differ");
    int64_t P = 0;
    const Tensor *PK = nullptr, *PV = nullptr;
    if (ctx.has_input(4)) {
      PK = &ctx.input(4);
      PV = &ctx.input(5);
      if (PK->rank() != 4 || PV->rank() != 4 || PK->dim(0) != B || PK->dim(1) != Hkv || PK->dim(3) != D ||
          PV->dim(0) != B || PV->dim(1) != Hkv || PV->dim(3) != Dv || PV->dim(2) != PK->dim(2))
        fail(n_.describe() + ": past_key/past_value shapes " + shape_str(PK->shape()) + ", " + shape_str(PV->shape()) +
             " do not match [B, kv_heads, past, head_size]");
      P = PK->dim(2);
    }
    const int64_t T = P + Skv;

    cpu::ops2::AttnArgs a;
    a.B = B, a.Hq = Hq, a.Hkv = Hkv, a.Sq = Sq, a.T = T, a.D = D, a.Dv = Dv;
    a.scale = has_scale_ ? scale_ : 1.f / std::sqrt((float)D);
    a.softcap = softcap_;
    a.qk_mode = (int)mode_;

    // Q as [B, Hq, Sq, D] float32.
    Tensor qf = cpu::red_as_f32(Q), q4;
    if (r == 3) {
      q4 = Tensor(DType::Float32, {B, Hq, Sq, D});
      heads_first(qf.data<float>(), q4.data<float>(), B, Sq, Hq, D);
    } else {
      q4 = qf;
    }
    a.q = q4.data<float>();
    // K/V caches [B, Hkv, T, D|Dv]: past rows then new rows.
    Tensor kc = concat_kv(K, PK, B, Hkv, P, Skv, D, r == 3);
    Tensor vc = concat_kv(V, PV, B, Hkv, P, Skv, Dv, r == 3);
    a.k = kc.data<float>();
    a.v = vc.data<float>();
    if (ctx.has_output(1)) store_f32(kc.data<float>(), ctx.output(1));
    if (ctx.has_output(2)) store_f32(vc.data<float>(), ctx.output(2));

    // Mask -> additive float32, broadcast over [B, Hq, Sq, mask_len].
    Tensor mf;
    if (ctx.has_input(3)) {
      const Tensor& M = ctx.input(3);
      const int mr = M.rank();
      if (mr < 1 || mr > 4) fail(n_.describe() + ": attn_mask must have rank 1..4, got " + shape_str(M.shape()));
      if (M.dtype() == DType::Bool) {
        mf = Tensor(DType::Float32, M.shape());
        const uint8_t* m = M.data<uint8_t>();
        for (int64_t i = 0; i < M.numel(); ++i) mf.data<float>()[i] = m[i] ? 0.f : -INFINITY;
      } else if (is_float(M.dtype())) {
        mf = cpu::red_as_f32(M);
      } else {
        fail(n_.describe() + ": attn_mask must be bool or a float type, got " + dtype_name(M.dtype()));
      }
      const int64_t target[3] = {B, Hq, Sq};
      auto st = strides_of(M.shape());
      for (int k = 0; k < 3; ++k) {
        const int ax = mr - 4 + k;
        a.ms[k] = 0;
        if (ax < 0) continue;
        if (M.dim(ax) == target[k]) a.ms[k] = M.dim(ax) == 1 ? 0 : st[ax];
        else if (M.dim(ax) != 1)
          fail(n_.describe() + ": attn_mask shape " + shape_str(M.shape()) + " does not broadcast to [" + std::to_string(B) + ", " +
               std::to_string(Hq) + ", " + std::to_string(Sq) + ", " + std::to_string(T) + "]");
      }
      a.mask_len = M.dim(-1);
      if (a.mask_len > T) fail(n_.describe() + ": attn_mask last dim " + std::to_string(a.mask_len) + " exceeds total kv length " + std::to_string(T));
      a.mask = mf.data<float>();
    }
    std::vector<int64_t> nonpad, offsets(B, 0);
    if (ctx.has_input(6)) {
      nonpad = to_int64s(ctx.input(6));
      if ((int64_t)nonpad.size() != B) fail(n_.describe() + ": nonpad_kv_seqlen must have one entry per batch (" + std::to_string(B) + ")");
      for (auto& x : nonpad)
        if (x < 0 || x > T) fail(n_.describe() + ": nonpad_kv_seqlen value " + std::to_string(x) + " is outside [0, " + std::to_string(T) + "]");
      a.kv_valid = nonpad.data();
    }
    if (causal_) {
      for (int64_t b = 0; b < B; ++b) offsets[b] = PK ? P : (!nonpad.empty() ? nonpad[b] - Sq : 0);
      a.causal = true;
      a.causal_offset = offsets.data();
    }

    // Outputs.
    Tensor& Y = ctx.output(0);
    Tensor y4;
    const bool y_direct = r == 4 && Y.dtype() == DType::Float32;
    y4 = y_direct ? Tensor::view(DType::Float32, Y.shape(), Y.raw()) : Tensor(DType::Float32, {B, Hq, Sq, Dv});
    a.y = y4.data<float>();
    Tensor qk;
    if (ctx.has_output(3)) {
      Tensor& QK = ctx.output(3);
      qk = QK.dtype() == DType::Float32 ? Tensor::view(DType::Float32, QK.shape(), QK.raw()) : Tensor(DType::Float32, {B, Hq, Sq, T});
      a.qk_out = qk.data<float>();
    }
    if (B * Hq * Sq * T > 0) {
      cpu::ops2::attention_fast(a);
    }
    if (!y_direct) {
      if (r == 3) {
        Tensor t(DType::Float32, {B, Sq, Hq * Dv});
        seq_first(y4.data<float>(), t.data<float>(), B, Sq, Hq, Dv);
        store_f32(t.data<float>(), Y);
      } else {
        store_f32(y4.data<float>(), Y);
      }
    }
    if (ctx.has_output(3) && ctx.output(3).dtype() != DType::Float32) store_f32(qk.data<float>(), ctx.output(3));
  }

 private:
  // [B, S, H, D] -> [B, H, S, D]
  static void heads_first(const float* src, float* dst, int64_t B, int64_t S, int64_t H, int64_t D) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t h = 0; h < H; ++h)
          std::memcpy(dst + ((b * H + h) * S + s) * D, src + ((b * S + s) * H + h) * D, D * sizeof(float));
  }
  // [B, H, S, D] -> [B, S, H, D]
  static void seq_first(const float* src, float* dst, int64_t B, int64_t S, int64_t H, int64_t D) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t s = 0; s < S; ++s)
          std::memcpy(dst + ((b * S + s) * H + h) * D, src + ((b * H + h) * S + s) * D, D * sizeof(float));
  }
  static Tensor concat_kv(const Tensor& X, const Tensor* past, int64_t B, int64_t H, int64_t P, int64_t S, int64_t D, bool three_d) {
    Tensor out(DType::Float32, {B, H, P + S, D});
    Tensor xf = cpu::red_as_f32(X);
    Tensor pf = past ? cpu::red_as_f32(*past) : Tensor();
    float* o = out.data<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        float* dst = o + (b * H + h) * (P + S) * D;
        if (P) std::memcpy(dst, pf.data<float>() + (b * H + h) * P * D, P * D * sizeof(float));
        dst += P * D;
        if (three_d) {
          for (int64_t s = 0; s < S; ++s) std::memcpy(dst + s * D, xf.data<float>() + ((b * S + s) * H + h) * D, D * sizeof(float));
        } else if (S) {
          std::memcpy(dst, xf.data<float>() + (b * H + h) * S * D, S * D * sizeof(float));
        }
      }
    return out;
  }

  Node n_;
  bool causal_, has_scale_;
  int64_t q_heads_, kv_heads_, mode_;
  float scale_, softcap_;
};

}  // namespace

void register_attention(Registry& r) { r.add("Attention", 23, make_kernel<AttentionK>()); }

}  // namespace kiln
