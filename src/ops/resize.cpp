// Resize (opsets 10, 11, 13, 18, 19) and Upsample (7, 9): nearest / linear / cubic over any axes.
#include <cmath>

#include "backends/cpu/resize_common.h"
#include "ops/common.h"

namespace kiln {
namespace {

using cpu::CoordMode;
using cpu::NearestMode;
using cpu::ResizeMode;

// Where the per-axis sizes come from, once every value is known.
struct ResizeSpec {
  std::vector<double> scales;            // per dimension
  Shape out;                             // per dimension
  std::vector<double> roi_start, roi_end;
};

class ResizeK : public Kernel {
 public:
  // upsample: the op is Upsample (scales from the attribute at opset 7, from input 1 at opset 9).
  ResizeK(const Node& n, int opset, bool upsample) : n_(n), opset_(opset), upsample_(upsample) {
    std::string mode = n.attr_string("mode", "nearest");
    if (mode == "nearest") o_.mode = ResizeMode::Nearest;
    else if (mode == "linear" || (upsample && mode == "bilinear")) o_.mode = ResizeMode::Linear;
    else if (mode == "cubic" && !upsample && opset >= 11) o_.mode = ResizeMode::Cubic;
    else fail(n.describe() + ": mode '" + mode + "' is not one of nearest, linear" + (upsample || opset < 11 ? "" : ", cubic"));
    if (upsample || opset < 11) {
      // Before opset 11 the only mapping was x_in = x_out / scale, with nearest truncating.
      o_.coord = CoordMode::Asymmetric;
      o_.nearest = NearestMode::Simple;
      if (upsample && opset < 9) {
        if (!n.has_attr("scales")) fail(n.describe() + ": Upsample-7 needs the 'scales' attribute");
        for (float s : n.attr_floats("scales")) attr_scales_.push_back(s);
      }
      return;
    }
    std::string ct = n.attr_string("coordinate_transformation_mode", "half_pixel");
    if (ct == "half_pixel") o_.coord = CoordMode::HalfPixel;
    else if (ct == "half_pixel_symmetric" && opset >= 19) o_.coord = CoordMode::HalfPixelSymmetric;
    else if (ct == "pytorch_half_pixel") o_.coord = CoordMode::PytorchHalfPixel;
    else if (ct == "align_corners") o_.coord = CoordMode::AlignCorners;
    else if (ct == "asymmetric") o_.coord = CoordMode::Asymmetric;
    else if (ct == "tf_half_pixel_for_nn") o_.coord = CoordMode::TfHalfPixelForNN;
    else if (ct == "tf_crop_and_resize") o_.coord = CoordMode::TfCropAndResize;
    else fail(n.describe() + ": unknown coordinate_transformation_mode '" + ct + "'");
    std::string nm = n.attr_string("nearest_mode", "round_prefer_floor");
    if (nm == "round_prefer_floor") o_.nearest = NearestMode::RoundPreferFloor;
    else if (nm == "round_prefer_ceil") o_.nearest = NearestMode::RoundPreferCeil;
    else if (nm == "floor") o_.nearest = NearestMode::Floor;
    else if (nm == "ceil") o_.nearest = NearestMode::Ceil;
    else fail(n.describe() + ": unknown nearest_mode '" + nm + "'");
    o_.cubic_a = n.attr_float("cubic_coeff_a", -0.75f);
    o_.exclude_outside = n.attr_int("exclude_outside", 0) != 0;
    o_.extrapolation_value = n.attr_float("extrapolation_value", 0.f);
    if (opset >= 18) {
      o_.antialias = n.attr_int("antialias", 0) != 0;
      axes_ = n.attr_ints("axes", {});
      std::string kp = n.attr_string("keep_aspect_ratio_policy", "stretch");
      if (kp == "stretch") policy_ = 0;
      else if (kp == "not_larger") policy_ = 1;
      else if (kp == "not_smaller") policy_ = 2;
      else fail(n.describe() + ": unknown keep_aspect_ratio_policy '" + kp + "'");
    }
  }

  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!x.has_shape) { ctx.set_output(0, unknown_type(x.dtype)); return; }
    const int rank = x.rank();
    std::vector<int> axes = resolved_axes(rank);
    TensorType out;
    out.dtype = x.dtype;
    out.has_shape = true;
    out.dims = x.dims;
    std::vector<double> scales;
    std::vector<int64_t> sizes;
    int src = source(ctx, &scales, &sizes);
    if (src == 0) {  // values unknown: only the untouched axes are known
      std::vector<bool> touched(rank, false);
      for (int a : axes) touched[a] = true;
      for (int d = 0; d < rank; ++d)
        if (touched[d]) out.dims[d] = Dim();
      ctx.set_output(0, out);
      return;
    }
    check_lengths(scales, sizes, axes, rank);
    if (src == 1) {
      for (size_t i = 0; i < axes.size(); ++i) {
        const Dim& d = x.dims[axes[i]];
        if (scales[i] == 1.0) continue;  // keeps symbols
        out.dims[axes[i]] = d.known() ? Dim::of((int64_t)std::floor((double)d.value * scales[i])) : Dim();
      }
    } else {
      bool all_known = true;
      for (int a : axes) all_known = all_known && x.dims[a].known();
      if (policy_ != 0 && !all_known) {
        for (int a : axes) out.dims[a] = Dim();
      } else if (policy_ != 0) {
        double s = aspect_scale(sizes, axes, [&](int a) { return x.dims[a].value; });
        for (int a : axes) out.dims[a] = Dim::of(round_size(s * (double)x.dims[a].value));
      } else {
        for (size_t i = 0; i < axes.size(); ++i) out.dims[axes[i]] = Dim::of(sizes[i]);
      }
    }
    ctx.set_output(0, out);
  }

  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    Tensor& y = ctx.output(0);
    const int rank = x.rank();
    if (y.rank() != rank) fail(n_.describe() + ": output rank does not match the input");
    if (y.numel() == 0) return;
    for (int d = 0; d < rank; ++d)
      if (x.shape()[d] == 0) fail(n_.describe() + ": cannot resize an empty input " + shape_str(x.shape()) + " to " + shape_str(y.shape()));
    ResizeSpec spec = compute_spec(ctx, x.shape());
    if (spec.out != y.shape())
      fail(n_.describe() + ": output shape " + shape_str(y.shape()) + " differs from the computed " + shape_str(spec.out));
    // Sampling tables are built once per (input shape, scales, sizes, roi).
    if (!(plan_valid_ && plan_.in_shape == x.shape() && plan_.out_shape == spec.out && key_scales_ == spec.scales &&
          key_rs_ == spec.roi_start && key_re_ == spec.roi_end)) {
      plan_ = cpu::make_resize_plan(x.shape(), spec.out, spec.scales, spec.roi_start, spec.roi_end, o_);
      key_scales_ = spec.scales;
      key_rs_ = spec.roi_start;
      key_re_ = spec.roi_end;
      plan_valid_ = true;
    }
    execute(plan_, x, y, n_);
  }

  static void execute(const cpu::ResizePlan& p, const Tensor& x, Tensor& y, const Node& n) {
    const DType t = x.dtype();
    if (t == DType::Float32) {
      if (!cpu::resize_fast_f32(p, x.data<float>(), y.data<float>())) cpu::resize_reference(p, x.data<float>(), y.data<float>());
      return;
    }
    if (p.nearest && !p.any_extrap && dtype_size(t) > 0 && cpu::resize_nearest_bytes(p, x.raw(), y.raw(), dtype_size(t))) return;
    if (t == DType::Float16 || t == DType::BFloat16) {
      const bool h = t == DType::Float16;
      Tensor xf(DType::Float32, x.shape()), yf(DType::Float32, y.shape());
      for (int64_t i = 0; i < x.numel(); ++i)
        xf.data<float>()[i] = h ? half_to_float(x.data<uint16_t>()[i]) : bfloat16_to_float(x.data<uint16_t>()[i]);
      if (!cpu::resize_fast_f32(p, xf.data<float>(), yf.data<float>())) cpu::resize_reference(p, xf.data<float>(), yf.data<float>());
      for (int64_t i = 0; i < y.numel(); ++i)
        y.data<uint16_t>()[i] = h ? float_to_half(yf.data<float>()[i]) : float_to_bfloat16(yf.data<float>()[i]);
      return;
    }
    if (t == DType::Bool || t == DType::String) unsupported(n.describe() + ": Resize of " + dtype_name(t) + " needs mode 'nearest'");
    visit_numeric(t, [&](auto tag) {
      using T = decltype(tag);
      cpu::resize_reference(p, x.data<T>(), y.data<T>());
    });
  }

 private:
  std::vector<int> resolved_axes(int rank) const {
    std::vector<int> axes;
    if (axes_.empty()) {
      for (int d = 0; d < rank; ++d) axes.push_back(d);
      return axes;
    }
    std::vector<bool> seen(rank, false);
    for (int64_t a : axes_) {
      int d = normalize_axis(a, rank, n_, "axes entry");
      if (seen[d]) fail(n_.describe() + ": axes has a repeated entry " + std::to_string(a));
      seen[d] = true;
      axes.push_back(d);
    }
    return axes;
  }

  int scales_input() const { return upsample_ || opset_ < 11 ? 1 : 2; }

  // 1: scales, 2: sizes, 0: values not known (yet). Fills the one found.
  template <class Ctx, class ValueOf>
  int source_impl(const Ctx& ctx, ValueOf value_of, std::vector<double>* scales, std::vector<int64_t>* sizes) const {
    if (upsample_ && opset_ < 9) { *scales = attr_scales_; return 1; }
    const int si = scales_input();
    const Tensor* sv = ctx.has_input(si) ? value_of(si) : nullptr;
    const bool scales_present = ctx.has_input(si);
    if (sv && sv->numel() > 0) {
      if (!is_float(sv->dtype())) fail(n_.describe() + ": scales must be a float tensor");
      *scales = to_doubles(*sv);
      if (si == 2 && ctx.has_input(3)) {
        const Tensor* zv = value_of(3);
        if (zv && zv->numel() > 0) fail(n_.describe() + ": only one of 'scales' and 'sizes' may be given");
      }
      return 1;
    }
    if (si == 1) {
      if (!scales_present) fail(n_.describe() + ": the scales input is required");
      if (sv) fail(n_.describe() + ": the scales input is empty");
      return 0;
    }
    if (scales_present && !sv) return 0;  // scales unknown until run time
    if (ctx.has_input(3)) {
      const Tensor* zv = value_of(3);
      if (!zv) return 0;
      if (zv->numel() > 0) {
        *sizes = to_int64s(*zv);
        return 2;
      }
    }
    fail(n_.describe() + ": one of 'scales' or 'sizes' must be given and non-empty");
  }

  int source(const InferContext& ctx, std::vector<double>* scales, std::vector<int64_t>* sizes) const {
    return source_impl(ctx, [&](int i) { return ctx.input_value(i); }, scales, sizes);
  }

  void check_lengths(const std::vector<double>& scales, const std::vector<int64_t>& sizes, const std::vector<int>& axes, int rank) const {
    const size_t want = axes.size();
    if (!scales.empty()) {
      if (scales.size() != want)
        fail(n_.describe() + ": scales has " + std::to_string(scales.size()) + " values, expected " + std::to_string(want) +
             (axes_.empty() ? " (the input rank " + std::to_string(rank) + ")" : " (one per entry of axes)"));
      for (double s : scales)
        if (!(s > 0) || !std::isfinite(s)) fail(n_.describe() + ": scales must be positive, got " + std::to_string(s));
    }
    if (!sizes.empty()) {
      if (sizes.size() != want)
        fail(n_.describe() + ": sizes has " + std::to_string(sizes.size()) + " values, expected " + std::to_string(want));
      for (int64_t s : sizes)
        if (s < 0) fail(n_.describe() + ": sizes must be non-negative, got " + std::to_string(s));
    }
  }

  template <class InDim>
  double aspect_scale(const std::vector<int64_t>& sizes, const std::vector<int>& axes, InDim in_dim) const {
    double s = policy_ == 1 ? INFINITY : 0;
    for (size_t i = 0; i < axes.size(); ++i) {
      int64_t in = in_dim(axes[i]);
      if (in == 0) fail(n_.describe() + ": keep_aspect_ratio_policy needs non-empty resized axes");
      double r = (double)sizes[i] / (double)in;
      s = policy_ == 1 ? std::min(s, r) : std::max(s, r);
    }
    return s;
  }

  static int64_t round_size(double v) { return (int64_t)std::round(v); }

  ResizeSpec compute_spec(const RunContext& ctx, const Shape& in) const {
    const int rank = (int)in.size();
    std::vector<int> axes = resolved_axes(rank);
    std::vector<double> scales;
    std::vector<int64_t> sizes;
    int src = source_impl(ctx, [&](int i) -> const Tensor* { return ctx.has_input(i) ? &ctx.input(i) : nullptr; }, &scales, &sizes);
    if (src == 0) fail(n_.describe() + ": scales/sizes could not be read");
    check_lengths(scales, sizes, axes, rank);
    ResizeSpec s;
    s.scales.assign(rank, 1.0);
    s.out = in;
    s.roi_start.assign(rank, 0.0);
    s.roi_end.assign(rank, 1.0);
    if (src == 1) {
      for (size_t i = 0; i < axes.size(); ++i) {
        s.scales[axes[i]] = scales[i];
        s.out[axes[i]] = (int64_t)std::floor((double)in[axes[i]] * scales[i]);
      }
    } else if (policy_ != 0) {
      double sc = aspect_scale(sizes, axes, [&](int a) { return in[a]; });
      for (int a : axes) {
        s.scales[a] = sc;
        s.out[a] = round_size(sc * (double)in[a]);
      }
    } else {
      for (size_t i = 0; i < axes.size(); ++i) {
        int a = axes[i];
        s.out[a] = sizes[i];
        s.scales[a] = in[a] == 0 ? 1.0 : (double)sizes[i] / (double)in[a];
      }
    }
    for (int d = 0; d < rank; ++d)
      if (s.out[d] > 0 && !(s.scales[d] > 0)) fail(n_.describe() + ": cannot resize axis " + std::to_string(d) + " of size 0 to " + std::to_string(s.out[d]));
    if (o_.coord == CoordMode::TfCropAndResize) {
      if (!ctx.has_input(1)) fail(n_.describe() + ": tf_crop_and_resize needs the roi input");
      std::vector<double> roi = to_doubles(ctx.input(1));
      if (roi.size() != 2 * axes.size())
        fail(n_.describe() + ": roi has " + std::to_string(roi.size()) + " values, expected " + std::to_string(2 * axes.size()));
      for (size_t i = 0; i < axes.size(); ++i) {
        s.roi_start[axes[i]] = roi[i];
        s.roi_end[axes[i]] = roi[axes.size() + i];
      }
    }
    return s;
  }

  Node n_;  // a copy: the kernel must not depend on the graph's node storage
  int opset_;
  bool upsample_;
  cpu::ResizeOptions o_;
  std::vector<int64_t> axes_;
  int policy_ = 0;  // 0 stretch, 1 not_larger, 2 not_smaller
  std::vector<double> attr_scales_;
  // Cached sampling plan.
  bool plan_valid_ = false;
  cpu::ResizePlan plan_;
  std::vector<double> key_scales_, key_rs_, key_re_;
};

struct ResizeOpK : ResizeK {
  ResizeOpK(const Node& n, int opset) : ResizeK(n, opset, false) {}
};
struct UpsampleK : ResizeK {
  UpsampleK(const Node& n, int opset) : ResizeK(n, opset, true) {}
};

}  // namespace

void register_resize(Registry& r) {
  for (int v : {10, 11, 13, 18, 19}) r.add("Resize", v, make_kernel<ResizeOpK>());
  for (int v : {7, 9}) r.add("Upsample", v, make_kernel<UpsampleK>());
}

}  // namespace kiln
