// BatchNormalization, InstanceNormalization, LayerNormalization, GroupNormalization, LpNormalization,
// MeanVarianceNormalization, RMSNormalization.
// All statistics are computed in float32/double from float32 staging copies of non-float32 inputs (the
// stash_type=1 behaviour of the newer ops); parameters are expanded to per-row or per-element arrays and the
// fast row kernels of backends/cpu/red_kernels.h do the work.
#include <omp.h>

#include <cmath>

#include "backends/cpu/conv_postops.h"
#include "backends/cpu/red_kernels.h"
#include "backends/cpu/red_util.h"

#include "ops/common.h"

namespace kiln {
namespace {

void require_float(const Node& n, DType t, const char* what) {
  if (!is_float(t)) unsupported(n.describe() + ": " + what + " of type " + dtype_name(t) + " is not supported (float types only)");
}

// A parameter tensor as float32 values broadcast (numpy rules, right-aligned) to `target`.
std::vector<float> expand_param(const Node& n, const Tensor& p, const Shape& target, const char* what) {
  Tensor pf = cpu::red_as_f32(p);
  const int64_t total = shape_numel(target);
  std::vector<float> out((size_t)total);
  if (p.shape() == target) {
    std::copy(pf.data<float>(), pf.data<float>() + total, out.begin());
    return out;
  }
  bool ok = p.rank() <= (int)target.size();
  for (int i = 0; ok && i < p.rank(); ++i) {
    int64_t d = p.shape()[p.rank() - 1 - i], t = target[target.size() - 1 - i];
    if (d != 1 && d != t) ok = false;
  }
  if (!ok) fail(n.describe() + ": " + what + " of shape " + shape_str(p.shape()) + " does not broadcast to " + shape_str(target));
  auto st = broadcast_strides(p.shape(), target);
  const int r = (int)target.size();
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;
  for (int64_t i = 0; i < total; ++i) {
    out[i] = pf.data<float>()[off];
    for (int d = r - 1; d >= 0; --d) {
      off += st[d];
      if (++idx[d] < target[d]) break;
      off -= st[d] * idx[d];
      idx[d] = 0;
    }
  }
  return out;
}

// A 1-D parameter of exactly `len` elements, as float32.
std::vector<float> vec_param(const Node& n, const Tensor& p, int64_t len, const char* what) {
  if (p.numel() != len || p.rank() > 1)
    fail(n.describe() + ": " + what + " must have shape [" + std::to_string(len) + "], got " + shape_str(p.shape()));
  Tensor pf = cpu::red_as_f32(p);
  return std::vector<float>(pf.data<float>(), pf.data<float>() + len);
}

// Output Y = input type; rank >= min_rank checked when known.
void same_as_input(const Node& n, InferContext& ctx, int min_rank) {
  const TensorType& x = ctx.input_type(0);
  require_float(n, x.dtype, "input");
  if (x.has_shape && x.rank() < min_rank)
    fail(n.describe() + ": input must have rank >= " + std::to_string(min_rank) + ", got " + x.str());
  ctx.set_output(0, x);
}

// ---------------------------------------------------------------------------------------------------

class BatchNormK : public Kernel {
 public:
  BatchNormK(const Node& n, int opset) : node_(n) {
    eps_ = n.attr_float("epsilon", 1e-5f);
    momentum_ = n.attr_float("momentum", 0.9f);
    if (opset >= 14) {
      training_ = n.attr_int("training_mode", 0) != 0;
    } else {
      int outs = 0;
      for (auto& o : n.outputs) outs += !o.empty();
      if (outs > 1) unsupported(n.describe() + ": training-mode BatchNormalization (extra outputs) needs opset 14+");
      if (opset < 9 && n.attr_int("spatial", 1) == 0) unsupported(n.describe() + ": spatial=0 is not supported");
    }
    if (!training_ && n.outputs.size() > 1)
      for (size_t i = 1; i < n.outputs.size(); ++i)
        if (!n.outputs[i].empty()) fail(n.describe() + ": running_mean/var outputs need training_mode=1");
    // Activations fused by graph/passes (fuse_activation), applied to the normalized output.
    post_ = cpu::post_ops_of(n);
    if (cpu::has_sum(post_)) fail(n.describe() + ": a fused 'sum' is not supported on BatchNormalization");
    if (!post_.empty() && training_) fail(n.describe() + ": fused activations need inference mode");
  }
  void infer(InferContext& ctx) override {
    same_as_input(node_, ctx, 2);
    for (int i = 1; i < 5; ++i)
      if (!ctx.has_input(i)) fail(node_.describe() + ": expects 5 inputs (X, scale, B, input_mean, input_var)");
    if (!post_.empty() && ctx.input_type(0).dtype != DType::Float32)
      unsupported(node_.describe() + ": fused activations need float32, got " + dtype_name(ctx.input_type(0).dtype));
    for (int o = 1; o < ctx.num_outputs() && o < 3; ++o) ctx.set_output(o, ctx.input_type(o + 2));
  }
  // Inference on float32 channels-last data: a per-channel affine over rows of C contiguous channels.
  LayoutRule layout_rule(const std::vector<const TensorType*>& types, const std::vector<Layout>& layouts) const override {
    if (!training_ && types[0] && types[0]->dtype == DType::Float32 && layouts[0] == Layout::ChannelsLast)
      return LayoutRule::ChannelsLast;
    return LayoutRule::PlainOnly;
  }

  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    if (!post_.empty() && (x.dtype() != DType::Float32 || ctx.output(0).dtype() != DType::Float32))
      unsupported(node_.describe() + ": fused activations need float32, got " + dtype_name(x.dtype()));
    const int64_t N = x.dim(0), C = x.dim(1), S = x.numel() / std::max<int64_t>(1, N * C);
    auto scale = vec_param(node_, ctx.input(1), C, "scale");
    auto bias = vec_param(node_, ctx.input(2), C, "B");
    auto mean = vec_param(node_, ctx.input(3), C, "input_mean");
    auto var = vec_param(node_, ctx.input(4), C, "input_var");
    if (ctx.input_layout(0) == Layout::ChannelsLast) {
      std::vector<float> a(C), b(C);
      for (int64_t c = 0; c < C; ++c) {
        float inv = 1.f / std::sqrt(var[c] + eps_);
        a[c] = scale[c] * inv;
        b[c] = bias[c] - mean[c] * scale[c] * inv;
      }
      const float* xp = x.data<float>();
      float* yp = ctx.output(0).data<float>();
      const int64_t rows = N * S;
      const bool relu = post_.size() == 1 && post_[0].kind == cpu::PostKind::Relu;
      if (relu) {
#pragma omp parallel for schedule(static) if (rows * C > (1 << 15))
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < C; ++c) yp[r * C + c] = std::max(xp[r * C + c] * a[c] + b[c], 0.f);
        return;
      }
#pragma omp parallel for schedule(static) if (rows * C > (1 << 15))
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < C; ++c) yp[r * C + c] = xp[r * C + c] * a[c] + b[c];
      cpu::apply_post_ops_ref(post_, yp, rows * C, nullptr);
      return;
    }
    Tensor xf = cpu::red_as_f32(x);
    Tensor yf = cpu::red_out_f32(ctx.output(0));
    const float* xp = xf.data<float>();
    if (training_) {
      // Batch statistics over N and the spatial axes (biased variance), in double.
      std::vector<double> bm(C, 0), bv(C, 0);
      for (int64_t c = 0; c < C; ++c) {
        double s = 0, q = 0;
        for (int64_t n = 0; n < N; ++n)
          for (int64_t i = 0; i < S; ++i) s += xp[(n * C + c) * S + i];
        const double cnt = (double)(N * S);
        double m = cnt ? s / cnt : 0;
        for (int64_t n = 0; n < N; ++n)
          for (int64_t i = 0; i < S; ++i) q += (xp[(n * C + c) * S + i] - m) * (xp[(n * C + c) * S + i] - m);
        bm[c] = m;
        bv[c] = cnt ? q / cnt : 0;
      }
      for (int o = 1; o <= 2; ++o) {
        if (!ctx.has_output(o)) continue;
        Tensor& out = ctx.output(o);
        Tensor of = cpu::red_out_f32(out);
        for (int64_t c = 0; c < C; ++c)
          of.data<float>()[c] = o == 1 ? (float)(mean[c] * momentum_ + bm[c] * (1 - momentum_))
                                       : (float)(var[c] * momentum_ + bv[c] * (1 - momentum_));
        cpu::red_store_f32(of, out);
      }
      for (int64_t c = 0; c < C; ++c) { mean[c] = (float)bm[c]; var[c] = (float)bv[c]; }
    }
    std::vector<float> a(N * C), b(N * C);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        float inv = 1.f / std::sqrt(var[c] + eps_);
        a[n * C + c] = scale[c] * inv;
        b[n * C + c] = bias[c] - mean[c] * scale[c] * inv;
      }
    cpu::red_row_affine_f32(xp, yf.data<float>(), N * C, S, a.data(), b.data());
    cpu::apply_post_ops_ref(post_, yf.data<float>(), yf.numel(), nullptr);
    cpu::red_store_f32(yf, ctx.output(0));
  }

 private:
  Node node_;
  float eps_, momentum_;
  bool training_ = false;
  std::vector<cpu::PostOp> post_;
};

// ---------------------------------------------------------------------------------------------------

// Group statistics over [N, G, (C/G)*S] rows then a per-channel affine. InstanceNorm is G = C.
void group_norm_f32(const float* x, float* y, int64_t N, int64_t C, int64_t G, int64_t S, float eps,
                    const std::vector<float>& scale_c, const std::vector<float>& bias_c) {
  const int64_t cg = C / G;
  std::vector<float> mean(N * G), inv(N * G), a(N * C), b(N * C);
  cpu::red_row_moments_f32(x, N * G, cg * S, eps, mean.data(), inv.data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      int64_t r = n * G + c / cg;
      a[n * C + c] = scale_c[c] * inv[r];
      b[n * C + c] = bias_c[c] - mean[r] * scale_c[c] * inv[r];
    }
  cpu::red_row_affine_f32(x, y, N * C, S, a.data(), b.data());
}

void instance_norm_channels_last(const float* x, float* y, int64_t N, int64_t C, int64_t S, float eps,
                                 const std::vector<float>& scale, const std::vector<float>& bias,
                                 const std::vector<cpu::PostOp>& post);

class InstanceNormK : public Kernel {
 public:
  InstanceNormK(const Node& n, int) : node_(n), eps_(n.attr_float("epsilon", 1e-5f)) {
    // Activations fused by graph/passes (fuse_activation: nnU-Net's InstanceNorm -> LeakyReLU), applied to the
    // normalized output in the same pass.
    post_ = cpu::post_ops_of(n);
    if (cpu::has_sum(post_)) fail(n.describe() + ": a fused 'sum' is not supported on InstanceNormalization");
  }
  void infer(InferContext& ctx) override {
    same_as_input(node_, ctx, 2);
    if (!ctx.has_input(1) || !ctx.has_input(2)) fail(node_.describe() + ": expects 3 inputs (input, scale, B)");
    if (!post_.empty() && ctx.input_type(0).dtype != DType::Float32)
      unsupported(node_.describe() + ": fused activations need float32, got " + dtype_name(ctx.input_type(0).dtype));
  }
  // Float32 channels-last input is normalised in place of the layout (output channels-last too).
  LayoutRule layout_rule(const std::vector<const TensorType*>& types, const std::vector<Layout>& layouts) const override {
    if (types[0] && types[0]->dtype == DType::Float32 && layouts[0] == Layout::ChannelsLast) return LayoutRule::ChannelsLast;
    return LayoutRule::PlainOnly;
  }
  // The statistics are gathered before anything is written, and each output element depends only on the input
  // element in its place: the plan may write Y over X.
  int inplace_input() const override { return 0; }

  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const int64_t N = x.dim(0), C = x.dim(1), S = x.numel() / std::max<int64_t>(1, N * C);
    auto scale = vec_param(node_, ctx.input(1), C, "scale");
    auto bias = vec_param(node_, ctx.input(2), C, "B");
    if (ctx.input_layout(0) == Layout::ChannelsLast) {
      if (x.numel())
        instance_norm_channels_last(x.data<float>(), ctx.output(0).data<float>(), N, C, S, eps_, scale, bias, post_);
      return;
    }
    Tensor xf = cpu::red_as_f32(x);
    Tensor yf = cpu::red_out_f32(ctx.output(0));
    if (x.numel()) group_norm_f32(xf.data<float>(), yf.data<float>(), N, C, C, S, eps_, scale, bias);
    cpu::apply_post_ops_ref(post_, yf.data<float>(), yf.numel(), nullptr);
    cpu::red_store_f32(yf, ctx.output(0));
  }

 private:
  Node node_;
  float eps_;
  std::vector<cpu::PostOp> post_;
};

// x, y: N x S x C (channels-last); y may be x. One read for the statistics, one read and write for the result.
// Statistics: each thread takes one contiguous range of rows, in blocks of up to 64 rows (L1-resident): a block's
// mean and sum of squared deviations from it in float, merged into the thread's running count / mean / sum of
// squares in double (Chan et al.'s pairwise update), then the threads' partials merged in thread order
// (deterministic for a given thread count). The float sums are of x minus the block's first row, and the squares of
// deviations from the block's own mean, so the data's offset costs no digits. Then y = post(x * a + b) per channel,
// a block of rows at a time.
void instance_norm_channels_last(const float* x, float* y, int64_t N, int64_t C, int64_t S, float eps,
                                 const std::vector<float>& scale, const std::vector<float>& bias,
                                 const std::vector<cpu::PostOp>& post) {
  constexpr int64_t kBlock = 64;
  const int T = S * C > (1 << 15) ? omp_get_max_threads() : 1;
  struct Moments { double count = 0; std::vector<double> mean, m2; };
  std::vector<Moments> part(T);
  std::vector<float> a(C), b(C);
  auto merge = [C](Moments& into, double n2, const double* mean2, const double* m22) {
    const double n1 = into.count, n = n1 + n2;
    if (n2 == 0) return;
    for (int64_t c = 0; c < C; ++c) {
      const double d = mean2[c] - into.mean[c];
      into.mean[c] += d * (n2 / n);
      into.m2[c] += m22[c] + d * d * (n1 * n2 / n);
    }
    into.count = n;
  };
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x + n * S * C;
    float* yn = y + n * S * C;
#pragma omp parallel num_threads(T)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t s0 = S * t / nt, s1 = S * (t + 1) / nt;
      Moments& mo = part[t];
      mo.count = 0;
      mo.mean.assign(C, 0.0);
      mo.m2.assign(C, 0.0);
      std::vector<float> bs(C), bq(C);
      std::vector<double> bmean(C), bm2(C);
      for (int64_t r0 = s0; r0 < s1; r0 += kBlock) {
        const int64_t nr = std::min(kBlock, s1 - r0);
        const float* blk = xn + r0 * C;  // its first row (k) is the shift: sums of x - k stay small
        std::fill(bs.begin(), bs.end(), 0.f);
        std::fill(bq.begin(), bq.end(), 0.f);
        for (int64_t r = 1; r < nr; ++r)
          for (int64_t c = 0; c < C; ++c) bs[c] += blk[r * C + c] - blk[c];
        const float inv_nr = 1.f / (float)nr;
        for (int64_t c = 0; c < C; ++c) bs[c] *= inv_nr;  // block mean - k
        for (int64_t r = 0; r < nr; ++r)
          for (int64_t c = 0; c < C; ++c) {
            const float d = (blk[r * C + c] - blk[c]) - bs[c];
            bq[c] += d * d;
          }
        for (int64_t c = 0; c < C; ++c) { bmean[c] = (double)blk[c] + (double)bs[c]; bm2[c] = bq[c]; }
        merge(mo, (double)nr, bmean.data(), bm2.data());
      }
    }
    Moments all;
    all.mean.assign(C, 0.0);
    all.m2.assign(C, 0.0);
    for (int t = 0; t < T; ++t) merge(all, part[t].count, part[t].mean.data(), part[t].m2.data());
    for (int64_t c = 0; c < C; ++c) {
      const double var = all.m2[c] / (double)S;
      const double inv = 1.0 / std::sqrt(var + (double)eps);
      a[c] = (float)(inv * scale[c]);
      b[c] = (float)(bias[c] - all.mean[c] * inv * scale[c]);
    }
    const int64_t blocks = (S + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) num_threads(T)
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const int64_t r0 = bi * kBlock, nr = std::min(kBlock, S - r0);
      const float* in = xn + r0 * C;
      float* out = yn + r0 * C;
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t c = 0; c < C; ++c) out[r * C + c] = in[r * C + c] * a[c] + b[c];
      cpu::apply_post_ops_ref(post, out, nr * C, nullptr);
    }
  }
}

class GroupNormK : public Kernel {
 public:
  GroupNormK(const Node& n, int opset) : node_(n), per_channel_(opset >= 21) {
    eps_ = n.attr_float("epsilon", 1e-5f);
    groups_ = n.required_int("num_groups");
    if (groups_ <= 0) fail(n.describe() + ": num_groups must be positive, got " + std::to_string(groups_));
    int64_t stash = n.attr_int("stash_type", 1);
    if (stash != 1) unsupported(n.describe() + ": stash_type " + std::to_string(stash) + " is not supported (only 1, float32)");
  }
  void infer(InferContext& ctx) override {
    same_as_input(node_, ctx, 2);
    if (!ctx.has_input(1) || !ctx.has_input(2)) fail(node_.describe() + ": expects 3 inputs (X, scale, bias)");
    const TensorType& x = ctx.input_type(0);
    if (x.has_shape && x.dims[1].known() && x.dims[1].value % groups_ != 0)
      fail(node_.describe() + ": channels " + std::to_string(x.dims[1].value) + " are not divisible by num_groups " + std::to_string(groups_));
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const int64_t N = x.dim(0), C = x.dim(1), S = x.numel() / std::max<int64_t>(1, N * C);
    if (C % groups_) fail(node_.describe() + ": channels " + std::to_string(C) + " are not divisible by num_groups " + std::to_string(groups_));
    std::vector<float> scale, bias;
    if (per_channel_) {
      scale = vec_param(node_, ctx.input(1), C, "scale");
      bias = vec_param(node_, ctx.input(2), C, "bias");
    } else {  // opset 18: one value per group
      auto sg = vec_param(node_, ctx.input(1), groups_, "scale");
      auto bg = vec_param(node_, ctx.input(2), groups_, "bias");
      for (int64_t c = 0; c < C; ++c) { scale.push_back(sg[c / (C / groups_)]); bias.push_back(bg[c / (C / groups_)]); }
    }
    Tensor xf = cpu::red_as_f32(x);
    Tensor yf = cpu::red_out_f32(ctx.output(0));
    if (x.numel()) group_norm_f32(xf.data<float>(), yf.data<float>(), N, C, groups_, S, eps_, scale, bias);
    cpu::red_store_f32(yf, ctx.output(0));
  }

 private:
  Node node_;
  bool per_channel_;
  float eps_;
  int64_t groups_;
};

// ---------------------------------------------------------------------------------------------------

class LayerNormK : public Kernel {
 public:
  LayerNormK(const Node& n, int) : node_(n) {
    axis_ = n.attr_int("axis", -1);
    eps_ = n.attr_float("epsilon", 1e-5f);
    int64_t stash = n.attr_int("stash_type", 1);
    if (stash != 1) unsupported(n.describe() + ": stash_type " + std::to_string(stash) + " is not supported (only 1, float32)");
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    require_float(node_, x.dtype, "input");
    if (!ctx.has_input(1)) fail(node_.describe() + ": expects the Scale input");
    ctx.set_output(0, x);
    TensorType st = unknown_type(DType::Float32);
    if (x.has_shape) {
      int a = normalize_axis(axis_, x.rank(), node_);
      st.has_shape = true;
      for (int d = 0; d < x.rank(); ++d) st.dims.push_back(d < a ? x.dims[d] : Dim::of(1));
    }
    for (int o = 1; o < ctx.num_outputs() && o < 3; ++o) ctx.set_output(o, st);
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    int a = normalize_axis(axis_, x.rank(), node_);
    Shape norm_shape(x.shape().begin() + a, x.shape().end());
    int64_t rows = 1, n = shape_numel(norm_shape);
    for (int d = 0; d < a; ++d) rows *= x.dim(d);
    auto scale = expand_param(node_, ctx.input(1), norm_shape, "Scale");
    std::vector<float> bias;
    if (ctx.has_input(2)) bias = expand_param(node_, ctx.input(2), norm_shape, "B");
    Tensor xf = cpu::red_as_f32(x);
    Tensor yf = cpu::red_out_f32(ctx.output(0));
    std::vector<float> mean(rows), inv(rows);
    cpu::red_row_moments_f32(xf.data<float>(), rows, n, eps_, mean.data(), inv.data());
    cpu::red_row_normalize_f32(xf.data<float>(), yf.data<float>(), rows, n, mean.data(), inv.data(), scale.data(),
                               bias.empty() ? nullptr : bias.data());
    cpu::red_store_f32(yf, ctx.output(0));
    if (ctx.has_output(1)) std::copy(mean.begin(), mean.end(), ctx.output(1).data<float>());
    if (ctx.has_output(2)) std::copy(inv.begin(), inv.end(), ctx.output(2).data<float>());
  }

 private:
  Node node_;
  int64_t axis_;
  float eps_;
};

class RMSNormK : public Kernel {
 public:
  RMSNormK(const Node& n, int) : node_(n) {
    axis_ = n.attr_int("axis", -1);
    eps_ = n.attr_float("epsilon", 1e-5f);
    int64_t stash = n.attr_int("stash_type", 1);
    if (stash != 1) unsupported(n.describe() + ": stash_type " + std::to_string(stash) + " is not supported (only 1, float32)");
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    require_float(node_, x.dtype, "input");
    if (!ctx.has_input(1)) fail(node_.describe() + ": expects the scale input");
    if (x.has_shape) normalize_axis(axis_, x.rank(), node_);
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    int a = normalize_axis(axis_, x.rank(), node_);
    Shape norm_shape(x.shape().begin() + a, x.shape().end());
    int64_t rows = 1, n = shape_numel(norm_shape);
    for (int d = 0; d < a; ++d) rows *= x.dim(d);
    auto scale = expand_param(node_, ctx.input(1), norm_shape, "scale");
    Tensor xf = cpu::red_as_f32(x);
    Tensor yf = cpu::red_out_f32(ctx.output(0));
    cpu::red_rms_norm_f32(xf.data<float>(), yf.data<float>(), rows, n, eps_, scale.data());
    cpu::red_store_f32(yf, ctx.output(0));
  }

 private:
  Node node_;
  int64_t axis_;
  float eps_;
};

// ---------------------------------------------------------------------------------------------------

// LpNormalization: x / ||x||_p along `axis` (p = 1 or 2). A zero norm leaves the zeros as they are.
class LpNormK : public Kernel {
 public:
  LpNormK(const Node& n, int) : node_(n) {
    axis_ = n.attr_int("axis", -1);
    p_ = n.attr_int("p", 2);
    if (p_ != 1 && p_ != 2) fail(n.describe() + ": p must be 1 or 2, got " + std::to_string(p_));
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    require_float(node_, x.dtype, "input");
    if (x.has_shape) normalize_axis(axis_, x.rank(), node_);
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    int a = normalize_axis(axis_, x.rank(), node_);
    int64_t outer = 1, R = x.dim(a), inner = 1;
    for (int d = 0; d < a; ++d) outer *= x.dim(d);
    for (int d = a + 1; d < x.rank(); ++d) inner *= x.dim(d);
    Tensor xf = cpu::red_as_f32(x);
    Tensor yf = cpu::red_out_f32(ctx.output(0));
    const float* xp = xf.data<float>();
    float* yp = yf.data<float>();
    std::vector<float> norm(outer * inner);
    cpu::red_reduce_f32(p_ == 1 ? cpu::RedOp::L1 : cpu::RedOp::L2, xp, norm.data(), outer, R, inner);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < inner; ++j) {
          float nv = norm[o * inner + j];
          int64_t i = (o * R + r) * inner + j;
          yp[i] = nv == 0 ? xp[i] : xp[i] / nv;
        }
    cpu::red_store_f32(yf, ctx.output(0));
  }

 private:
  Node node_;
  int64_t axis_, p_;
};

// MeanVarianceNormalization: (x - mean) / (sqrt(var) + 1e-9) over `axes` (default [0, 2, 3]).
class MVNK : public Kernel {
 public:
  MVNK(const Node& n, int) : node_(n), axes_(n.attr_ints("axes", {0, 2, 3})) {}
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    require_float(node_, x.dtype, "input");
    if (x.has_shape)
      for (int64_t ax : axes_) normalize_axis(ax, x.rank(), node_, "axes entry");
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const int rank = x.rank();
    std::vector<bool> mask(rank, false);
    for (int64_t ax : axes_) mask[normalize_axis(ax, rank, node_, "axes entry")] = true;
    std::vector<int64_t> ostride(rank, 0);
    int64_t on = 1;
    for (int d = rank - 1; d >= 0; --d)
      if (!mask[d]) { ostride[d] = on; on *= x.dim(d); }
    const int64_t cnt = on ? x.numel() / on : 0;
    Tensor xf = cpu::red_as_f32(x);
    Tensor yf = cpu::red_out_f32(ctx.output(0));
    const float* xp = xf.data<float>();
    float* yp = yf.data<float>();
    std::vector<double> s(on, 0), q(on, 0);
    auto visit = [&](auto&& f) {
      std::vector<int64_t> idx(rank, 0);
      int64_t o = 0;
      for (int64_t i = 0; i < x.numel(); ++i) {
        f(i, o);
        for (int d = rank - 1; d >= 0; --d) {
          o += ostride[d];
          if (++idx[d] < x.dim(d)) break;
          o -= ostride[d] * idx[d];
          idx[d] = 0;
        }
      }
    };
    visit([&](int64_t i, int64_t o) { s[o] += xp[i]; });
    for (auto& v : s) v /= (double)std::max<int64_t>(cnt, 1);
    visit([&](int64_t i, int64_t o) { q[o] += (xp[i] - s[o]) * (xp[i] - s[o]); });
    for (auto& v : q) v = std::sqrt(v / (double)std::max<int64_t>(cnt, 1)) + 1e-9;
    visit([&](int64_t i, int64_t o) { yp[i] = (float)((xp[i] - s[o]) / q[o]); });
    cpu::red_store_f32(yf, ctx.output(0));
  }

 private:
  Node node_;
  std::vector<int64_t> axes_;
};

}  // namespace

void register_normalization(Registry& r) {
  r.add("BatchNormalization", 1, make_kernel<BatchNormK>());
  r.add("InstanceNormalization", 1, make_kernel<InstanceNormK>());
  r.add("LayerNormalization", 17, make_kernel<LayerNormK>());
  r.add("GroupNormalization", 18, make_kernel<GroupNormK>());
  r.add("LpNormalization", 1, make_kernel<LpNormK>());
  r.add("MeanVarianceNormalization", 9, make_kernel<MVNK>());
  r.add("RMSNormalization", 23, make_kernel<RMSNormK>());
}

}  // namespace kiln
