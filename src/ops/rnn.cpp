// RNN, GRU, LSTM (opset 7..22 semantics; layout attribute from opset 14).
//
// X [seq, batch, input] (layout 0) or [batch, seq, input] (layout 1); W [dirs, G*H, input];
// R [dirs, G*H, H]; B [dirs, 2*G*H] (input bias then recurrence bias); sequence_lens [batch];
// initial_h (and LSTM initial_c) [dirs, batch, H] (layout 1: [batch, dirs, H]); LSTM peepholes
// P [dirs, 3*H] (i, o, f). Gate order in W/R/B: RNN i; GRU z, r, h; LSTM i, o, f, c.
// Outputs Y [seq, dirs, batch, H] (layout 1: [batch, seq, dirs, H]), Y_h, (LSTM) Y_c.
// Steps at or beyond sequence_lens[b] are skipped: their Y rows are zero and Y_h/Y_c hold the
// last computed state; the reverse direction starts at step sequence_lens[b] - 1.
// clip (if given) clamps the gate pre-activations to [-clip, clip]. Float32 arithmetic
// (float16/bfloat16/float64 converted).
#include <cmath>
#include <strings.h>

#include <functional>

#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

enum class Cell { RNN, GRU, LSTM };

struct Act {
  std::string name;
  float alpha = 0, beta = 0;
  float operator()(float x) const {
    switch (name[0]) {
      case 'S':
        if (name == "Sigmoid") return 1.f / (1.f + std::exp(-x));
        if (name == "ScaledTanh") return alpha * std::tanh(beta * x);
        if (name == "Softsign") return x / (1.f + std::fabs(x));
        return std::log1p(std::exp(x));  // Softplus
      case 'T':
        if (name == "Tanh") return std::tanh(x);
        return x > alpha ? x : 0.f;  // ThresholdedRelu
      case 'R': return x > 0 ? x : 0.f;
      case 'A': return alpha * x + beta;  // Affine
      case 'L': return x >= 0 ? x : alpha * x;  // LeakyRelu
      case 'H': return std::max(0.f, std::min(1.f, alpha * x + beta));  // HardSigmoid
      case 'E': return x >= 0 ? x : alpha * (std::exp(x) - 1.f);  // Elu
    }
    return x;
  }
};

Act make_act(const Node& n, std::string name, const std::vector<float>& alphas, const std::vector<float>& betas, size_t* ai, size_t* bi) {
  // Case-insensitive names as written by exporters ("sigmoid", "Tanh").
  static const char* known[] = {"Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu", "Softsign", "Softplus"};
  std::string canon;
  for (const char* k : known)
    if (strcasecmp(k, name.c_str()) == 0) canon = k;
  if (canon.empty()) unsupported(n.describe() + ": unknown activation '" + name + "'");
  Act a;
  a.name = canon;
  float da = 0, db = 0;
  bool uses_a = false, uses_b = false;
  if (canon == "Affine" || canon == "ScaledTanh") uses_a = uses_b = true, da = 1, db = 0;
  else if (canon == "LeakyRelu") uses_a = true, da = 0.01f;
  else if (canon == "ThresholdedRelu" || canon == "Elu") uses_a = true, da = 1.f;
  else if (canon == "HardSigmoid") uses_a = uses_b = true, da = 0.2f, db = 0.5f;
  a.alpha = da, a.beta = db;
  if (uses_a && *ai < alphas.size()) a.alpha = alphas[(*ai)++];
  if (uses_b && *bi < betas.size()) a.beta = betas[(*bi)++];
  return a;
}

class RnnK : public Kernel {
 public:
  RnnK(const Node& n, int opset, Cell cell) : n_(n), cell_(cell) {
    G_ = cell == Cell::RNN ? 1 : cell == Cell::GRU ? 3 : 4;
    const std::string dir = n.attr_string("direction", "forward");
    if (dir == "forward") dirs_ = 1, reverse_only_ = false;
    else if (dir == "reverse") dirs_ = 1, reverse_only_ = true;
    else if (dir == "bidirectional") dirs_ = 2, reverse_only_ = false;
    else fail(n.describe() + ": direction must be forward, reverse or bidirectional, got '" + dir + "'");
    hidden_ = n.attr_int("hidden_size", 0);
    layout_ = n.attr_int("layout", 0);
    if (layout_ != 0 && layout_ != 1) fail(n.describe() + ": layout must be 0 or 1");
    has_clip_ = n.has_attr("clip");
    clip_ = n.attr_float("clip", 0);
    if (has_clip_ && clip_ <= 0) fail(n.describe() + ": clip must be positive");
    linear_before_reset_ = n.attr_int("linear_before_reset", 0) != 0;
    input_forget_ = n.attr_int("input_forget", 0) != 0;
    const int per_dir = cell == Cell::RNN ? 1 : cell == Cell::GRU ? 2 : 3;
    std::vector<std::string> names;
    if (n.has_attr("activations")) names = n.attrs.at("activations").strings;
    if (names.empty()) {
      std::vector<std::string> def = cell == Cell::RNN ? std::vector<std::string>{"Tanh"}
                                    : cell == Cell::GRU ? std::vector<std::string>{"Sigmoid", "Tanh"}
                                                        : std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"};
      for (int d = 0; d < dirs_; ++d) names.insert(names.end(), def.begin(), def.end());
    } else if ((int)names.size() == per_dir && dirs_ == 2) {
      auto copy = names;
      names.insert(names.end(), copy.begin(), copy.end());
    }
    if ((int)names.size() != per_dir * dirs_)
      fail(n.describe() + ": expected " + std::to_string(per_dir * dirs_) + " activations, got " + std::to_string(names.size()));
    auto alphas = n.attr_floats("activation_alpha"), betas = n.attr_floats("activation_beta");
    size_t ai = 0, bi = 0;
    for (auto& s : names) acts_.push_back(make_act(n, s, alphas, betas, &ai, &bi));
  }

  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!is_float(x.dtype)) unsupported(n_.describe() + ": input type " + dtype_name(x.dtype) + " is not supported (float types only)");
    for (int o = 0; o < ctx.num_outputs(); ++o) ctx.set_output(o, unknown_type(x.dtype));
    if (x.has_shape && x.rank() != 3) fail(n_.describe() + ": X must be 3-D, got " + x.str());
    Dim H = hidden_ > 0 ? Dim::of(hidden_) : Dim();
    if (!H.known() && ctx.has_input(2) && ctx.input_type(2).has_shape && ctx.input_type(2).rank() == 3) H = ctx.input_type(2).dims[2];
    if (!x.has_shape) return;
    const Dim seq = layout_ ? x.dims[1] : x.dims[0], batch = layout_ ? x.dims[0] : x.dims[1];
    const Dim D = Dim::of(dirs_);
    auto mk = [&](std::vector<Dim> d) { TensorType t; t.dtype = x.dtype; t.has_shape = true; t.dims = std::move(d); return t; };
    if (ctx.num_outputs() > 0) ctx.set_output(0, mk(layout_ ? std::vector<Dim>{batch, seq, D, H} : std::vector<Dim>{seq, D, batch, H}));
    for (int o = 1; o < ctx.num_outputs() && o < 3; ++o)
      ctx.set_output(o, mk(layout_ ? std::vector<Dim>{batch, D, H} : std::vector<Dim>{D, batch, H}));
  }

  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    const Tensor& W = ctx.input(1);
    const Tensor& R = ctx.input(2);
    if (X.rank() != 3 || W.rank() != 3 || R.rank() != 3) fail(n_.describe() + ": X, W, R must be 3-D");
    const int64_t S = layout_ ? X.dim(1) : X.dim(0), Bn = layout_ ? X.dim(0) : X.dim(1), I = X.dim(2);
    const int64_t H = hidden_ > 0 ? hidden_ : R.dim(2);
    const int64_t GH = G_ * H;
    if (W.shape() != Shape{dirs_, GH, I}) fail(n_.describe() + ": W shape " + shape_str(W.shape()) + " expected " + shape_str({dirs_, GH, I}));
    if (R.shape() != Shape{dirs_, GH, H}) fail(n_.describe() + ": R shape " + shape_str(R.shape()) + " expected " + shape_str({dirs_, GH, H}));
    Tensor xf = cpu::red_as_f32(X), wf = cpu::red_as_f32(W), rf = cpu::red_as_f32(R);
    std::vector<float> bias(dirs_ * 2 * GH, 0.f);
    if (ctx.has_input(3)) {
      const Tensor& Bt = ctx.input(3);
      if (Bt.shape() != Shape{dirs_, 2 * GH}) fail(n_.describe() + ": B shape " + shape_str(Bt.shape()) + " expected " + shape_str({dirs_, 2 * GH}));
      auto v = to_doubles(Bt);
      for (size_t i = 0; i < v.size(); ++i) bias[i] = (float)v[i];
    }
    std::vector<int64_t> lens(Bn, S);
    if (ctx.has_input(4)) {
      lens = to_int64s(ctx.input(4));
      if ((int64_t)lens.size() != Bn) fail(n_.describe() + ": sequence_lens must have " + std::to_string(Bn) + " entries");
      for (auto l : lens)
        if (l < 0 || l > S) fail(n_.describe() + ": sequence_lens value " + std::to_string(l) + " outside [0, " + std::to_string(S) + "]");
    }
    const Shape state_shape = layout_ ? Shape{Bn, dirs_, H} : Shape{dirs_, Bn, H};
    auto state_at = [&](int64_t d, int64_t b) { return layout_ ? (b * dirs_ + d) * H : (d * Bn + b) * H; };
    std::vector<float> h(dirs_ * Bn * H, 0.f), c(dirs_ * Bn * H, 0.f);  // indexed [d][b][H]
    auto load_state = [&](int idx, std::vector<float>& dst) {
      if (!ctx.has_input(idx)) return;
      const Tensor& t = ctx.input(idx);
      if (t.shape() != state_shape) fail(n_.describe() + ": initial state shape " + shape_str(t.shape()) + " expected " + shape_str(state_shape));
      Tensor tf = cpu::red_as_f32(t);
      for (int64_t d = 0; d < dirs_; ++d)
        for (int64_t b = 0; b < Bn; ++b)
          for (int64_t k = 0; k < H; ++k) dst[(d * Bn + b) * H + k] = tf.data<float>()[state_at(d, b) + k];
    };
    load_state(cell_ == Cell::LSTM ? 5 : 5, h);
    std::vector<float> peep(dirs_ * 3 * H, 0.f);
    if (cell_ == Cell::LSTM) {
      load_state(6, c);
      if (ctx.has_input(7)) {
        const Tensor& P = ctx.input(7);
        if (P.shape() != Shape{dirs_, 3 * H}) fail(n_.describe() + ": P shape " + shape_str(P.shape()) + " expected " + shape_str({dirs_, 3 * H}));
        auto v = to_doubles(P);
        for (size_t i = 0; i < v.size(); ++i) peep[i] = (float)v[i];
      }
    }
    Tensor Y(DType::Float32, layout_ ? Shape{Bn, S, dirs_, H} : Shape{S, dirs_, Bn, H});
    float* y = Y.data<float>();
    const float* x = xf.data<float>();
    std::vector<float> gx(GH), gh(GH);
    const int per_dir = cell_ == Cell::RNN ? 1 : cell_ == Cell::GRU ? 2 : 3;
    auto clip = [&](float v) { return has_clip_ ? std::max(-clip_, std::min(clip_, v)) : v; };
    for (int64_t d = 0; d < dirs_; ++d) {
      const bool rev = reverse_only_ || d == 1;
      const float* w = wf.data<float>() + d * GH * I;
      const float* r = rf.data<float>() + d * GH * H;
      const float* wb = bias.data() + d * 2 * GH;
      const float* rb = wb + GH;
      const float* p = peep.data() + d * 3 * H;
      const Act* act = acts_.data() + d * per_dir;
      for (int64_t b = 0; b < Bn; ++b) {
        float* hs = h.data() + (d * Bn + b) * H;
        float* cs = c.data() + (d * Bn + b) * H;
        for (int64_t s = 0; s < lens[b]; ++s) {
          const int64_t t = rev ? lens[b] - 1 - s : s;
          const float* xt = x + (layout_ ? (b * S + t) * I : (t * Bn + b) * I);
          for (int64_t g = 0; g < GH; ++g) {
            float a = wb[g];
            const float* wr = w + g * I;
            for (int64_t k = 0; k < I; ++k) a += wr[k] * xt[k];
            gx[g] = a;
            float e = rb[g];
            const float* rr = r + g * H;
            for (int64_t k = 0; k < H; ++k) e += rr[k] * hs[k];
            gh[g] = e;  // for GRU's h gate recomputed below unless linear_before_reset
          }
          if (cell_ == Cell::RNN) {
            for (int64_t k = 0; k < H; ++k) hs[k] = act[0](clip(gx[k] + gh[k]));
          } else if (cell_ == Cell::GRU) {
            std::vector<float> z(H), rg(H), hn(H);
            for (int64_t k = 0; k < H; ++k) {
              z[k] = act[0](clip(gx[k] + gh[k]));
              rg[k] = act[0](clip(gx[H + k] + gh[H + k]));
            }
            for (int64_t k = 0; k < H; ++k) {
              float hh;
              if (linear_before_reset_) {
                hh = gx[2 * H + k] + rg[k] * gh[2 * H + k];
              } else {
                float e = rb[2 * H + k];
                const float* rr = r + (2 * H + k) * H;
                for (int64_t j = 0; j < H; ++j) e += rr[j] * (rg[j] * hs[j]);
                hh = gx[2 * H + k] + e;
              }
              hn[k] = act[1](clip(hh));
            }
            for (int64_t k = 0; k < H; ++k) hs[k] = (1.f - z[k]) * hn[k] + z[k] * hs[k];
          } else {
            for (int64_t k = 0; k < H; ++k) {
              const float cprev = cs[k];
              const float ig = act[0](clip(gx[k] + gh[k] + p[k] * cprev));
              const float fg = input_forget_ ? 1.f - ig : act[0](clip(gx[2 * H + k] + gh[2 * H + k] + p[2 * H + k] * cprev));
              const float cg = act[1](clip(gx[3 * H + k] + gh[3 * H + k]));
              const float cn = fg * cprev + ig * cg;
              const float og = act[0](clip(gx[H + k] + gh[H + k] + p[H + k] * cn));
              cs[k] = cn;
              gx[k] = og * act[2](cn);  // new h, written after all k use the old h
            }
            for (int64_t k = 0; k < H; ++k) hs[k] = gx[k];
          }
          float* yt = y + (layout_ ? ((b * S + t) * dirs_ + d) * H : ((t * dirs_ + d) * Bn + b) * H);
          std::copy(hs, hs + H, yt);
        }
      }
    }
    if (ctx.has_output(0)) cpu::red_store_f32(Y, ctx.output(0));
    auto store_state = [&](int o, const std::vector<float>& src) {
      if (!ctx.has_output(o)) return;
      Tensor t(DType::Float32, state_shape);
      for (int64_t d = 0; d < dirs_; ++d)
        for (int64_t b = 0; b < Bn; ++b)
          for (int64_t k = 0; k < H; ++k) t.data<float>()[state_at(d, b) + k] = src[(d * Bn + b) * H + k];
      cpu::red_store_f32(t, ctx.output(o));
    };
    store_state(1, h);
    if (cell_ == Cell::LSTM) store_state(2, c);
  }

 private:
  Node n_;
  Cell cell_;
  int64_t G_, dirs_, hidden_, layout_;
  bool reverse_only_, has_clip_, linear_before_reset_, input_forget_;
  float clip_;
  std::vector<Act> acts_;
};

struct RnnCellK : RnnK { RnnCellK(const Node& n, int o) : RnnK(n, o, Cell::RNN) {} };
struct GruK : RnnK { GruK(const Node& n, int o) : RnnK(n, o, Cell::GRU) {} };
struct LstmK : RnnK { LstmK(const Node& n, int o) : RnnK(n, o, Cell::LSTM) {} };

}  // namespace

void register_rnn(Registry& r) {
  r.add("RNN", 7, make_kernel<RnnCellK>());
  r.add("GRU", 7, make_kernel<GruK>());
  r.add("LSTM", 7, make_kernel<LstmK>());
}

}  // namespace kiln
