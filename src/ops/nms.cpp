// NonMaxSuppression (opsets 10, 11): greedy per (batch, class) selection; the output's length is data-dependent.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops/common.h"

namespace kiln {
namespace {

class NmsK : public Kernel {
 public:
  NmsK(const Node& n, int) : n_(n) {
    center_ = n.attr_int("center_point_box", 0);
    if (center_ != 0 && center_ != 1) fail(n.describe() + ": center_point_box must be 0 or 1, got " + std::to_string(center_));
  }

  void infer(InferContext& ctx) override {
    const TensorType& b = ctx.input_type(0);
    const TensorType& s = ctx.input_type(1);
    if (b.has_shape && (b.rank() != 3 || (b.dims[2].known() && b.dims[2].value != 4)))
      fail(n_.describe() + ": boxes must be [num_batches, spatial_dimension, 4], got " + b.str());
    if (s.has_shape && s.rank() != 3) fail(n_.describe() + ": scores must be [num_batches, num_classes, spatial_dimension], got " + s.str());
    TensorType out;
    out.dtype = DType::Int64;
    out.has_shape = true;
    out.dims = {Dim(), Dim::of(3)};  // the number of selected boxes is only known after running
    ctx.set_output(0, out);
  }

  void run(RunContext& ctx) override {
    const Tensor& boxes = ctx.input(0);
    const Tensor& scores = ctx.input(1);
    if (boxes.rank() != 3 || boxes.shape()[2] != 4)
      fail(n_.describe() + ": boxes must be [num_batches, spatial_dimension, 4], got " + shape_str(boxes.shape()));
    if (scores.rank() != 3 || scores.shape()[0] != boxes.shape()[0] || scores.shape()[2] != boxes.shape()[1])
      fail(n_.describe() + ": scores " + shape_str(scores.shape()) + " do not match boxes " + shape_str(boxes.shape()));
    int64_t max_out = 0;
    if (ctx.has_input(2) && ctx.input(2).numel() > 0) max_out = to_int64s(ctx.input(2))[0];
    double iou_th = 0;
    if (ctx.has_input(3) && ctx.input(3).numel() > 0) iou_th = to_doubles(ctx.input(3))[0];
    bool use_score_th = ctx.has_input(4) && ctx.input(4).numel() > 0;
    double score_th = use_score_th ? to_doubles(ctx.input(4))[0] : 0;
    if (iou_th < 0 || iou_th > 1) fail(n_.describe() + ": iou_threshold must be in [0, 1], got " + std::to_string(iou_th));
    const int64_t B = boxes.shape()[0], S = boxes.shape()[1], C = scores.shape()[1];
    std::vector<double> bx = to_doubles(boxes), sc = to_doubles(scores);
    // Corners as (y1, x1, y2, x2) with y1 <= y2, x1 <= x2.
    std::vector<double> cb((size_t)(B * S * 4));
    for (int64_t i = 0; i < B * S; ++i) {
      const double* p = &bx[i * 4];
      double y1, x1, y2, x2;
      if (center_) {
        x1 = p[0] - p[2] / 2; x2 = p[0] + p[2] / 2;
        y1 = p[1] - p[3] / 2; y2 = p[1] + p[3] / 2;
      } else {
        y1 = std::min(p[0], p[2]); y2 = std::max(p[0], p[2]);
        x1 = std::min(p[1], p[3]); x2 = std::max(p[1], p[3]);
      }
      cb[i * 4 + 0] = y1; cb[i * 4 + 1] = x1; cb[i * 4 + 2] = y2; cb[i * 4 + 3] = x2;
    }
    auto iou = [&](const double* a, const double* b) {
      double ih = std::min(a[2], b[2]) - std::max(a[0], b[0]);
      double iw = std::min(a[3], b[3]) - std::max(a[1], b[1]);
      if (ih <= 0 || iw <= 0) return 0.0;
      double inter = ih * iw;
      double uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
      return uni > 0 ? inter / uni : 0.0;
    };
    std::vector<int64_t> sel;
    std::vector<int64_t> order;
    std::vector<int64_t> kept;
    for (int64_t b = 0; b < B && max_out > 0; ++b) {
      for (int64_t c = 0; c < C; ++c) {
        const double* s = &sc[(b * C + c) * S];
        order.clear();
        for (int64_t i = 0; i < S; ++i)
          if (!std::isnan(s[i]) && (!use_score_th || s[i] > score_th)) order.push_back(i);  // NaN scores never selected
        // Highest score first; equal scores keep the lower box index first.
        std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return s[i] > s[j]; });
        kept.clear();
        for (int64_t i : order) {
          if ((int64_t)kept.size() >= max_out) break;
          const double* bi = &cb[(b * S + i) * 4];
          bool ok = true;
          for (int64_t k : kept)
            if (iou(bi, &cb[(b * S + k) * 4]) > iou_th) { ok = false; break; }
          if (!ok) continue;
          kept.push_back(i);
          sel.insert(sel.end(), {b, c, i});
        }
      }
    }
    Tensor& y = ctx.allocate_output(0, DType::Int64, {(int64_t)sel.size() / 3, 3});
    std::copy(sel.begin(), sel.end(), y.data<int64_t>());
  }

 private:
  Node n_;  // a copy: the kernel must not depend on the graph's node storage
  int64_t center_ = 0;
};

}  // namespace

void register_nms(Registry& r) {
  r.add("NonMaxSuppression", 10, make_kernel<NmsK>());
  r.add("NonMaxSuppression", 11, make_kernel<NmsK>());
}

}  // namespace kiln
