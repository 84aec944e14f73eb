#include "runtime/plan.h"

#include "backends/cpu/data_util.h"
#include "core/helper_thread.h"
#include "core/staging.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <map>
#include <mutex>
#include <set>

namespace kiln {

namespace {

// A constant whose value is still there: in memory, or deferred in the model file (not freed by release_if_owned).
bool has_value(const Tensor& t) { return t.raw() != nullptr || t.is_deferred(); }

// Adds node context to errors raised inside kernels.
[[noreturn]] void rethrow_with_node(const Node& n, const char* phase) {
  try {
    throw;
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.rfind("node '", 0) == 0) throw;
    throw Error(e.code(), n.describe() + ": " + msg);
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::RuntimeError, n.describe() + ": out of memory during " + phase);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::RuntimeError, n.describe() + ": " + phase + " failed: " + e.what());
  }
}

bool all_known(const std::vector<TensorType>& ts) {
  for (auto& t : ts)
    if (!t.fully_known()) return false;
  return true;
}

}  // namespace

std::vector<std::unique_ptr<Kernel>> create_kernels(const Graph& g, std::vector<const OpEntry*>* entries) {
  std::vector<std::unique_ptr<Kernel>> kernels;
  std::vector<std::string> missing;
  std::vector<std::string> errors;
  const Registry& reg = registry();
  for (auto& n : g.nodes) {
    int64_t opset = g.opset(n.domain);
    const OpEntry* e = reg.find(n.domain, n.op_type, opset);
    entries->push_back(e);
    if (!e) {
      std::string d = n.domain.empty() ? "ai.onnx" : n.domain;
      missing.push_back("  " + n.op_type + " (domain " + d + ", opset " + std::to_string(opset) + ") at node '" + n.name + "'");
      kernels.push_back(nullptr);
      continue;
    }
    try {
      kernels.push_back(e->make(n, (int)opset));
    } catch (const Error& err) {
      std::string msg = err.what();
      errors.push_back(msg.rfind("node '", 0) == 0 ? msg : n.describe() + ": " + msg);
      kernels.push_back(nullptr);
    }
  }
  if (!missing.empty()) {
    std::string msg = std::to_string(missing.size()) + " node(s) use operators kiln cannot run:\n";
    for (auto& m : missing) msg += m + "\n";
    for (auto& m : errors) msg += "  " + m + "\n";
    throw Error(ErrorCode::Unsupported, msg.substr(0, msg.size() - 1));
  }
  if (!errors.empty()) {
    std::string msg;
    for (auto& m : errors) msg += (msg.empty() ? "" : "\n") + m;
    throw Error(ErrorCode::Unsupported, msg);
  }
  return kernels;
}

Plan::Plan(const Graph& g, int threads, bool channels_last) : g_(g), threads_(threads), channels_last_(channels_last) {
  auto id_of = [&](const std::string& name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    int id = (int)names_.size();
    names_.push_back(name);
    ids_[name] = id;
    return id;
  };
  for (auto& in : g.inputs) input_ids_.push_back(id_of(in.name));
  for (auto& [name, t] : g.initializers) id_of(name);
  for (auto& n : g.nodes) {
    std::vector<int> in, out;
    for (auto& s : n.inputs) in.push_back(s.empty() ? -1 : id_of(s));
    for (auto& s : n.outputs) out.push_back(s.empty() ? -1 : id_of(s));
    node_in_.push_back(std::move(in));
    node_out_.push_back(std::move(out));
  }
  for (auto& o : g.outputs) output_ids_.push_back(id_of(o.name));
  kernels_ = create_kernels(g, &entries_);
}

int Plan::value_id(const std::string& name) const {
  auto it = ids_.find(name);
  return it == ids_.end() ? -1 : it->second;
}

ShapePlan Plan::analyze(const std::vector<TensorType>& input_types, bool fold) const {
  ShapePlan sp;
  const size_t nv = names_.size();
  sp.types.resize(nv);
  sp.constants.resize(nv);
  sp.is_output.assign(nv, false);
  for (int id : output_ids_) sp.is_output[id] = true;
  for (size_t i = 0; i < input_ids_.size(); ++i) sp.types[input_ids_[i]] = input_types[i];
  for (auto& [name, t] : g_.initializers) {
    int id = ids_.at(name);
    sp.types[id] = TensorType::of(t.dtype(), t.shape());
    sp.constants[id] = t;
  }
  for (size_t ni = 0; ni < g_.nodes.size(); ++ni) {
    const Node& n = g_.nodes[ni];
    Kernel* k = kernels_[ni].get();
    const auto& in = node_in_[ni];
    const auto& out = node_out_[ni];
    std::vector<const TensorType*> tin;
    std::vector<const Tensor*> vin;
    bool inputs_known = true, values_known = true;
    for (int id : in) {
      tin.push_back(id < 0 ? nullptr : &sp.types[id]);
      vin.push_back(id < 0 || sp.constants[id].empty() ? nullptr : &sp.constants[id]);
      if (id >= 0 && !sp.types[id].fully_known()) inputs_known = false;
      if (id >= 0 && sp.constants[id].empty()) values_known = false;
    }
    InferContext ictx(n, tin, vin);
    try {
      k->infer(ictx);
    } catch (...) {
      rethrow_with_node(n, "shape inference");
    }
    for (size_t o = 0; o < out.size(); ++o)
      if (out[o] >= 0) sp.types[out[o]] = ictx.outputs()[o];
    const bool outputs_known = inputs_known && all_known(ictx.outputs());
    const OpEntry* e = entries_[ni];
    bool can_fold = fold && !e->flags.nondeterministic && inputs_known &&
                    (values_known || e->flags.shape_only) && outputs_known;
    if (can_fold) {
      // Evaluate now; the node never runs again for this shape.
      std::vector<Tensor> tmp_in(in.size());
      std::vector<const Tensor*> pin;
      for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] < 0) { pin.push_back(nullptr); continue; }
        if (!sp.constants[in[i]].empty()) pin.push_back(&sp.constants[in[i]]);
        else { tmp_in[i] = Tensor::view(sp.types[in[i]].dtype, sp.types[in[i]].concrete(), nullptr); pin.push_back(&tmp_in[i]); }
      }
      std::vector<Tensor> results(out.size());
      std::vector<Tensor*> pout;
      for (size_t o = 0; o < out.size(); ++o) {
        if (out[o] < 0) { pout.push_back(nullptr); continue; }
        results[o] = Tensor(sp.types[out[o]].dtype, sp.types[out[o]].concrete());
        pout.push_back(&results[o]);
      }
      RunContext rctx(n, pin, pout);
      try {
        k->run(rctx);
      } catch (...) {
        rethrow_with_node(n, "constant folding");
      }
      for (size_t o = 0; o < out.size(); ++o)
        if (out[o] >= 0) sp.constants[out[o]] = std::move(results[o]);
      ++sp.folded_nodes;
      continue;
    }
    Step s;
    s.node = (int)ni;
    s.in = in;
    s.out = out;
    s.dynamic = !outputs_known;
    sp.steps.push_back(std::move(s));
  }
  return sp;
}

namespace {

// A value whose spatial dims are all 1 has the same bytes in both layouts.
bool layout_free(const TensorType& t) {
  if (!t.fully_known() || t.rank() < 3) return true;
  for (int d = 2; d < t.rank(); ++d)
    if (t.dims[d].value != 1) return false;
  return true;
}

// Can a broadcast input of shape `b` be read in ChannelsLast order at no cost? True when moving its (aligned)
// channel axis to the end does not move any bytes: its channel dim is 1 or all its spatial dims are 1.
bool broadcast_view_ok(const Shape& b, int rank) {
  if ((int)b.size() > rank) return false;
  Shape a((size_t)(rank - (int)b.size()), 1);
  a.insert(a.end(), b.begin(), b.end());
  bool spatial_ones = true;
  for (int d = 2; d < rank; ++d) spatial_ones = spatial_ones && a[d] == 1;
  return a[1] == 1 || spatial_ones;
}

// Physical view of a broadcast input (aligned to `rank`) in ChannelsLast order.
Shape broadcast_view(const Shape& b, int rank) {
  Shape a((size_t)(rank - (int)b.size()), 1);
  a.insert(a.end(), b.begin(), b.end());
  return data::physical_order(a);
}

}  // namespace

// Chooses a memory layout for every value and inserts conversions where a kernel needs another one.
// Kernels that can (convolutions, pooling, ...) produce ChannelsLast; layout-blind elementwise kernels keep it;
// everything else gets Plain. Values with all spatial dims 1 need no conversion either way.
void Plan::plan_layouts(ShapePlan& sp) const {
  const size_t nv0 = sp.types.size();
  sp.layout.assign(nv0, Layout::Plain);
  sp.output_ids = output_ids_;
  if (!channels_last_) return;
  std::vector<Step> steps;
  std::map<std::pair<int, int>, int> converted;  // (value, target layout) -> converted value id
  auto new_value = [&](int from, Layout l) {
    int id = (int)sp.types.size();
    sp.types.push_back(sp.types[from]);
    sp.constants.emplace_back();
    sp.is_output.push_back(false);
    sp.layout.push_back(l);
    return id;
  };
  auto convert = [&](int id, Layout target) -> int {
    if (id < 0 || sp.layout[id] == target || layout_free(sp.types[id])) return id;
    auto key = std::make_pair(id, (int)target);
    auto it = converted.find(key);
    if (it != converted.end()) return it->second;
    int nid = new_value(id, target);
    Step c;
    c.in = {id};
    c.out = {nid};
    c.convert_to = target;
    c.in_layout = {sp.layout[id]};
    c.out_layout = {target};
    steps.push_back(std::move(c));
    ++sp.conversions;
    converted[key] = nid;
    return nid;
  };
  for (auto& s : sp.steps) {
    std::vector<const TensorType*> tin;
    std::vector<Layout> lin;
    for (int id : s.in) {
      tin.push_back(id < 0 ? nullptr : &sp.types[id]);
      lin.push_back(id < 0 ? Layout::Plain : sp.layout[id]);
    }
    LayoutRule rule = LayoutRule::PlainOnly;
    if (!s.dynamic) rule = kernels_[s.node]->layout_rule(tin, lin);
    Layout out_layout = Layout::Plain;
    if (rule == LayoutRule::Elementwise) {
      // ChannelsLast when a full-size input is, and every other input can be viewed in that order.
      const TensorType& ot = sp.types[s.out[0]];
      bool any_cl = false, ok = ot.fully_known() && ot.rank() >= 3;
      Shape oshape = ok ? ot.concrete() : Shape{};
      for (int id : s.in) {
        if (id < 0 || !ok) continue;
        if (!sp.types[id].fully_known()) { ok = false; continue; }
        Shape sh = sp.types[id].concrete();
        if (sh == oshape) any_cl = any_cl || (sp.layout[id] == Layout::ChannelsLast && !layout_free(sp.types[id]));
        else if (!broadcast_view_ok(sh, ot.rank())) ok = false;
      }
      for (size_t o = 1; o < s.out.size(); ++o)
        if (s.out[o] >= 0 && !(sp.types[s.out[o]].fully_known() && sp.types[s.out[o]].concrete() == oshape)) ok = false;
      if (ok && any_cl) {
        for (auto& id : s.in)
          if (id >= 0 && sp.types[id].concrete() == oshape) id = convert(id, Layout::ChannelsLast);
        s.physical_views = true;
        out_layout = Layout::ChannelsLast;
      } else {
        rule = LayoutRule::PlainOnly;
      }
    }
    if (rule == LayoutRule::PlainOnly)
      for (auto& id : s.in) id = convert(id, Layout::Plain);
    if (rule == LayoutRule::ChannelsLast) {
      // Channels-last kernels are fastest with channels-last activations in (oneDNN falls back to slow
      // reference code for mixed plain-in / channels-last-out convolutions): convert computed inputs, never
      // constants such as weights.
      for (auto& id : s.in)
        if (id >= 0 && sp.constants[id].empty() && sp.types[id].fully_known() && sp.types[id].rank() >= 3)
          id = convert(id, Layout::ChannelsLast);
      out_layout = Layout::ChannelsLast;
    }
    s.in_layout.clear();
    for (int id : s.in) s.in_layout.push_back(id < 0 ? Layout::Plain : sp.layout[id]);
    s.out_layout.clear();
    for (int id : s.out) {
      Layout l = Layout::Plain;
      if (id >= 0 && out_layout == Layout::ChannelsLast && sp.types[id].rank() >= 3 && !layout_free(sp.types[id]))
        l = Layout::ChannelsLast;
      if (id >= 0) sp.layout[id] = l;
      s.out_layout.push_back(l);
    }
    steps.push_back(std::move(s));
  }
  // Graph outputs are returned Plain.
  for (auto& id : sp.output_ids) {
    if (sp.layout[id] == Layout::Plain || layout_free(sp.types[id])) continue;
    int nid = convert(id, Layout::Plain);
    sp.is_output[id] = false;
    sp.is_output[nid] = true;
    id = nid;
  }
  sp.steps = std::move(steps);
}

void Plan::plan_memory(ShapePlan& sp) const {
  const size_t nv = sp.types.size();
  sp.offset.assign(nv, -1);
  sp.last_use.assign(nv, -1);
  for (size_t si = 0; si < sp.steps.size(); ++si)
    for (int id : sp.steps[si].in)
      if (id >= 0) sp.last_use[id] = (int)si;
  struct Block { size_t size; int start, end; };
  std::vector<Block> blocks;
  std::vector<int> block_of(nv, -1);  // per value: its block (a view or in-place output shares its input's)
  for (size_t si = 0; si < sp.steps.size(); ++si) {
    auto& s = sp.steps[si];
    if (s.dynamic) continue;
    // Output 0 may take over an input's buffer: a view (the same bytes, whatever else still reads them), or an
    // in-place write.
    const bool view = s.node >= 0 && kernels_[s.node]->output_views_input();
    const int ip = view ? 0 : s.node >= 0 ? kernels_[s.node]->inplace_input() : -1;
    for (size_t o = 0; o < s.out.size(); ++o) {
      const int id = s.out[o];
      if (id < 0 || sp.is_output[id]) continue;
      size_t bytes = sp.types[id].fully_known() ? (size_t)shape_numel(sp.types[id].concrete()) * dtype_size(sp.types[id].dtype) : 0;
      if (!dtype_supported(sp.types[id].dtype)) continue;
      bytes = (bytes + 63) / 64 * 64;
      const int end = std::max<int>(sp.last_use[id], (int)si);
      const int a = o == 0 && ip >= 0 && ip < (int)s.in.size() ? s.in[ip] : -1;
      if (a >= 0 && block_of[a] >= 0) {
        Block& b = blocks[block_of[a]];
        bool share = b.size == bytes && bytes > 0 && sp.layout[a] == sp.layout[id];
        if (share && !view) {
          // An in-place write: nothing in a's buffer (views included) is read after this step, and a is this
          // step's only input in that buffer (not also read as another input or through a view of it, e.g.
          // Conv(Reshape(d)) + d).
          share = b.end == (int)si;
          for (size_t j = 0; share && j < s.in.size(); ++j)
            if ((int)j != ip && s.in[j] >= 0 && block_of[s.in[j]] == block_of[a]) share = false;
        }
        if (share) {
          b.end = std::max(b.end, end);
          block_of[id] = block_of[a];
          continue;
        }
      }
      block_of[id] = (int)blocks.size();
      blocks.push_back({bytes, (int)si, end});
    }
  }
  // Largest first, each at the lowest offset free for its whole lifetime.
  std::vector<int> order(blocks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = (int)i;
  std::sort(order.begin(), order.end(), [&](int x, int y) {
    const Block &a = blocks[x], &b = blocks[y];
    return a.size != b.size ? a.size > b.size : a.start < b.start;
  });
  std::vector<size_t> block_off(blocks.size());
  std::vector<int> placed;
  size_t total = 0;
  for (int bi : order) {
    const Block& b = blocks[bi];
    std::vector<std::pair<size_t, size_t>> busy;
    for (int pj : placed)
      if (blocks[pj].start <= b.end && b.start <= blocks[pj].end) busy.push_back({block_off[pj], block_off[pj] + blocks[pj].size});
    std::sort(busy.begin(), busy.end());
    size_t off = 0;
    for (auto& [s, e] : busy) {
      if (off + b.size <= s) break;
      off = std::max(off, e);
    }
    placed.push_back(bi);
    block_off[bi] = off;
    total = std::max(total, off + b.size);
  }
  for (size_t id = 0; id < nv; ++id)
    if (block_of[id] >= 0) sp.offset[id] = (int64_t)block_off[block_of[id]];
  sp.arena_bytes = total;
}

ShapePlan& Plan::plan_for(const std::vector<const Tensor*>& inputs) {
  std::vector<Shape> sig;
  for (auto* t : inputs) sig.push_back(t->shape());
  for (auto it = cache_.begin(); it != cache_.end(); ++it)
    if (it->signature == sig) {
      cache_.splice(cache_.begin(), cache_, it);
      return cache_.front();
    }
  std::vector<TensorType> types;
  for (auto* t : inputs) types.push_back(TensorType::of(t->dtype(), t->shape()));
  ShapePlan sp = analyze(types, true);
  sp.signature = sig;
  plan_layouts(sp);
  plan_memory(sp);
  cache_.push_front(std::move(sp));
  if (cache_.size() > 8) cache_.pop_back();
  return cache_.front();
}

std::vector<Tensor> Plan::run(const std::vector<const Tensor*>& inputs) {
  omp_set_num_threads(threads_);
  ShapePlan& sp = plan_for(inputs);
  last_arena_bytes_ = sp.arena_bytes;
  {
    int cl = 0;
    for (auto& st : sp.steps)
      if (st.node >= 0 && !st.out_layout.empty() && st.out_layout[0] == Layout::ChannelsLast) ++cl;
    last_layout_stats_ = {(int)sp.steps.size() - sp.conversions, cl, sp.conversions};
  }
  const size_t nv = sp.types.size();
  const size_t had = arena_->capacity();
  uint8_t* arena = sp.arena_bytes ? arena_->get(sp.arena_bytes) : nullptr;
  // A new arena is mapped in at once, on every thread: faulting its pages in one by one as the first run writes them
  // cost unet3d's first run (384 MiB) 100-200 ms more, the convolutions' threads contending in the page-fault path.
  if (arena && arena_->capacity() != had) prefault_buffer(arena, arena_->capacity(), threads_);
  if (!sp.prepared) {
    sp.prepared = true;
    prepare_kernels(sp, inputs, arena);
  }
  std::vector<Tensor> slot(nv);
  for (size_t i = 0; i < input_ids_.size(); ++i) slot[input_ids_[i]] = *inputs[i];
  for (size_t id = 0; id < nv; ++id)
    if (!sp.constants[id].empty()) slot[id] = sp.constants[id];
  static const Node conversion_node = [] {
    Node n;
    n.name = "layout conversion";
    n.op_type = "LayoutConversion";
    n.domain = "kiln";
    return n;
  }();

  for (size_t si = 0; si < sp.steps.size(); ++si) {
    const Step& s = sp.steps[si];
    const Node& n = s.node >= 0 ? g_.nodes[s.node] : conversion_node;
    std::vector<const Tensor*> pin;
    for (int id : s.in) {
      if (id < 0) { pin.push_back(nullptr); continue; }
      if (slot[id].empty())
        throw Error(ErrorCode::RuntimeError, n.describe() + ": input '" + names_[id < (int)names_.size() ? id : 0] + "' was not computed");
      pin.push_back(&slot[id]);
    }
    if (s.dynamic) {
      Kernel* k = kernels_[s.node].get();
      std::vector<TensorType> rt;
      rt.reserve(pin.size());
      for (auto* t : pin) rt.push_back(t ? TensorType::of(t->dtype(), t->shape()) : TensorType{});
      std::vector<const TensorType*> tin;
      for (size_t i = 0; i < pin.size(); ++i) tin.push_back(pin[i] ? &rt[i] : nullptr);
      InferContext ictx(n, tin, pin);
      try {
        k->infer(ictx);
      } catch (...) {
        rethrow_with_node(n, "shape inference");
      }
      for (size_t o = 0; o < s.out.size(); ++o) {
        int id = s.out[o];
        if (id < 0) continue;
        const TensorType& t = ictx.outputs()[o];
        slot[id] = t.fully_known() && dtype_supported(t.dtype) ? Tensor(t.dtype, t.concrete()) : Tensor();
      }
    } else {
      for (int id : s.out) {
        if (id < 0) continue;
        const TensorType& t = sp.types[id];
        if (sp.offset[id] >= 0) slot[id] = Tensor::view(t.dtype, t.concrete(), arena + sp.offset[id]);
        else slot[id] = Tensor(t.dtype, t.concrete());
      }
    }
    auto t0 = on_step ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    if (s.node < 0) {
      // Layout conversion between logical (N, C, D...) and physical (N, D..., C).
      const Tensor& x = *pin[0];
      const int64_t N = x.dim(0), C = x.dim(1), S = x.numel() / std::max<int64_t>(1, N * C);
      data::layout_copy(x.raw(), slot[s.out[0]].raw(), N, C, S, dtype_size(x.dtype()), s.convert_to == Layout::ChannelsLast);
    } else {
      Kernel* k = kernels_[s.node].get();
      std::vector<Tensor*> pout;
      for (int id : s.out) pout.push_back(id < 0 ? nullptr : &slot[id]);
      std::vector<Tensor> vin, vout;
      if (s.physical_views) {
        // Layout-blind kernel on ChannelsLast data: same bytes, physical shapes.
        const int rank = sp.types[s.out[0]].rank();
        const Shape oshape = sp.types[s.out[0]].concrete();
        vin.resize(pin.size());
        vout.resize(pout.size());
        for (size_t i = 0; i < pin.size(); ++i) {
          if (!pin[i]) continue;
          const Shape& sh = pin[i]->shape();
          vin[i] = pin[i]->reshaped(sh == oshape ? data::physical_order(sh) : broadcast_view(sh, rank));
          pin[i] = &vin[i];
        }
        for (size_t o = 0; o < pout.size(); ++o) {
          if (!pout[o]) continue;
          vout[o] = pout[o]->reshaped(data::physical_order(pout[o]->shape()));
          pout[o] = &vout[o];
        }
      }
      RunContext rctx(n, pin, pout, s.in_layout, s.out_layout);
      try {
        k->run(rctx);
      } catch (...) {
        rethrow_with_node(n, "execution");
      }
    }
    if (on_step) on_step(n, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    for (size_t o = 0; o < s.out.size(); ++o)
      if (s.out[o] >= 0 && slot[s.out[o]].empty())
        throw Error(ErrorCode::RuntimeError, n.describe() + ": output " + std::to_string(o) + " was not produced");
    // First run of this plan: initializers this step's kernel has copied into its own prepared form are freed
    // right away (not after the run), so the run's peak memory holds one copy of each weight.
    if (owner_ && !sp.release_checked && s.node >= 0)
      for (int id : s.in)
        if (id >= 0 && !sp.constants[id].empty() && has_value(slot[id]) && release_if_owned(id)) slot[id] = sp.constants[id];
    // Release run-time allocations after their last reader.
    for (int id : s.in)
      if (id >= 0 && sp.last_use[id] == (int)si && sp.offset[id] < 0 && !sp.is_output[id] && sp.constants[id].empty())
        slot[id] = Tensor();
  }
  std::vector<Tensor> outs;
  for (size_t i = 0; i < sp.output_ids.size(); ++i) {
    int id = sp.output_ids[i];
    if (slot[id].empty()) throw Error(ErrorCode::RuntimeError, "graph output '" + names_[output_ids_[i]] + "' was not computed");
    // Outputs that alias inputs, constants or the arena are copied so the caller owns them.
    bool owned = !sp.constants[id].empty() ? false : sp.offset[id] < 0;
    for (int in : input_ids_)
      if (in == id) owned = false;
    outs.push_back(owned ? slot[id] : slot[id].clone());
  }
  sp.release_checked = true;
  return outs;
}

void Plan::prepare_kernels(ShapePlan& sp, const std::vector<const Tensor*>& inputs, uint8_t* arena) {
  // One context per step, as its first run will see it, over tensors of the context's own: known values (inputs,
  // constants) as they are, computed ones with their final type and arena place, or no data.
  struct Item {
    int node;
    std::vector<Tensor> in, out;
    std::vector<int> in_ids;
    std::unique_ptr<RunContext> ctx;
  };
  std::vector<Item> items;
  for (const Step& s : sp.steps) {
    if (s.node < 0 || s.dynamic || s.physical_views) continue;
    Item it;
    it.node = s.node;
    bool known = true;
    auto tensor_of = [&](int id) {
      for (size_t i = 0; i < input_ids_.size(); ++i)
        if (input_ids_[i] == id) return *inputs[i];
      if (!sp.constants[id].empty()) return sp.constants[id];
      const TensorType& t = sp.types[id];
      if (!t.fully_known() || !dtype_supported(t.dtype)) {
        known = false;
        return Tensor();
      }
      return Tensor::view(t.dtype, t.concrete(), sp.offset[id] >= 0 ? arena + sp.offset[id] : nullptr);
    };
    for (int id : s.in) it.in.push_back(id < 0 ? Tensor() : tensor_of(id));
    for (int id : s.out) it.out.push_back(id < 0 ? Tensor() : tensor_of(id));
    if (!known) continue;
    it.in_ids = s.in;
    std::vector<const Tensor*> pin;
    std::vector<Tensor*> pout;
    for (size_t i = 0; i < it.in.size(); ++i) pin.push_back(s.in[i] < 0 ? nullptr : &it.in[i]);
    for (size_t o = 0; o < it.out.size(); ++o) pout.push_back(s.out[o] < 0 ? nullptr : &it.out[o]);
    it.ctx = std::make_unique<RunContext>(g_.nodes[s.node], pin, pout, s.in_layout, s.out_layout);
    items.push_back(std::move(it));
  }
  // Each worker takes the next step; after its prepare, a constant read by that node alone is freed at once when the
  // kernel now holds its own copy (as the first run would do after the step), so memory never holds every weight
  // twice. Constants with several readers wait for the first run.
  // A kernel copies a deferred weight out before packing it, so packing one holds it twice for a while: the largest
  // ones are packed one at a time, through one buffer, or two threads could hold 4 copies at once. A thread that
  // finds one being packed takes a smaller item meanwhile.
  constexpr size_t kLargeBytes = 16 << 20;
  std::vector<size_t> large, small;
  for (size_t i = 0; i < items.size(); ++i) {
    bool l = false;
    for (const Tensor& t : items[i].in) l = l || (t.is_deferred() && t.nbytes() >= kLargeBytes);
    (l ? large : small).push_back(i);
  }
  std::atomic<size_t> next_large{0}, next_small{0};
  std::mutex release_mutex, large_mutex;
  Arena large_staging;  // for the large deferred weights, copied out under large_mutex
  auto work = [&] {
    omp_set_num_threads(threads_);  // a new thread starts from the default; oneDNN sizes its primitives by it
    StagingScope staging;           // deferred weights are copied out through one buffer per thread
    for (;;) {
      std::unique_lock<std::mutex> one_large(large_mutex, std::defer_lock);
      size_t k, i = items.size();
      if (next_large.load() < large.size() && one_large.try_lock()) {
        if ((k = next_large.fetch_add(1)) < large.size()) i = large[k];
        else one_large.unlock();
      }
      if (i == items.size()) {
        if ((k = next_small.fetch_add(1)) < small.size()) {
          i = small[k];
        } else {
          one_large.lock();
          if ((k = next_large.fetch_add(1)) >= large.size()) break;
          i = large[k];
        }
      }
      Item& it = items[i];
      staging.lend(one_large.owns_lock() ? &large_staging : nullptr);
      try {
        kernels_[it.node]->prepare(*it.ctx);
      } catch (...) {
        // The first run does the work again and reports what fails.
      }
      staging.lend(nullptr);
      if (one_large.owns_lock()) {
        if (next_large.load() >= large.size()) large_staging = Arena();  // the last one: free it now
        one_large.unlock();
      }
      if (owner_) {
        std::lock_guard<std::mutex> lock(release_mutex);
        for (int id : it.in_ids) {
          if (id < 0 || sp.constants[id].empty() || !has_value(sp.constants[id])) continue;
          auto r = readers_.find(id);
          if (r != readers_.end() && r->second.size() == 1) release_if_owned(id);
        }
      }
      it.ctx.reset();
      it.in.clear();  // drops this context's hold on a freed weight
      it.out.clear();
    }
  };
  std::vector<std::unique_ptr<HelperThread>> helpers;
  try {
    for (int t = 1; t < threads_ && t < (int)items.size(); ++t) helpers.push_back(std::make_unique<HelperThread>(work));
  } catch (const std::system_error&) {
    // No more threads: the ones there are do it all.
  }
  work();
  helpers.clear();  // joins
}

int64_t Plan::last_arena_offset(const std::string& name) const {
  auto it = ids_.find(name);
  if (it == ids_.end() || cache_.empty()) return -1;
  const ShapePlan& sp = cache_.front();
  return it->second < (int)sp.offset.size() ? sp.offset[it->second] : -1;
}

uint8_t* Arena::get(size_t bytes) {
  if (bytes > capacity_) {
    buf_.reset();  // the old contents need not survive: free first, so the peak holds one buffer
    capacity_ = 0;
    try {
      buf_ = allocate_buffer(bytes);
    } catch (const Error&) {
      throw Error(ErrorCode::RuntimeError, "out of memory allocating a " + std::to_string(bytes) + "-byte arena");
    }
    capacity_ = bytes;
  }
  return static_cast<uint8_t*>(buf_.get());
}

bool Plan::takes_deferred(const std::string& name) const {
  const int id = value_id(name);
  if (id < 0) return false;
  for (int o : output_ids_)
    if (o == id) return false;
  bool read = false;
  for (size_t ni = 0; ni < node_in_.size(); ++ni)
    for (size_t j = 0; j < node_in_[ni].size(); ++j)
      if (node_in_[ni][j] == id) {
        if (!kernels_[ni]->takes_deferred((int)j)) return false;
        read = true;
      }
  return read;
}

void Plan::enable_constant_release(Graph& g) {
  if (&g != &g_) throw Error(ErrorCode::RuntimeError, "enable_constant_release: not the plan's graph");
  owner_ = &g;
  readers_.clear();
  for (size_t ni = 0; ni < node_in_.size(); ++ni)
    for (size_t j = 0; j < node_in_[ni].size(); ++j)
      if (node_in_[ni][j] >= 0) readers_[node_in_[ni][j]].push_back({(int)ni, (int)j});
}

bool Plan::release_if_owned(int id) {
  // Small constants are not worth it (and are often read as values by shape inference).
  constexpr size_t kMinBytes = 16 * 1024;
  auto git = owner_->initializers.find(names_[id]);
  if (git == owner_->initializers.end()) return false;
  Tensor& t = git->second;
  if (!has_value(t) || t.nbytes() < kMinBytes) return false;
  for (int o : output_ids_)
    if (o == id) return false;
  auto it = readers_.find(id);
  if (it == readers_.end()) return false;
  for (auto [ni, j] : it->second)
    if (!kernels_[ni]->owns_constant(j)) return false;
  const Tensor freed = Tensor::view(t.dtype(), t.shape(), nullptr);
  for (auto& cached : cache_)
    if (!cached.constants[id].empty()) cached.constants[id] = freed;
  released_bytes_ += t.nbytes();
  t = freed;
  for (auto [ni, j] : it->second) kernels_[ni]->constant_released(j);
  return true;
}
}  // namespace kiln
