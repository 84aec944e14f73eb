#include "backends/cpu/conv_dnnl.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "backends/cpu/dnnl_common.h"

namespace kiln::cpu {

namespace {

using dims = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

bool same_geometry(const ConvParams& a, const ConvParams& b) {
  return a.nsp == b.nsp && a.transpose == b.transpose && a.N == b.N && a.C == b.C && a.M == b.M && a.G == b.G &&
         a.in == b.in && a.k == b.k && a.out == b.out && a.stride == b.stride && a.dil == b.dil && a.pad_l == b.pad_l &&
         a.pad_r == b.pad_r;
}

// Cheap identity check of weight contents behind a pointer: 64 evenly spaced values plus the size. It guards the
// weight cache against a freed-and-reused address holding different weights; it is not a full hash.
uint64_t fingerprint(const float* w, int64_t n) {
  uint64_t h = 1469598103934665603ull ^ (uint64_t)n;
  const int64_t step = n > 64 ? n / 64 : 1;
  for (int64_t i = 0; i < n; i += step) {
    uint32_t bits;
    std::memcpy(&bits, w + i, 4);
    h = (h ^ bits) * 1099511628211ull;
  }
  return h;
}

dims spatial(const std::array<int64_t, 3>& a, int nsp, int64_t minus = 0) {
  dims d;
  for (int i = 3 - nsp; i < 3; ++i) d.push_back(a[i] - minus);
  return d;
}

// Weights as oneDNN sees them ({G,} O, I, k...) with strides into the ONNX layout (Conv: W [M, C/G, k...];
// ConvTranspose: W [C, M/G, k...]).
dnnl::memory::desc onnx_weights_md(const ConvParams& p) {
  const int nsp = p.nsp;
  const int64_t K = p.k_size(), Cg = p.C / p.G, Mg = p.M / p.G;
  dims ks = spatial(p.k, nsp), kstr(nsp);
  for (int64_t i = nsp - 1, s = 1; i >= 0; --i) { kstr[i] = s; s *= ks[i]; }
  dims w_d, w_str;
  if (!p.transpose) {
    if (p.G > 1) { w_d = {p.G, Mg, Cg}; w_str = {Mg * Cg * K, Cg * K, K}; }
    else { w_d = {p.M, p.C}; w_str = {p.C * K, K}; }
  } else {
    if (p.G > 1) { w_d = {p.G, Mg, Cg}; w_str = {Cg * Mg * K, K, Mg * K}; }
    else { w_d = {p.M, p.C}; w_str = {K, p.M * K}; }
  }
  for (int i = 0; i < nsp; ++i) { w_d.push_back(ks[i]); w_str.push_back(kstr[i]); }
  return dnnl::memory::desc(w_d, dt::f32, w_str);
}

// oneDNN's plain (gemm-based) convolution applies post-ops in a slow separate pass (resnet50 1x1 64->256 at 56x56
// with sum+relu: ~30 ms against ~1 ms without): there the post-ops run after the primitive, in one parallel pass.
bool own_post_ops(ConvLayout layout, const std::vector<PostOp>& post, bool src_cl, bool dst_cl) {
  return layout == ConvLayout::Plain && !post.empty() && !src_cl && !dst_cl;
}

// Channels-last tag for a rank (nwc / nhwc / ndhwc).
tag cl_tag(int rank) { return rank == 3 ? tag::nwc : rank == 4 ? tag::nhwc : tag::ndhwc; }

}  // namespace

struct DnnlConv::Entry {
  ConvParams p;
  bool has_bias = false;
  ConvLayout layout = ConvLayout::Plain;
  bool src_cl = false, dst_cl = false;
  std::vector<PostOp> post;
  bool failed = false;  // oneDNN has no implementation for this problem: use the reference kernel
  bool winograd = false;     // the primitive is a Winograd one
  bool winograd_later = false;  // a Winograd primitive is to be tried from the second call on
  int64_t calls = 0;

  dnnl::primitive prim;
  dnnl::memory user_src, user_dst, user_w, bias;
  dnnl::memory src, dst;     // what the primitive reads/writes (== user_* when no reorder is needed)
  dnnl::memory pad;          // the primitive's scratchpad (user-managed: in the shared scratch buffer)
  HeldMemory w;              // weights in the primitive's layout (may share the store's buffer)
  size_t src_bytes = 0, dst_bytes = 0, pad_bytes = 0;  // sizes of the blocked copies and the scratchpad
  dnnl::reorder src_reorder, dst_reorder, sum_reorder;  // sum_reorder: y (summand) -> blocked dst
  dnnl::reorder w_reorder;   // non-constant W: user_w -> w, every call
  bool reorder_src = false, reorder_dst = false;
  dnnl::memory::desc w_md;  // the layout the primitive wants W in
  uint64_t w_gen = 0;       // constant W: the kept copy's version `w` holds (0: none yet)

  // Creates the primitive and its memories for the key fields above (direct or Winograd convolution). Throws
  // dnnl::error when oneDNN has no implementation.
  void build(bool use_winograd);
};

void DnnlConv::Entry::build(bool use_winograd) {
  auto& eng = engine();
  const int nsp = p.nsp;
  dims src_d{p.N, p.C}, dst_d{p.N, p.M};
  for (auto v : spatial(p.in, nsp)) src_d.push_back(v);
  for (auto v : spatial(p.out, nsp)) dst_d.push_back(v);

  dnnl::memory::desc user_src_md(src_d, dt::f32, src_cl ? cl_tag(nsp + 2) : plain_tag(nsp + 2));
  dnnl::memory::desc user_dst_md(dst_d, dt::f32, dst_cl ? cl_tag(nsp + 2) : plain_tag(nsp + 2));
  dnnl::primitive_attr attr;
  // The scratchpad lives in the shared per-thread scratch buffer (see scratch_buffer in dnnl_common.h).
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (!post.empty()) {
    dnnl::post_ops po;
    append_dnnl_post_ops(po, post);
    attr.set_post_ops(po);
  }
  dnnl::memory::desc user_w_md = onnx_weights_md(p);
  const dims w_d = user_w_md.dims();
  dnnl::memory::desc bias_md({p.M}, dt::f32, tag::a);
  const bool blocked = layout == ConvLayout::Blocked;
  dnnl::memory::desc src_md = blocked ? dnnl::memory::desc(src_d, dt::f32, tag::any) : user_src_md;
  dnnl::memory::desc dst_md = blocked ? dnnl::memory::desc(dst_d, dt::f32, tag::any) : user_dst_md;
  dnnl::memory::desc w_any(w_d, dt::f32, tag::any);
  // oneDNN counts dilation as the gap between taps (ONNX dilation - 1).
  dims strides = spatial(p.stride, nsp), dil = spatial(p.dil, nsp, 1), pl = spatial(p.pad_l, nsp), pr;
  for (int i = 3 - nsp; i < 3; ++i) {
    if (!p.transpose) pr.push_back(p.pad_r[i]);
    // ConvTranspose: the right padding oneDNN needs to land exactly on `out` (negative when output_padding or
    // output_shape extend the output past the last tap; those cells get only the bias).
    else pr.push_back((p.in[i] - 1) * p.stride[i] + (p.k[i] - 1) * p.dil[i] + 1 - p.pad_l[i] - p.out[i]);
  }
  const auto inference = dnnl::prop_kind::forward_inference;
  dnnl::memory::desc src_pd_md, dst_pd_md, scratch_md;
  if (!p.transpose) {
    const auto alg = use_winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
    auto d = has_bias ? dnnl::convolution_forward::desc(inference, alg, src_md, w_any, bias_md, dst_md, strides, dil, pl, pr)
                      : dnnl::convolution_forward::desc(inference, alg, src_md, w_any, dst_md, strides, dil, pl, pr);
    dnnl::convolution_forward::primitive_desc pd(d, attr, eng);
    src_pd_md = pd.src_desc(); dst_pd_md = pd.dst_desc(); w_md = pd.weights_desc(); scratch_md = pd.scratchpad_desc();
    prim = dnnl::convolution_forward(pd);
  } else {
    const auto alg = dnnl::algorithm::deconvolution_direct;
    auto d = has_bias ? dnnl::deconvolution_forward::desc(inference, alg, src_md, w_any, bias_md, dst_md, strides, dil, pl, pr)
                      : dnnl::deconvolution_forward::desc(inference, alg, src_md, w_any, dst_md, strides, dil, pl, pr);
    dnnl::deconvolution_forward::primitive_desc pd(d, attr, eng);
    src_pd_md = pd.src_desc(); dst_pd_md = pd.dst_desc(); w_md = pd.weights_desc(); scratch_md = pd.scratchpad_desc();
    prim = dnnl::deconvolution_forward(pd);
  }
  winograd = use_winograd;
  user_src = dnnl::memory(user_src_md, eng, DNNL_MEMORY_NONE);
  user_dst = dnnl::memory(user_dst_md, eng, DNNL_MEMORY_NONE);
  user_w = dnnl::memory(user_w_md, eng, DNNL_MEMORY_NONE);
  if (has_bias) bias = dnnl::memory(bias_md, eng, DNNL_MEMORY_NONE);  // plain, read in place
  reorder_src = src_pd_md != user_src_md;
  reorder_dst = dst_pd_md != user_dst_md;
  src = reorder_src ? dnnl::memory(src_pd_md, eng, DNNL_MEMORY_NONE) : user_src;
  dst = reorder_dst ? dnnl::memory(dst_pd_md, eng, DNNL_MEMORY_NONE) : user_dst;
  src_bytes = reorder_src ? (src_pd_md.get_size() + 63) / 64 * 64 : 0;
  dst_bytes = reorder_dst ? (dst_pd_md.get_size() + 63) / 64 * 64 : 0;
  pad_bytes = scratch_md.get_size();
  pad = pad_bytes ? dnnl::memory(scratch_md, eng, DNNL_MEMORY_NONE) : dnnl::memory();
  src_reorder = reorder_src ? dnnl::reorder(user_src, src) : dnnl::reorder();
  dst_reorder = reorder_dst ? dnnl::reorder(dst, user_dst) : dnnl::reorder();
  sum_reorder = reorder_dst && has_sum(post) ? dnnl::reorder(user_dst, dst) : dnnl::reorder();
  w = HeldMemory();
  w_gen = 0;
}

DnnlConv::DnnlConv(ConvLayout layout) : layout_(layout) {}
DnnlConv::~DnnlConv() = default;

size_t DnnlConv::cached_entries() const { return entries_.size(); }

ConvLayout DnnlConv::choose_layout(const ConvParams& p) {
  // From ConvBench.DISABLED_* (minimum of 10-20 runs; this host has AVX-512, where oneDNN's "blocked" choice is
  // nhwc/ndhwc for convolutions and nChw16c for deconvolutions). With plain nc<spatial> activations oneDNN only
  // offers its im2col + GEMM kernel; blocked activations get the brgemm/jit kernels, and pay two reorders.
  //  * Convolutions with a spatial kernel: blocked wins everywhere, 1 thread: resnet 3x3 64ch 1.10 vs 2.06 ms,
  //    3D 3x3x3 32ch 1x32x64x128x128 1.27 vs 6.35 s, 3D C=4 first layer 20 vs 83 ms, 7x7 stem 1.57 vs 2.55 ms,
  //    depthwise 3x3 0.41 vs 2.50 ms, 1D k3 0.58 vs 0.77 ms; the nnU-Net tile's 14 such layers all agree.
  //  * Pointwise convolutions (1x1, unpadded): plain is a single GEMM with no im2col and wins: 0.12 vs 0.18 ms
  //    (256->64 at 28x28), 2.0 vs 18 ms (3D 1x1x1), 0.41 vs 1.50 ms (nnU-Net head).
  //  * Transposed convolutions: blocked, although for kernel == stride (2x2/2 upsampling) plain was 15-60% faster
  //    with 1 thread (nnU-Net 2x2x2/2 layers: 1.0 vs 1.2, 3.5 vs 8.6, 17 vs 22 ms): with 2 threads on the shared,
  //    oversubscribed host the GEMM + col2im deconvolution, which opens many parallel regions, degraded to
  //    296-1256 ms against 72-80 ms blocked, and 3x3 deconvolutions are faster blocked anyway (1.78 vs 3.35 ms).
  bool pointwise = !p.transpose;
  for (int i = 0; i < 3; ++i) pointwise = pointwise && p.k[i] == 1 && p.pad_l[i] == 0 && p.pad_r[i] == 0;
  return pointwise ? ConvLayout::Plain : ConvLayout::Blocked;
}

// Winograd F(m, 3) (oneDNN's jit_wino kernels, 2D, AVX-512) instead of direct convolution: about half the
// multiplications for 3x3 stride-1 layers. Measured on this host with 2 threads, activations handed over as nhwc
// (the reorders to and from the kernel's nChw16c included), direct / Winograd time:
//   wins:  64->64 at 56x56 1.45 (b1) 1.64 (b8); 128->128 at 28x28 1.73 / 2.11; 256->256 at 14x14 1.49 / 1.74;
//          96->128 at 28x28 1.53 / 2.19; 32->128 at 27x27 1.37 / 1.36; 2048->512 at 28x28 2.28 / 2.75
//   loses: fewer than 32 input channels (16->64 at 55x55 b8 0.78, 24->64 at 28x28 0.69 / 0.87, 3->64 0.1-0.2);
//          32 output channels (128->32 at 7x7 0.45 / 0.70, at 14x14 0.91 / 0.98); 7x7 maps at batch 1 (192->384
//          0.89, 512->512 0.97).
// Its weights are transformed into tiles 1.8x (F(2,3)) to 4x (F(4,3)) their size, and the direct layout's copy is kept
// besides (to derive other shapes' layouts), so layers with more than 2^17 input x output channels stay direct for
// small problems: fcn_resnet50's 2048->512 head would have run 17-23% faster at batch 1, but its 151 MiB of F(4,3)
// weights took the process's peak RSS from 193 to 501 MiB (ONNX Runtime: 498). From 4096 output positions on (that
// head at batch >= 6) the gain is worth the memory: at batch 8 the head ran 400 -> 134 ms (the model 1247 -> 995 ms)
// for 300 MiB more peak RSS (300 -> 664 MiB with Winograd off / on everywhere; ONNX Runtime: 645). The transform is
// slow (oneDNN's wino_reorder, one thread: 12 ms for 256->256, 241 ms for 2048->512), one more reason it waits for the
// second call (see DnnlConv::run).
// Error: within the bound Conv.WinogradFromTheSecondCall holds direct convolution to; the real-model parity
// (scripts/zoo.sh, which checks a second run too) is unchanged. KILN_CONV_WINOGRAD=0 turns it off.
bool DnnlConv::winograd_candidate(const ConvParams& p) {
  static const bool enabled = [] { const char* v = std::getenv("KILN_CONV_WINOGRAD"); return !(v && !std::strcmp(v, "0")); }();
  if (!enabled || p.transpose || p.nsp != 2 || p.G != 1) return false;
  for (int i = 1; i < 3; ++i)
    if (p.k[i] != 3 || p.stride[i] != 1 || p.dil[i] != 1) return false;
  return p.C >= 32 && p.M >= 64 && p.N * p.out_size() >= 196 &&
         (p.C * p.M <= (int64_t(1) << 17) || p.N * p.out_size() >= 4096);
}

bool DnnlConv::setup(const ConvParams& p, const float* w, bool has_bias, bool weights_constant, bool src_cl, bool dst_cl,
                     const std::vector<PostOp>& post, bool has_sum_input, bool count_call, Entry** entry,
                     dnnl::memory* w_mem_out) {
  if (p.N * p.C * p.M * p.in_size() * p.out_size() == 0) return false;  // empty tensors: nothing for oneDNN to do
  ConvLayout layout = layout_ == ConvLayout::Auto ? choose_layout(p) : layout_;
  const bool own_post = own_post_ops(layout, post, src_cl, dst_cl);
  static const std::vector<PostOp> kNone;
  const std::vector<PostOp>& prim_post = own_post ? kNone : post;
  if (has_sum(post) && !has_sum_input) return false;
  // Winograd only for constant weights (their transform is costly) and blocked activations.
  const bool winograd = weights_constant && layout == ConvLayout::Blocked && winograd_candidate(p);

  Entry* e = nullptr;
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if ((*it)->has_bias == has_bias && (*it)->layout == layout && (*it)->src_cl == src_cl && (*it)->dst_cl == dst_cl &&
        (*it)->post == prim_post && same_geometry((*it)->p, p)) {
      entries_.splice(entries_.begin(), entries_, it);
      e = entries_.front().get();
      break;
    }

  if (!e) {
    auto ne = std::make_unique<Entry>();
    ne->p = p;
    ne->has_bias = has_bias;
    ne->layout = layout;
    ne->src_cl = src_cl;
    ne->dst_cl = dst_cl;
    ne->post = prim_post;
    // Negative left padding (ConvTranspose output_shape larger than the input allows) has no oneDNN equivalent.
    for (int i = 3 - p.nsp; i < 3; ++i)
      if (p.pad_l[i] < 0) ne->failed = true;
    if (!ne->failed) {
      try {
        // The first call of a problem runs direct convolution: its weights are ready sooner (Winograd's transform
        // made googlenet's first run 23 ms longer, resnet18's at batch 8 170 ms), so the first output comes fast.
        ne->build(false);
        ne->winograd_later = winograd;
      } catch (const dnnl::error&) {
        ne->failed = true;  // e.g. a padding/size combination oneDNN rejects: reference kernel instead
      }
    }
    entries_.push_front(std::move(ne));
    if (entries_.size() > 8) entries_.pop_back();
    e = entries_.front().get();
  }
  if (e->failed) return false;
  if (count_call && e->winograd_later && e->calls > 0) {
    // From the second call on: Winograd when oneDNN has a kernel for this problem (else direct stays). Only a call
    // switches: prepare() readies what the next call runs and leaves the choice to it.
    e->winograd_later = false;
    Entry wino;
    wino.p = e->p;
    wino.has_bias = e->has_bias;
    wino.layout = e->layout;
    wino.src_cl = e->src_cl;
    wino.dst_cl = e->dst_cl;
    wino.post = e->post;
    try {
      wino.build(true);
      // oneDNN may offer a Winograd primitive whose weight layout it cannot reorder into: that is found out here.
      if (kept_) kept_.for_layout(wino.w_md, wino.w, wino.w_gen);
      wino.calls = e->calls;
      *e = std::move(wino);  // the direct layout's weights are freed with the old entry's
    } catch (const dnnl::error&) {
    }
  }
  if (count_call) ++e->calls;
  // prepare() runs beside other kernels' prepare on the session's threads: its weight reorder takes one thread.
  OneThread one_thread(!count_call);

  dnnl::stream& s = stream();
  dnnl::memory w_mem;
  if (!weights_constant) {
    if (!w) return false;
    if (!e->w || e->w_gen != 0) {
      e->w = held_memory(e->w_md);
      e->w_gen = 0;
      e->w_reorder = dnnl::reorder(e->user_w, e->w.mem);
    }
    e->user_w.set_data_handle(const_cast<float*>(w));
    e->w_reorder.execute(s, e->user_w, e->w.mem);
    w_mem = e->w.mem;
  } else {
    if (w) {
      const int64_t wn = p.transpose ? p.C * (p.M / p.G) * p.k_size() : p.M * (p.C / p.G) * p.k_size();
      const uint64_t fp = fingerprint(w, wn);
      if (!kept_.holds(w, fp)) {
        e->user_w.set_data_handle(const_cast<float*>(w));
        // The kept copy takes the layout of the primitive first made, a direct one (Winograd primitives come from the
        // second call on): Winograd weights could not be reordered back into any other layout.
        kept_.keep(e->user_w, e->w_md, w, fp);
      }
    } else if (!kept_) {
      return false;
    }
    w_mem = kept_.for_layout(e->w_md, e->w, e->w_gen);
  }
  *entry = e;
  *w_mem_out = w_mem;
  return true;
}

bool DnnlConv::prepare(const ConvParams& p, const float* w, bool has_bias, bool weights_constant, bool src_cl,
                       bool dst_cl, const std::vector<PostOp>& post, bool has_sum_input) {
  Entry* e = nullptr;
  dnnl::memory w_mem;
  return setup(p, w, has_bias, weights_constant, src_cl, dst_cl, post, has_sum_input, false, &e, &w_mem);
}

bool DnnlConv::run(const ConvParams& p, const float* x, const float* w, const float* b, float* y, bool weights_constant,
                   bool src_cl, bool dst_cl, const std::vector<PostOp>& post, const float* sum) {
  Entry* e = nullptr;
  dnnl::memory w_mem;
  const bool has_bias = b != nullptr;
  if (!setup(p, w, has_bias, weights_constant, src_cl, dst_cl, post, sum != nullptr, true, &e, &w_mem)) return false;
  dnnl::stream& s = stream();
  const bool own_post = own_post_ops(e->layout, post, src_cl, dst_cl);
  if (e->src_bytes || e->dst_bytes || e->pad_bytes) {
    uint8_t* buf = scratch_buffer(e->src_bytes + e->dst_bytes + e->pad_bytes);
    if (e->reorder_src) e->src.set_data_handle(buf);
    if (e->reorder_dst) e->dst.set_data_handle(buf + e->src_bytes);
    if (e->pad_bytes) e->pad.set_data_handle(buf + e->src_bytes + e->dst_bytes);
  }
  const int64_t y_numel = p.N * p.M * p.out_size();
  if (has_sum(e->post) && sum != y) std::memcpy(y, sum, (size_t)y_numel * sizeof(float));
  e->user_src.set_data_handle(const_cast<float*>(x));
  e->user_dst.set_data_handle(y);
  if (e->reorder_src) e->src_reorder.execute(s, e->user_src, e->src);
  if (e->reorder_dst && has_sum(e->post)) e->sum_reorder.execute(s, e->user_dst, e->dst);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, e->dst}};
  if (has_bias) {
    e->bias.set_data_handle(const_cast<float*>(b));
    args[DNNL_ARG_BIAS] = e->bias;
  }
  if (e->pad_bytes) args[DNNL_ARG_SCRATCHPAD] = e->pad;
  e->prim.execute(s, args);
  if (e->reorder_dst) e->dst_reorder.execute(s, e->dst, e->user_dst);
  s.wait();
  if (own_post) apply_post_ops_ref(post, y, y_numel, sum);
  last_layout_ = e->layout;
  last_winograd_ = e->winograd;
  return true;
}

bool DnnlConv::unpack_weights(const ConvParams& p, float* dst) const {
  if (!kept_) return false;
  kept_.unpack(onnx_weights_md(p), dst);
  return true;
}

}  // namespace kiln::cpu
