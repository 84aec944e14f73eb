#include "backends/cpu/mm_dnnl.h"

#include <algorithm>

#include "backends/cpu/dnnl_common.h"

namespace kiln::mm {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

constexpr size_t kMaxEntries = 8;

// Strides of logical dims [batch..., R, C] for a buffer stored row-major as [batch..., R, C],
// or as [batch..., C, R] when `trans`.
memory::dims strides_for(const Shape& s, bool trans) {
  const int r = (int)s.size();
  memory::dims st(r);
  const int64_t R = s[r - 2], C = s[r - 1];
  if (trans) { st[r - 2] = 1; st[r - 1] = R; }
  else { st[r - 2] = C; st[r - 1] = 1; }
  int64_t acc = R * C;
  for (int i = r - 3; i >= 0; --i) { st[i] = acc; acc *= s[i]; }
  return st;
}

template <class E>
E* lookup(std::vector<std::unique_ptr<E>>& v, const typename E::Key& k) {
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i]->key == k) {
      if (i) std::rotate(v.begin(), v.begin() + i, v.begin() + i + 1);
      return v[0].get();
    }
  return nullptr;
}

template <class E>
E* insert(std::vector<std::unique_ptr<E>>& v, std::unique_ptr<E> e) {
  v.insert(v.begin(), std::move(e));
  if (v.size() > kMaxEntries) v.pop_back();
  return v[0].get();
}

}  // namespace

// ---- matmul -----------------------------------------------------------------------------------

struct MatmulCache::Entry {
  struct Key {
    Shape as, bs, ys;
    bool ta, tb, b_const, bias, acc;
    float alpha;
    std::vector<cpu::PostOp> post;
    bool operator==(const Key&) const = default;
  } key;
  bool ok = false;                 // false: oneDNN refused this configuration
  dnnl::matmul prim;
  memory src, wei, dst, bias;
  memory pad;                      // scratchpad (user-managed, see cpu::scratch_buffer)
  size_t pad_bytes = 0;
  bool reorder_wei = false;        // weights kept in a oneDNN-chosen layout
  memory::desc wei_plain, wei_desc;  // B as given; B as the primitive wants it
  cpu::HeldMemory wei_kept;        // constant B in wei_desc (the kept copy itself when the layouts agree)
  uint64_t wei_gen = 0;            // the kept copy's version wei_kept holds (0: none)
};

MatmulCache::MatmulCache() = default;
MatmulCache::~MatmulCache() = default;

bool MatmulCache::run(const MatmulCall& c0, bool execute) {
  MatmulCall c = c0;
  const int r = (int)c.ys.size();
  if (r < 2 || r > 12 || (int)c.as.size() != r || (int)c.bs.size() != r) return false;
  if (shape_numel(c.ys) == 0) return true;
  // Fold the batch of A into M when B has no batch (x[B, S, K] @ W[K, N]).
  bool b_batched = false;
  for (int i = 0; i < r - 2; ++i) b_batched |= c.bs[i] != 1;
  if (r > 2 && !b_batched && !c.trans_a) {
    int64_t rows = 1;
    for (int i = 0; i < r - 1; ++i) rows *= c.as[i];
    c.as = {rows, c.as[r - 1]};
    c.bs = {c.bs[r - 2], c.bs[r - 1]};
    c.ys = {rows, c.ys[r - 1]};
  }
  Entry::Key key{c.as, c.bs, c.ys, c.trans_a, c.trans_b, c.b_const, c.bias != nullptr, c.accumulate, c.alpha, c.post};
  Entry* e = lookup(entries_, key);
  if (!e) {
    auto ne = std::make_unique<Entry>();
    ne->key = key;
    try {
      const int n = (int)c.ys.size();
      memory::desc a_md(cpu::to_dims(c.as), dt::f32, strides_for(c.as, c.trans_a));
      memory::desc b_md(cpu::to_dims(c.bs), dt::f32, strides_for(c.bs, c.trans_b));
      memory::desc y_md(cpu::to_dims(c.ys), dt::f32, strides_for(c.ys, false));
      memory::dims bias_dims(n, 1);
      bias_dims[n - 1] = c.ys[n - 1];
      memory::desc bias_md(bias_dims, dt::f32, strides_for(Shape(bias_dims.begin(), bias_dims.end()), false));
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (c.alpha != 1) attr.set_output_scales(0, {c.alpha});
      if (c.accumulate || !c.post.empty()) {
        dnnl::post_ops po;
        if (c.accumulate) po.append_sum(1.f);
        cpu::append_dnnl_post_ops(po, c.post);
        attr.set_post_ops(po);
      }
      // A constant 2-D weight may live in whatever layout oneDNN prefers (reordered once).
      const bool try_any = c.b_const && n == 2;
      memory::desc b_req = try_any ? memory::desc(cpu::to_dims(c.bs), dt::f32, tag::any) : b_md;
      auto make = [&](const memory::desc& bd) {
        auto d = c.bias ? dnnl::matmul::desc(a_md, bd, bias_md, y_md) : dnnl::matmul::desc(a_md, bd, y_md);
        return dnnl::matmul::primitive_desc(d, attr, cpu::engine());
      };
      dnnl::matmul::primitive_desc pd;
      try {
        pd = make(b_req);
      } catch (const dnnl::error&) {
        if (!try_any) throw;
        pd = make(b_md);
      }
      ne->prim = dnnl::matmul(pd);
      ne->pad_bytes = pd.scratchpad_desc().get_size();
      if (ne->pad_bytes) ne->pad = memory(pd.scratchpad_desc(), cpu::engine(), nullptr);
      ne->src = memory(a_md, cpu::engine(), nullptr);
      ne->dst = memory(y_md, cpu::engine(), nullptr);
      if (c.bias) ne->bias = memory(bias_md, cpu::engine(), nullptr);
      ne->wei_plain = b_md;
      ne->wei_desc = pd.weights_desc();
      ne->reorder_wei = ne->wei_desc != b_md;
      ne->wei = memory(b_md, cpu::engine(), nullptr);
      ne->ok = true;
    } catch (const dnnl::error&) {
      ne->ok = false;
    }
    e = insert(entries_, std::move(ne));
  }
  if (!e->ok) return false;
  if (!execute) {
    cpu::OneThread one_thread;  // prepare packs several kernels' weights side by side
    if (c.b_const && e->reorder_wei && c.b && !kept_.holds(c.b))
      kept_.keep(memory(e->wei_plain, cpu::engine(), const_cast<float*>(c.b)), e->wei_desc, c.b);
    return true;
  }
  auto& s = cpu::stream();
  e->src.set_data_handle(const_cast<float*>(c.a));
  e->dst.set_data_handle(c.y);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, e->src}, {DNNL_ARG_DST, e->dst}};
  // Only a constant 2-D B is asked for in oneDNN's layout (try_any), so reorder_wei implies b_const.
  if (c.b_const && (e->reorder_wei || !c.b)) {
    if (c.b && !kept_.holds(c.b))
      kept_.keep(memory(e->wei_plain, cpu::engine(), const_cast<float*>(c.b)), e->wei_desc, c.b);
    if (!kept_) return false;
    // A plain entry for a freed B may be [1, ..., K, N]: reorder into it seen as [K, N], like the kept copy.
    const Shape kn{c.bs[c.bs.size() - 2], c.bs.back()};
    const memory::desc kn_view(cpu::to_dims(kn), dt::f32, strides_for(kn, c.trans_b));
    args[DNNL_ARG_WEIGHTS] = kept_.for_layout(e->wei_desc, e->wei_kept, e->wei_gen,
                                              e->wei_desc.dims().size() == 2 ? nullptr : &kn_view);
  } else {
    e->wei.set_data_handle(const_cast<float*>(c.b));
    args[DNNL_ARG_WEIGHTS] = e->wei;
  }
  if (c.bias) {
    e->bias.set_data_handle(const_cast<float*>(c.bias));
    args[DNNL_ARG_BIAS] = e->bias;
  }
  cpu::with_scratchpad(args, e->pad, e->pad_bytes);
  e->prim.execute(s, args);
  s.wait();
  return true;
}

bool MatmulCache::unpack_b(int64_t K, int64_t N, bool trans_b, float* dst) const {
  if (!kept_) return false;
  const Shape kn{K, N};
  kept_.unpack(memory::desc(cpu::to_dims(kn), dt::f32, strides_for(kn, trans_b)), dst);
  return true;
}

// ---- pooling ----------------------------------------------------------------------------------

struct PoolCache::Entry {
  struct Key {
    Shape in;
    bool channels_last = false;
    bool operator==(const Key&) const = default;
  } key;
  bool ok = false;
  dnnl::pooling_v2_forward prim;
  memory src, dst, pad;
  size_t pad_bytes = 0;
};

PoolCache::PoolCache() = default;
PoolCache::~PoolCache() = default;

bool PoolCache::run(const PoolAttrs& a, const PoolGeom& g, const float* x, float* y, bool channels_last) {
  if (a.kind == PoolKind::Lp || g.nsp < 1 || g.nsp > 3) return false;
  Shape in{g.N, g.C};
  in.insert(in.end(), g.in.begin(), g.in.end());
  Entry* e = lookup(entries_, Entry::Key{in, channels_last});
  if (!e) {
    auto ne = std::make_unique<Entry>();
    ne->key.in = in;
    ne->key.channels_last = channels_last;
    ne->ok = true;
    // oneDNN derives the output size with floor((in + pl + pr - dk) / s) + 1: choose the right pad
    // that yields ONNX's output size (ceil_mode may need more, the last-window rule less).
    memory::dims pr(g.nsp), dil(g.nsp);
    for (int i = 0; i < g.nsp; ++i) {
      const int64_t dk = (g.kernel[i] - 1) * g.dilations[i] + 1;
      const int64_t lo = (g.out[i] - 1) * g.strides[i] + dk - g.in[i] - g.pad_l[i];
      const int64_t hi = lo + g.strides[i] - 1;
      pr[i] = std::clamp(g.pad_r[i], lo, hi);
      if (pr[i] < 0) ne->ok = false;
      // Include-pad averaging divides by the whole window; ONNX does not count the ceil overhang.
      if (a.kind == PoolKind::Avg && a.count_include_pad && lo > g.pad_r[i]) ne->ok = false;
      dil[i] = g.dilations[i] - 1;   // oneDNN counts dilation from 0
    }
    if (ne->ok) {
      try {
        const auto alg = a.kind == PoolKind::Max ? dnnl::algorithm::pooling_max
                         : a.count_include_pad   ? dnnl::algorithm::pooling_avg_include_padding
                                                 : dnnl::algorithm::pooling_avg_exclude_padding;
        const auto tag = channels_last ? cpu::channels_last_tag((int)in.size()) : cpu::plain_tag((int)in.size());
        memory::desc x_md(cpu::to_dims(in), dt::f32, tag);
        memory::desc y_md(cpu::to_dims(g.out_shape()), dt::f32, tag);
        dnnl::pooling_v2_forward::desc d(dnnl::prop_kind::forward_inference, alg, x_md, y_md, cpu::to_dims(g.strides),
                                         cpu::to_dims(g.kernel), dil, cpu::to_dims(g.pad_l), pr);
        dnnl::primitive_attr attr;
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        dnnl::pooling_v2_forward::primitive_desc pd(d, attr, cpu::engine());
        ne->prim = dnnl::pooling_v2_forward(pd);
        ne->pad_bytes = pd.scratchpad_desc().get_size();
        if (ne->pad_bytes) ne->pad = memory(pd.scratchpad_desc(), cpu::engine(), nullptr);
        ne->src = memory(x_md, cpu::engine(), nullptr);
        ne->dst = memory(y_md, cpu::engine(), nullptr);
      } catch (const dnnl::error&) {
        ne->ok = false;
      }
    }
    e = insert(entries_, std::move(ne));
  }
  if (!e->ok) return false;
  auto& s = cpu::stream();
  e->src.set_data_handle(const_cast<float*>(x));
  e->dst.set_data_handle(y);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, e->src}, {DNNL_ARG_DST, e->dst}};
  cpu::with_scratchpad(args, e->pad, e->pad_bytes);
  e->prim.execute(s, args);
  s.wait();
  return true;
}

}  // namespace kiln::mm
