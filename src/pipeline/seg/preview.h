// A PNG preview of a segmentation: the middle slice along each axis of the image (grey, windowed to the
// 0.5-99.5 percentiles of the volume) with the label map overlaid in one colour per label.
#pragma once
#include "pipeline/seg/volume.h"

namespace kiln::seg {

// `image` float32 (k, j, i) (e.g. the first channel, reader order), `labels` uint8/uint16 of the same shape,
// `spacing` reader order (slices are stretched to square millimetres, nearest neighbour). Panels left to right:
// slice k = K/2 (rows j, columns i), slice j = J/2 (rows k, columns i), slice i = I/2 (rows k, columns j); rows
// with a higher index are drawn higher for the k axis. Written atomically (temporary file + rename) with libpng.
void write_preview_png(const std::string& path, const Tensor& image, const Tensor& labels, const Spacing& spacing);

// The RGB pixels of that picture (height x width x 3), for tests.
struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
};
RgbImage render_preview(const Tensor& image, const Tensor& labels, const Spacing& spacing);

// The overlay colour of a label (label 0 has none).
std::array<uint8_t, 3> label_colour(int label);

}  // namespace kiln::seg
