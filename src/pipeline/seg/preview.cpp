// PNG preview of a segmentation (three orthogonal middle slices, labels overlaid), written with libpng.
#include "pipeline/seg/preview.h"

#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

namespace kiln::seg {

namespace {

int label_at(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::UInt8: return t.data<uint8_t>()[i];
    case DType::UInt16: return t.data<uint16_t>()[i];
    case DType::Float32: return (int)std::lround(t.data<float>()[i]);
    default: seg_fail(ErrorCode::InvalidArgument, std::string("preview: unsupported label dtype ") + dtype_name(t.dtype()));
  }
}

// Percentile (linear interpolation, numpy's default) of `v`, which is reordered.
double percentile(std::vector<float>& v, double q) {
  if (v.empty()) return 0;
  const double pos = q / 100.0 * (double)(v.size() - 1);
  const size_t i = (size_t)std::floor(pos);
  std::nth_element(v.begin(), v.begin() + (long)i, v.end());
  const double a = v[i];
  if (i + 1 >= v.size()) return a;
  const double b = *std::min_element(v.begin() + (long)i + 1, v.end());
  return a + (b - a) * (pos - (double)i);
}

}  // namespace

std::array<uint8_t, 3> label_colour(int label) {
  static const std::array<std::array<uint8_t, 3>, 10> pal{{{230, 25, 75},
                                                           {60, 180, 75},
                                                           {255, 225, 25},
                                                           {0, 130, 200},
                                                           {245, 130, 48},
                                                           {145, 30, 180},
                                                           {70, 240, 240},
                                                           {240, 50, 230},
                                                           {210, 245, 60},
                                                           {250, 190, 212}}};
  if (label <= 0) return {0, 0, 0};
  return pal[(size_t)(label - 1) % pal.size()];
}

RgbImage render_preview(const Tensor& image, const Tensor& labels, const Spacing& spacing) {
  if (image.rank() != 3 || image.dtype() != DType::Float32)
    seg_fail(ErrorCode::InvalidArgument, "preview: image must be float32 (k, j, i), got " + shape_str(image.shape()));
  if (labels.shape() != image.shape())
    seg_fail(ErrorCode::InvalidArgument, "preview: labels " + shape_str(labels.shape()) + " and image " +
                                             shape_str(image.shape()) + " differ in shape");
  const int64_t K = image.dim(0), J = image.dim(1), I = image.dim(2);
  const int64_t n = image.numel();
  // Window: 0.5 / 99.5 percentiles (of at most ~4M evenly strided voxels).
  const int64_t stride = std::max<int64_t>(1, n / (1 << 22));
  std::vector<float> sample;
  sample.reserve((size_t)(n / stride + 1));
  for (int64_t i = 0; i < n; i += stride) sample.push_back(image.data<float>()[i]);
  const double lo = percentile(sample, 0.5), hi = percentile(sample, 99.5);
  const double scale = hi > lo ? 255.0 / (hi - lo) : 0.0;

  // Panels: (rows axis, cols axis, fixed axis); axis 0 (k) drawn bottom-up.
  struct Panel {
    int rows_ax, cols_ax, fixed_ax;
  };
  const Panel panels[3] = {{1, 2, 0}, {0, 2, 1}, {0, 1, 2}};
  const int64_t dims[3] = {K, J, I};
  double extent = 0;
  for (int d = 0; d < 3; ++d) extent = std::max(extent, (double)dims[d] * spacing[d]);
  const double px = extent > 0 ? extent / 384.0 : 1.0;  // millimetres per pixel: the longest extent ~384 px
  const int64_t gap = 4;
  int64_t W = 0, H = 0;
  int64_t pw[3], ph[3];
  for (int p = 0; p < 3; ++p) {
    ph[p] = std::max<int64_t>(1, std::llround((double)dims[panels[p].rows_ax] * spacing[panels[p].rows_ax] / px));
    pw[p] = std::max<int64_t>(1, std::llround((double)dims[panels[p].cols_ax] * spacing[panels[p].cols_ax] / px));
    W += pw[p] + (p ? gap : 0);
    H = std::max(H, ph[p]);
  }
  RgbImage out;
  out.width = W;
  out.height = H;
  out.rgb.assign((size_t)(W * H * 3), 0);
  int64_t x0 = 0;
  for (int p = 0; p < 3; ++p) {
    const Panel& pn = panels[p];
    const int64_t nr = dims[pn.rows_ax], nc = dims[pn.cols_ax];
    for (int64_t y = 0; y < ph[p]; ++y) {
      int64_t r = std::min(nr - 1, (int64_t)((double)y * (double)nr / (double)ph[p]));
      if (pn.rows_ax == 0) r = nr - 1 - r;  // superior (high k) at the top
      for (int64_t x = 0; x < pw[p]; ++x) {
        const int64_t c = std::min(nc - 1, (int64_t)((double)x * (double)nc / (double)pw[p]));
        int64_t idx[3];
        idx[pn.fixed_ax] = dims[pn.fixed_ax] / 2;
        idx[pn.rows_ax] = r;
        idx[pn.cols_ax] = c;
        const int64_t v = (idx[0] * J + idx[1]) * I + idx[2];
        const double g = std::clamp(((double)image.data<float>()[v] - lo) * scale, 0.0, 255.0);
        double rgb[3] = {g, g, g};
        const int l = label_at(labels, v);
        if (l > 0) {
          const auto col = label_colour(l);
          for (int k = 0; k < 3; ++k) rgb[k] = 0.55 * rgb[k] + 0.45 * col[k];
        }
        uint8_t* o = out.rgb.data() + (y * W + x0 + x) * 3;
        for (int k = 0; k < 3; ++k) o[k] = (uint8_t)std::lround(rgb[k]);
      }
    }
    x0 += pw[p] + gap;
  }
  return out;
}

void write_preview_png(const std::string& path, const Tensor& image, const Tensor& labels, const Spacing& spacing) {
  RgbImage im = render_preview(image, labels, spacing);
  const std::string tmp = path + ".tmp" + std::to_string((long)::getpid()) + ".png";
  png_image pi{};
  pi.version = PNG_IMAGE_VERSION;
  pi.width = (png_uint_32)im.width;
  pi.height = (png_uint_32)im.height;
  pi.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&pi, tmp.c_str(), 0, im.rgb.data(), (png_int_32)(im.width * 3), nullptr)) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    seg_fail(ErrorCode::IoError, "cannot write preview '" + path + "': " + std::string(pi.message));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    seg_fail(ErrorCode::IoError, "cannot rename '" + tmp + "' to '" + path + "'");
  }
}

}  // namespace kiln::seg
