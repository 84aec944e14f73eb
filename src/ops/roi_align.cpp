// RoiAlign (opset 10: output_half_pixel; opset 16: coordinate_transformation_mode), avg or max pooling.
#include <algorithm>
#include <cmath>

#include "ops/common.h"

namespace kiln {
namespace {

class RoiAlignK : public Kernel {
 public:
  RoiAlignK(const Node& n, int opset) : n_(n) {
    std::string m = n.attr_string("mode", "avg");
    if (m == "avg") max_ = false;
    else if (m == "max") max_ = true;
    else fail(n.describe() + ": mode must be 'avg' or 'max', got '" + m + "'");
    oh_ = n.attr_int("output_height", 1);
    ow_ = n.attr_int("output_width", 1);
    sr_ = n.attr_int("sampling_ratio", 0);
    scale_ = n.attr_float("spatial_scale", 1.f);
    if (oh_ <= 0 || ow_ <= 0) fail(n.describe() + ": output_height/output_width must be positive");
    if (sr_ < 0) fail(n.describe() + ": sampling_ratio must be >= 0");
    if (sr_ > 1024) unsupported(n.describe() + ": sampling_ratio above 1024 is not supported");
    std::string ct = opset >= 16 ? n.attr_string("coordinate_transformation_mode", "half_pixel") : "output_half_pixel";
    if (ct == "half_pixel") half_pixel_ = true;
    else if (ct == "output_half_pixel") half_pixel_ = false;
    else fail(n.describe() + ": coordinate_transformation_mode must be half_pixel or output_half_pixel, got '" + ct + "'");
  }

  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    const TensorType& rois = ctx.input_type(1);
    const TensorType& bi = ctx.input_type(2);
    if (x.has_shape && x.rank() != 4) fail(n_.describe() + ": X must be 4-D [N, C, H, W], got " + x.str());
    if (rois.has_shape && (rois.rank() != 2 || (rois.dims[1].known() && rois.dims[1].value != 4)))
      fail(n_.describe() + ": rois must be [num_rois, 4], got " + rois.str());
    if (bi.has_shape && bi.rank() != 1) fail(n_.describe() + ": batch_indices must be 1-D, got " + bi.str());
    TensorType out;
    out.dtype = x.dtype;
    out.has_shape = true;
    Dim nr = bi.has_shape ? bi.dims[0] : Dim();
    if (!nr.known() && rois.has_shape) nr = rois.dims[0];
    out.dims = {nr, x.has_shape ? x.dims[1] : Dim(), Dim::of(oh_), Dim::of(ow_)};
    ctx.set_output(0, out);
  }

  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const Tensor& rois = ctx.input(1);
    const Tensor& bidx = ctx.input(2);
    if (x.rank() != 4) fail(n_.describe() + ": X must be 4-D");
    if (rois.rank() != 2 || rois.shape()[1] != 4 || bidx.rank() != 1 || bidx.shape()[0] != rois.shape()[0])
      fail(n_.describe() + ": rois " + shape_str(rois.shape()) + " / batch_indices " + shape_str(bidx.shape()) + " do not match");
    if (x.dtype() != DType::Float32 && x.dtype() != DType::Float64)
      unsupported(n_.describe() + ": RoiAlign supports float32/float64, got " + dtype_name(x.dtype()));
    const int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3], R = rois.shape()[0];
    std::vector<double> rv = to_doubles(rois);
    std::vector<int64_t> bv = to_int64s(bidx);
    for (int64_t b : bv)
      if (b < 0 || b >= N) fail(n_.describe() + ": batch index " + std::to_string(b) + " is out of range [0, " + std::to_string(N) + ")");
    Tensor& y = ctx.output(0);
    if (y.numel() == 0) return;
    if (H == 0 || W == 0) fail(n_.describe() + ": X has empty spatial dimensions");
    if (x.dtype() == DType::Float32) go<float>(x, y, rv, bv, C, H, W, R);
    else go<double>(x, y, rv, bv, C, H, W, R);
  }

 private:
  struct Sample { int64_t p[4]; double w[4]; };

  template <class T>
  void go(const Tensor& x, Tensor& y, const std::vector<double>& rv, const std::vector<int64_t>& bv, int64_t C, int64_t H,
          int64_t W, int64_t R) const {
    const T* xd = x.data<T>();
    T* yd = y.data<T>();
    const int64_t OH = oh_, OW = ow_;
#pragma omp parallel for schedule(dynamic)
    for (int64_t r = 0; r < R; ++r) {
      const double off = half_pixel_ ? 0.5 : 0.0;
      double sw = rv[r * 4 + 0] * scale_ - off, sh = rv[r * 4 + 1] * scale_ - off;
      double ew = rv[r * 4 + 2] * scale_ - off, eh = rv[r * 4 + 3] * scale_ - off;
      double rw = ew - sw, rh = eh - sh;
      if (!half_pixel_) { rw = std::max(rw, 1.0); rh = std::max(rh, 1.0); }
      const double bh = rh / (double)OH, bw = rw / (double)OW;
      // Sampling grid per bin; cap it so a huge roi cannot demand unbounded work.
      auto grid = [](double v) { return !(v > 0) ? int64_t{0} : v > 1024.0 ? int64_t{1024} : (int64_t)v; };  // NaN -> 0
      const int64_t gh = sr_ > 0 ? sr_ : grid(std::ceil(rh / (double)OH));
      const int64_t gw = sr_ > 0 ? sr_ : grid(std::ceil(rw / (double)OW));
      const double count = (double)std::max<int64_t>(gh * gw, 1);
      // Bilinear samples for every bin, shared by all channels.
      std::vector<Sample> s((size_t)(OH * OW * gh * gw));
      size_t k = 0;
      for (int64_t ph = 0; ph < OH; ++ph)
        for (int64_t pw = 0; pw < OW; ++pw)
          for (int64_t iy = 0; iy < gh; ++iy) {
            double yy = sh + (double)ph * bh + ((double)iy + 0.5) * bh / (double)gh;
            for (int64_t ix = 0; ix < gw; ++ix, ++k) {
              double xx = sw + (double)pw * bw + ((double)ix + 0.5) * bw / (double)gw;
              Sample& q = s[k];
              if (!(yy >= -1.0 && yy <= (double)H && xx >= -1.0 && xx <= (double)W)) {  // outside (or NaN): contributes 0
                for (int t = 0; t < 4; ++t) { q.p[t] = 0; q.w[t] = 0; }
                continue;
              }
              double yv = std::max(yy, 0.0), xv = std::max(xx, 0.0);
              int64_t yl = (int64_t)yv, xl = (int64_t)xv, yhi, xhi;
              if (yl >= H - 1) { yhi = yl = H - 1; yv = (double)yl; } else yhi = yl + 1;
              if (xl >= W - 1) { xhi = xl = W - 1; xv = (double)xl; } else xhi = xl + 1;
              double ly = yv - (double)yl, lx = xv - (double)xl, hy = 1 - ly, hx = 1 - lx;
              q.p[0] = yl * W + xl; q.p[1] = yl * W + xhi; q.p[2] = yhi * W + xl; q.p[3] = yhi * W + xhi;
              q.w[0] = hy * hx; q.w[1] = hy * lx; q.w[2] = ly * hx; q.w[3] = ly * lx;
            }
          }
      const int64_t per_bin = gh * gw;
      for (int64_t c = 0; c < C; ++c) {
        const T* xp = xd + (bv[r] * C + c) * H * W;
        T* yp = yd + (r * C + c) * OH * OW;
        for (int64_t b = 0; b < OH * OW; ++b) {
          const Sample* q = &s[(size_t)(b * per_bin)];
          double v = 0;
          if (!max_) {
            for (int64_t i = 0; i < per_bin; ++i)
              v += q[i].w[0] * xp[q[i].p[0]] + q[i].w[1] * xp[q[i].p[1]] + q[i].w[2] * xp[q[i].p[2]] + q[i].w[3] * xp[q[i].p[3]];
            v /= count;
          } else {
            for (int64_t i = 0; i < per_bin; ++i) {
              double m = std::max(std::max(q[i].w[0] * xp[q[i].p[0]], q[i].w[1] * xp[q[i].p[1]]),
                                  std::max(q[i].w[2] * xp[q[i].p[2]], q[i].w[3] * xp[q[i].p[3]]));
              v = i == 0 ? m : std::max(v, m);
            }
          }
          yp[b] = (T)v;
        }
      }
    }
  }

  Node n_;  // a copy: the kernel must not depend on the graph's node storage
  bool max_ = false, half_pixel_ = true;
  int64_t oh_ = 1, ow_ = 1, sr_ = 0;
  double scale_ = 1;
};

}  // namespace

void register_roi_align(Registry& r) {
  r.add("RoiAlign", 10, make_kernel<RoiAlignK>());
  r.add("RoiAlign", 16, make_kernel<RoiAlignK>());
}

}  // namespace kiln
