#include "backends/cpu/conv_postops.h"

#include <immintrin.h>

#include <algorithm>

#include <cfloat>
#include <cmath>

#include "kiln/status.h"

namespace kiln::cpu {

namespace {
const char* const kNames[] = {"sum", "relu", "leaky_relu", "clip", "sigmoid", "tanh",
                              "hard_sigmoid", "hard_swish", "swish", "elu", "gelu"};
constexpr int kNumKinds = sizeof(kNames) / sizeof(kNames[0]);
}  // namespace

const char* post_kind_name(PostKind k) { return kNames[(int)k]; }

std::vector<PostOp> post_ops_of(const Node& n) {
  std::vector<PostOp> ops;
  auto it = n.attrs.find("kiln.post_ops");
  if (it == n.attrs.end()) return ops;
  if (it->second.kind != Attribute::Strings)
    throw Error(ErrorCode::InvalidModel, n.describe() + ": attribute 'kiln.post_ops' should be a list of strings");
  const auto& kinds = it->second.strings;
  std::vector<float> al = n.attr_floats("kiln.post_alpha"), be = n.attr_floats("kiln.post_beta");
  if (al.size() != kinds.size() || be.size() != kinds.size())
    throw Error(ErrorCode::InvalidModel, n.describe() + ": kiln.post_alpha/kiln.post_beta must have one entry per kiln.post_ops entry");
  int sums = 0;
  for (size_t i = 0; i < kinds.size(); ++i) {
    int k = 0;
    while (k < kNumKinds && kinds[i] != kNames[k]) ++k;
    if (k == kNumKinds) throw Error(ErrorCode::InvalidModel, n.describe() + ": unknown post-op '" + kinds[i] + "'");
    ops.push_back({(PostKind)k, al[i], be[i]});
    sums += k == (int)PostKind::Sum;
  }
  if (sums > 1) throw Error(ErrorCode::InvalidModel, n.describe() + ": at most one 'sum' post-op is allowed");
  return ops;
}

void set_post_ops(Node& n, const std::vector<PostOp>& ops) {
  Attribute k, a, b;
  k.kind = Attribute::Strings;
  a.kind = b.kind = Attribute::Floats;
  for (auto& o : ops) {
    k.strings.push_back(post_kind_name(o.kind));
    a.floats.push_back(o.alpha);
    b.floats.push_back(o.beta);
  }
  n.attrs["kiln.post_ops"] = k;
  n.attrs["kiln.post_alpha"] = a;
  n.attrs["kiln.post_beta"] = b;
}

bool has_sum(const std::vector<PostOp>& ops) {
  for (auto& o : ops)
    if (o.kind == PostKind::Sum) return true;
  return false;
}

void append_dnnl_post_ops(dnnl::post_ops& po, const std::vector<PostOp>& ops) {
  using A = dnnl::algorithm;
  for (auto& o : ops) {
    switch (o.kind) {
      case PostKind::Sum: po.append_sum(1.f); break;
      case PostKind::Relu: po.append_eltwise(1.f, A::eltwise_relu, 0.f, 0.f); break;
      case PostKind::LeakyRelu: po.append_eltwise(1.f, A::eltwise_relu, o.alpha, 0.f); break;
      case PostKind::Clip: po.append_eltwise(1.f, A::eltwise_clip_v2, o.alpha, o.beta); break;
      case PostKind::Sigmoid: po.append_eltwise(1.f, A::eltwise_logistic, 0.f, 0.f); break;
      case PostKind::Tanh: po.append_eltwise(1.f, A::eltwise_tanh, 0.f, 0.f); break;
      case PostKind::HardSigmoid:  // oneDNN 2.6 has no hardsigmoid: clip(alpha * x + beta, 0, 1)
        po.append_eltwise(1.f, A::eltwise_linear, o.alpha, o.beta);
        po.append_eltwise(1.f, A::eltwise_clip_v2, 0.f, 1.f);
        break;
      case PostKind::HardSwish: po.append_eltwise(1.f, A::eltwise_hardswish, 0.f, 0.f); break;
      case PostKind::Swish: po.append_eltwise(1.f, A::eltwise_swish, o.alpha, 0.f); break;
      case PostKind::Elu: po.append_eltwise(1.f, A::eltwise_elu, o.alpha, 0.f); break;
      case PostKind::Gelu: po.append_eltwise(1.f, A::eltwise_gelu_erf, 0.f, 0.f); break;
    }
  }
}

double apply_post_op_scalar(const PostOp& o, double x) {
  switch (o.kind) {
    case PostKind::Sum: return x;
    case PostKind::Relu: return x > 0 ? x : 0;
    case PostKind::LeakyRelu: return x >= 0 ? x : o.alpha * x;
    case PostKind::Clip: return x < o.alpha ? o.alpha : (x > o.beta ? o.beta : x);
    case PostKind::Sigmoid: return 1 / (1 + std::exp(-x));
    case PostKind::Tanh: return std::tanh(x);
    case PostKind::HardSigmoid: return std::fmax(0.0, std::fmin(1.0, o.alpha * x + o.beta));
    case PostKind::HardSwish: return x * std::fmax(0.0, std::fmin(1.0, x / 6 + 0.5));
    case PostKind::Swish: return x / (1 + std::exp(-o.alpha * x));
    case PostKind::Elu: return x >= 0 ? x : o.alpha * (std::exp(x) - 1);
    case PostKind::Gelu: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  }
  return x;
}

namespace {

// y = y >= 0 ? y : alpha * y in place, with the select done by a mask (compilers turn the plain loop into a
// conditional store, scalar and mispredicted half the time on activations). alpha * y rounded once to float is what
// the double evaluation in apply_post_op_scalar gives too (the product of two floats is exact in double); NaN and
// -0 pass through unchanged as there.
void leaky_relu_f32(float* y, int64_t n, float alpha) {
  int64_t i = 0;
  const __m256 a = _mm256_set1_ps(alpha), zero = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(y + i);
    _mm256_storeu_ps(y + i, _mm256_blendv_ps(v, _mm256_mul_ps(v, a), _mm256_cmp_ps(v, zero, _CMP_LT_OQ)));
  }
  for (; i < n; ++i) y[i] = y[i] < 0.f ? y[i] * alpha : y[i];
}

}  // namespace

void apply_post_ops_ref(const std::vector<PostOp>& ops, float* y, int64_t n, const float* sum) {
  if (ops.empty()) return;
  // Vectorisable float loops for the common chains (same results: a float sum / max / clamp is exact in either
  // precision); everything else evaluates in double.
  const bool big = n >= (1 << 15);
  auto is = [&](std::initializer_list<PostKind> ks) {
    if (ops.size() != ks.size()) return false;
    size_t i = 0;
    for (PostKind k : ks)
      if (ops[i++].kind != k) return false;
    return true;
  };
  if (is({PostKind::Relu})) {
#pragma omp parallel for simd schedule(static) if (big)
    for (int64_t i = 0; i < n; ++i) y[i] = y[i] > 0.f ? y[i] : 0.f;
    return;
  }
  if (is({PostKind::Sum})) {
#pragma omp parallel for simd schedule(static) if (big)
    for (int64_t i = 0; i < n; ++i) y[i] += sum[i];
    return;
  }
  if (is({PostKind::Sum, PostKind::Relu})) {
#pragma omp parallel for simd schedule(static) if (big)
    for (int64_t i = 0; i < n; ++i) {
      const float v = y[i] + sum[i];
      y[i] = v > 0.f ? v : 0.f;
    }
    return;
  }
  if (is({PostKind::LeakyRelu})) {
    const float alpha = ops[0].alpha;
    if (!big) {
      leaky_relu_f32(y, n, alpha);
      return;
    }
    const int64_t chunk = 1 << 14;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += chunk) leaky_relu_f32(y + i, std::min(chunk, n - i), alpha);
    return;
  }
  if (is({PostKind::Clip})) {
    const float lo = ops[0].alpha, hi = ops[0].beta;
#pragma omp parallel for simd schedule(static) if (big)
    for (int64_t i = 0; i < n; ++i) y[i] = y[i] < lo ? lo : (y[i] > hi ? hi : y[i]);
    return;
  }
#pragma omp parallel for schedule(static) if (big)
  for (int64_t i = 0; i < n; ++i) {
    double v = y[i];
    for (auto& o : ops) v = o.kind == PostKind::Sum ? v + (double)sum[i] : apply_post_op_scalar(o, v);
    y[i] = (float)v;
  }
}

}  // namespace kiln::cpu
