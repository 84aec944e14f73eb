// Einsum: equation with letters, '...' (broadcasting ellipsis), repeated labels (diagonals), and implicit
// output (ellipsis dims, then the labels used exactly once, in alphabetical order).
// General path: one loop over the full label space, accumulating products (double / int64).
// Fast path (float32, two operands, a pure contraction): pack the operands to [batch, M, K] x [batch, K, N],
// run the blocked batched matmul of red_kernels, and unpack to the output order.
#include <algorithm>
#include <map>

#include "backends/cpu/red_kernels.h"
#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

constexpr int kEll = 1000;  // ellipsis dim k has label kEll + k

struct Term {
  std::vector<int> letters;  // letter labels, with -1 where the ellipsis sits
  bool has_ell = false;
};

int letter_id(char c) { return (unsigned char)c; }

Term parse_term(const Node& n, const std::string& s) {
  Term t;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '.') {
      if (s.compare(i, 3, "...") != 0 || t.has_ell) fail(n.describe() + ": bad ellipsis in einsum term '" + s + "'");
      t.has_ell = true;
      t.letters.push_back(-1);
      i += 2;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      t.letters.push_back(letter_id(c));
    } else {
      fail(n.describe() + ": invalid character '" + std::string(1, c) + "' in einsum equation");
    }
  }
  return t;
}

// The equation resolved against input ranks: per input, the label of each dim; and the output labels.
struct Resolved {
  std::vector<std::vector<int>> in_labels;
  std::vector<int> out_labels;
  int ell_rank = 0;
};

class EinsumK : public Kernel {
 public:
  EinsumK(const Node& n, int) : node_(n) {
    std::string eq;
    for (char c : n.attr_string("equation", "")) if (c != ' ') eq += c;
    if (eq.empty()) fail(n.describe() + ": missing equation attribute");
    auto arrow = eq.find("->");
    std::string lhs = eq.substr(0, arrow);
    explicit_out_ = arrow != std::string::npos;
    size_t start = 0;
    while (true) {
      auto comma = lhs.find(',', start);
      terms_.push_back(parse_term(n, lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (explicit_out_) {
      out_ = parse_term(n, eq.substr(arrow + 2));
      std::vector<int> seen;
      for (int l : out_.letters) {
        if (l >= 0 && std::count(seen.begin(), seen.end(), l)) fail(n.describe() + ": output label repeated in einsum equation");
        seen.push_back(l);
        bool found = l < 0;
        for (auto& t : terms_) found = found || std::count(t.letters.begin(), t.letters.end(), l);
        if (!found) fail(n.describe() + ": output label '" + std::string(1, (char)l) + "' does not appear in any input");
      }
    }
  }

  Resolved resolve(const std::vector<int>& ranks) const {
    if (ranks.size() != terms_.size())
      fail(node_.describe() + ": equation has " + std::to_string(terms_.size()) + " operands but the node has " + std::to_string(ranks.size()) + " inputs");
    Resolved r;
    for (size_t k = 0; k < terms_.size(); ++k) {
      int nl = (int)terms_[k].letters.size() - (terms_[k].has_ell ? 1 : 0);
      if (terms_[k].has_ell ? ranks[k] < nl : ranks[k] != nl)
        fail(node_.describe() + ": einsum operand " + std::to_string(k) + " has rank " + std::to_string(ranks[k]) + ", the equation needs " + (terms_[k].has_ell ? "at least " : "") + std::to_string(nl));
      if (terms_[k].has_ell) r.ell_rank = std::max(r.ell_rank, ranks[k] - nl);
    }
    for (size_t k = 0; k < terms_.size(); ++k) {
      std::vector<int> labels;
      int e = ranks[k] - ((int)terms_[k].letters.size() - (terms_[k].has_ell ? 1 : 0));
      for (int l : terms_[k].letters) {
        if (l >= 0) { labels.push_back(l); continue; }
        for (int i = 0; i < e; ++i) labels.push_back(kEll + r.ell_rank - e + i);  // right-aligned
      }
      r.in_labels.push_back(labels);
    }
    if (explicit_out_) {
      for (int l : out_.letters) {
        if (l >= 0) r.out_labels.push_back(l);
        else for (int i = 0; i < r.ell_rank; ++i) r.out_labels.push_back(kEll + i);
      }
    } else {
      for (int i = 0; i < r.ell_rank; ++i) r.out_labels.push_back(kEll + i);
      std::map<int, int> count;
      for (auto& t : terms_) for (int l : t.letters) if (l >= 0) ++count[l];
      for (auto& [l, c] : count) if (c == 1) r.out_labels.push_back(l);
    }
    return r;
  }

  // Size of every label; fails on a mismatch (ellipsis dims may broadcast from 1).
  template <class GetDim>
  std::map<int, int64_t> label_sizes(const Resolved& r, GetDim dim_of) const {
    std::map<int, int64_t> size;
    for (size_t k = 0; k < r.in_labels.size(); ++k)
      for (size_t d = 0; d < r.in_labels[k].size(); ++d) {
        int l = r.in_labels[k][d];
        int64_t v = dim_of((int)k, (int)d);
        auto it = size.find(l);
        if (it == size.end() || it->second == -1) { size[l] = v; continue; }
        if (v == -1 || v == it->second) continue;
        if (l >= kEll && (v == 1 || it->second == 1)) { it->second = std::max(v, it->second); continue; }
        fail(node_.describe() + ": einsum dimension mismatch for label '" + (l >= kEll ? std::string("...") : std::string(1, (char)l)) +
             "': " + std::to_string(it->second) + " vs " + std::to_string(v));
      }
    return size;
  }

  void infer(InferContext& ctx) override {
    std::vector<int> ranks;
    DType dt = ctx.input_type(0).dtype;
    bool known = true;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      const TensorType& t = ctx.input_type(i);
      if (t.dtype != dt) fail(node_.describe() + ": all einsum inputs must have the same type");
      if (!t.has_shape) known = false;
      else ranks.push_back(t.rank());
    }
    if (dt == DType::Bool || dt == DType::String) unsupported(node_.describe() + ": type " + dtype_name(dt) + " is not supported");
    if (!known) { ctx.set_output(0, unknown_type(dt)); return; }
    Resolved r = resolve(ranks);
    auto size = label_sizes(r, [&](int k, int d) { return ctx.input_type(k).dims[d].value; });
    TensorType t = unknown_type(dt);
    t.has_shape = true;
    for (int l : r.out_labels) t.dims.push_back(size[l] >= 0 ? Dim::of(size[l]) : Dim());
    ctx.set_output(0, t);
  }

  void run(RunContext& ctx) override {
    std::vector<int> ranks;
    for (int i = 0; i < ctx.num_inputs(); ++i) ranks.push_back(ctx.input(i).rank());
    Resolved r = resolve(ranks);
    auto size = label_sizes(r, [&](int k, int d) { return ctx.input(k).dim(d); });
    Tensor& y = ctx.output(0);
    const DType dt = ctx.input(0).dtype();
    if (y.numel() == 0) return;
    if (dt == DType::Float32 && try_matmul(ctx, r, size)) return;
    if (dt == DType::Float16 || dt == DType::BFloat16) {
      std::vector<Tensor> xs;
      std::vector<const float*> ps;
      for (int i = 0; i < ctx.num_inputs(); ++i) { xs.push_back(cpu::red_as_f32(ctx.input(i))); }
      for (auto& t : xs) ps.push_back(t.data<float>());
      Tensor yf = cpu::red_out_f32(y);
      general<float, double>(ctx, r, size, ps, yf.data<float>());
      cpu::red_store_f32(yf, y);
      return;
    }
    visit_numeric(dt, [&](auto tag) {
      using T = decltype(tag);
      using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;
      std::vector<const T*> ps;
      for (int i = 0; i < ctx.num_inputs(); ++i) ps.push_back(ctx.input(i).data<T>());
      general<T, Acc>(ctx, r, size, ps, y.data<T>());
    });
  }

 private:
  // Stride of each label within input k (summed over repeated labels: a diagonal; 0 on broadcast dims).
  static std::map<int, int64_t> label_strides(const Tensor& t, const std::vector<int>& labels, const std::map<int, int64_t>& size) {
    std::map<int, int64_t> st;
    auto s = strides_of(t.shape());
    for (size_t d = 0; d < labels.size(); ++d)
      if (!(t.dim((int)d) == 1 && size.at(labels[d]) != 1)) st[labels[d]] += s[d];
    return st;
  }

  template <class T, class Acc>
  void general(RunContext& ctx, const Resolved& r, const std::map<int, int64_t>& size, const std::vector<const T*>& ins, T* out) {
    // Loop order: output labels first (outer), then the summed ones.
    std::vector<int> order = r.out_labels;
    for (auto& [l, s] : size) if (!std::count(order.begin(), order.end(), l)) order.push_back(l);
    const int L = (int)order.size(), K = (int)ins.size();
    std::vector<int64_t> dims(L);
    std::vector<std::vector<int64_t>> st(K + 1, std::vector<int64_t>(L, 0));
    for (int i = 0; i < L; ++i) dims[i] = size.at(order[i]);
    for (int k = 0; k < K; ++k) {
      auto m = label_strides(ctx.input(k), r.in_labels[k], size);
      for (int i = 0; i < L; ++i) st[k][i] = m.count(order[i]) ? m[order[i]] : 0;
    }
    {
      int64_t acc = 1;
      for (int i = (int)r.out_labels.size() - 1; i >= 0; --i) { st[K][i] = acc; acc *= dims[i]; }
    }
    const int64_t out_n = shape_numel(ctx.output(0).shape());
    std::vector<Acc> acc(out_n, Acc(0));
    int64_t total = 1;
    for (auto d : dims) total *= d;
    std::vector<int64_t> idx(L, 0), off(K + 1, 0);
    for (int64_t it = 0; it < total; ++it) {
      Acc p = 1;
      for (int k = 0; k < K; ++k) p *= (Acc)ins[k][off[k]];
      acc[off[K]] += p;
      for (int i = L - 1; i >= 0; --i) {
        for (int k = 0; k <= K; ++k) off[k] += st[k][i];
        if (++idx[i] < dims[i]) break;
        for (int k = 0; k <= K; ++k) off[k] -= st[k][i] * dims[i];
        idx[i] = 0;
      }
    }
    for (int64_t i = 0; i < out_n; ++i) out[i] = (T)acc[i];
  }

  // Copies src (label strides `st`) into a contiguous buffer ordered by `order`.
  static void pack(const float* src, const std::map<int, int64_t>& st, const std::vector<int>& order,
                   const std::map<int, int64_t>& size, float* dst) {
    const int L = (int)order.size();
    std::vector<int64_t> dims(L), s(L);
    int64_t total = 1;
    for (int i = 0; i < L; ++i) {
      dims[i] = size.at(order[i]);
      s[i] = st.count(order[i]) ? st.at(order[i]) : 0;
      total *= dims[i];
    }
    std::vector<int64_t> idx(L, 0);
    int64_t off = 0;
    for (int64_t i = 0; i < total; ++i) {
      dst[i] = src[off];
      for (int d = L - 1; d >= 0; --d) {
        off += s[d];
        if (++idx[d] < dims[d]) break;
        off -= s[d] * dims[d];
        idx[d] = 0;
      }
    }
  }

  bool try_matmul(RunContext& ctx, const Resolved& r, const std::map<int, int64_t>& size) {
    if (ctx.num_inputs() != 2) return false;
    const auto &la = r.in_labels[0], &lb = r.in_labels[1], &lo = r.out_labels;
    auto has = [](const std::vector<int>& v, int l) { return std::count(v.begin(), v.end(), l); };
    for (auto* v : {&la, &lb})
      for (int l : *v)
        if (has(*v, l) != 1) return false;  // diagonal
    std::vector<int> batch, M, N, Kl;
    for (int l : lo) {
      bool a = has(la, l), b = has(lb, l);
      if (a && b) batch.push_back(l);
      else if (a) M.push_back(l);
      else N.push_back(l);
    }
    for (int l : la) {
      if (has(lo, l)) continue;
      if (!has(lb, l)) return false;  // summed over one operand only
      Kl.push_back(l);
    }
    for (int l : lb)
      if (!has(lo, l) && !has(la, l)) return false;
    // Broadcast ellipsis dims (size 1 against a larger size) go the general way.
    for (int k = 0; k < 2; ++k)
      for (size_t d = 0; d < r.in_labels[k].size(); ++d)
        if (ctx.input(k).dim((int)d) != size.at(r.in_labels[k][d])) return false;
    auto prod = [&](const std::vector<int>& v) { int64_t p = 1; for (int l : v) p *= size.at(l); return p; };
    const int64_t nb = prod(batch), m = prod(M), n = prod(N), kk = prod(Kl);
    auto sa = label_strides(ctx.input(0), la, size), sb = label_strides(ctx.input(1), lb, size);
    std::vector<int> oa = batch, ob = batch, oc = batch;
    oa.insert(oa.end(), M.begin(), M.end()); oa.insert(oa.end(), Kl.begin(), Kl.end());
    ob.insert(ob.end(), Kl.begin(), Kl.end()); ob.insert(ob.end(), N.begin(), N.end());
    oc.insert(oc.end(), M.begin(), M.end()); oc.insert(oc.end(), N.begin(), N.end());
    std::vector<float> A(nb * m * kk), B(nb * kk * n);
    pack(ctx.input(0).data<float>(), sa, oa, size, A.data());
    pack(ctx.input(1).data<float>(), sb, ob, size, B.data());
    float* y = ctx.output(0).data<float>();
    if (oc == lo) {
      cpu::red_batched_matmul_f32(A.data(), B.data(), y, nb, m, kk, n);
      return true;
    }
    std::vector<float> C(nb * m * n);
    cpu::red_batched_matmul_f32(A.data(), B.data(), C.data(), nb, m, kk, n);
    std::map<int, int64_t> sc;
    int64_t acc = 1;
    for (int i = (int)oc.size() - 1; i >= 0; --i) { sc[oc[i]] = acc; acc *= size.at(oc[i]); }
    pack(C.data(), sc, lo, size, y);
    return true;
  }

  Node node_;
  std::vector<Term> terms_;
  Term out_;
  bool explicit_out_ = false;
};

}  // namespace

void register_einsum(Registry& r) { r.add("Einsum", 12, make_kernel<EinsumK>()); }

}  // namespace kiln
