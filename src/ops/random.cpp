// RandomNormal, RandomUniform, RandomNormalLike, RandomUniformLike, Bernoulli. Never constant-folded.
// With a `seed` attribute the generator is a std::mt19937 seeded with it (reproducible sequence per kernel).
#include <random>

#include "ops/common.h"

namespace kiln {
namespace {

enum class Dist { Normal, Uniform, Bernoulli };

class RandomK : public Kernel {
 public:
  RandomK(const Node& n, int, Dist dist, bool like) : n_(n), dist_(dist), like_(like) {
    if (n.has_attr("seed")) gen_.seed((uint32_t)(int64_t)n.attr_float("seed", 0));
    else gen_.seed(std::random_device{}());
    if (n.has_attr("dtype")) {
      dtype_ = (DType)n.attr_int("dtype", 1);
      has_dtype_ = true;
    }
    if (dist == Dist::Normal) { a_ = n.attr_float("mean", 0.f); b_ = n.attr_float("scale", 1.f); }
    if (dist == Dist::Uniform) { a_ = n.attr_float("low", 0.f); b_ = n.attr_float("high", 1.f); }
    if (dist == Dist::Normal && !(b_ >= 0)) fail(n.describe() + ": scale must be >= 0");
    if (dist == Dist::Uniform && !(b_ >= a_)) fail(n.describe() + ": high must be >= low");
    if (!like) {
      shape_ = n.required_ints("shape");
      for (int64_t d : shape_)
        if (d < 0) fail(n.describe() + ": shape entries must be >= 0, got " + shape_str(shape_));
    }
    DType t = has_dtype_ ? dtype_ : DType::Float32;
    if (has_dtype_ || !like) check_dtype(t);
  }

  void infer(InferContext& ctx) override {
    if (!like_) { ctx.set_output(0, dtype_of(DType::Float32), shape_); return; }
    const TensorType& x = ctx.input_type(0);
    DType t = has_dtype_ ? dtype_ : x.dtype;
    check_dtype(t);
    TensorType out = x;
    out.dtype = t;
    ctx.set_output(0, out);
  }

  void run(RunContext& ctx) override {
    Tensor& y = ctx.output(0);
    const int64_t n = y.numel();
    std::vector<double> p;
    if (dist_ == Dist::Bernoulli) {
      p = to_doubles(ctx.input(0));
      for (double v : p)
        if (!(v >= 0 && v <= 1)) fail(n_.describe() + ": Bernoulli probabilities must lie in [0, 1], got " + std::to_string(v));
    }
    std::normal_distribution<double> nd(a_, b_);
    std::uniform_real_distribution<double> ud(a_, b_);
    std::uniform_real_distribution<double> u01(0.0, 1.0);
    auto draw = [&](int64_t i) -> double {
      switch (dist_) {
        case Dist::Normal: return nd(gen_);
        case Dist::Uniform: return ud(gen_);
        case Dist::Bernoulli: return u01(gen_) < p[i] ? 1.0 : 0.0;
      }
      return 0;
    };
    const DType t = y.dtype();
    if (t == DType::Float16 || t == DType::BFloat16) {
      for (int64_t i = 0; i < n; ++i) {
        float v = (float)draw(i);
        y.data<uint16_t>()[i] = t == DType::Float16 ? float_to_half(v) : float_to_bfloat16(v);
      }
    } else if (t == DType::Bool) {
      for (int64_t i = 0; i < n; ++i) y.data<uint8_t>()[i] = draw(i) != 0;
    } else {
      visit_numeric(t, [&](auto tag) {
        using T = decltype(tag);
        for (int64_t i = 0; i < n; ++i) y.data<T>()[i] = (T)draw(i);
      });
    }
  }

 private:
  DType dtype_of(DType def) const { return has_dtype_ ? dtype_ : def; }
  void check_dtype(DType t) const {
    bool ok = t == DType::Float32 || t == DType::Float64 || t == DType::Float16 || t == DType::BFloat16;
    if (dist_ == Dist::Bernoulli) ok = ok || (dtype_supported(t) && t != DType::String && t != DType::Undefined);
    if (!ok) fail(n_.describe() + ": output dtype " + dtype_name(t) + " is not allowed here");
  }

  Node n_;  // a copy: the kernel must not depend on the graph's node storage
  Dist dist_;
  bool like_;
  std::mt19937 gen_;
  DType dtype_ = DType::Float32;
  bool has_dtype_ = false;
  double a_ = 0, b_ = 1;
  Shape shape_;
};

struct RandomNormalK : RandomK { RandomNormalK(const Node& n, int o) : RandomK(n, o, Dist::Normal, false) {} };
struct RandomUniformK : RandomK { RandomUniformK(const Node& n, int o) : RandomK(n, o, Dist::Uniform, false) {} };
struct RandomNormalLikeK : RandomK { RandomNormalLikeK(const Node& n, int o) : RandomK(n, o, Dist::Normal, true) {} };
struct RandomUniformLikeK : RandomK { RandomUniformLikeK(const Node& n, int o) : RandomK(n, o, Dist::Uniform, true) {} };
struct BernoulliK : RandomK { BernoulliK(const Node& n, int o) : RandomK(n, o, Dist::Bernoulli, true) {} };

}  // namespace

void register_random(Registry& r) {
  const OpFlags f{.nondeterministic = true};
  r.add("RandomNormal", 1, make_kernel<RandomNormalK>(), f);
  r.add("RandomUniform", 1, make_kernel<RandomUniformK>(), f);
  r.add("RandomNormalLike", 1, make_kernel<RandomNormalLikeK>(), f);
  r.add("RandomUniformLike", 1, make_kernel<RandomUniformLikeK>(), f);
  r.add("Bernoulli", 15, make_kernel<BernoulliK>(), f);
}

}  // namespace kiln
