// Preprocessing stages: transpose, crop to non-zero, intensity normalisation (segmentation-pipeline.md 3-5).
#pragma once
#include <map>

#include "pipeline/seg/volume.h"

namespace kiln::seg {

// data (C, a0, a1, a2) -> (C, a[perm[0]], a[perm[1]], a[perm[2]]). Also used with transpose_backward.
Tensor transpose_volume(const Tensor& data, const std::array<int, 3>& perm);
Spacing transpose_spacing(const Spacing& s, const std::array<int, 3>& perm);

struct CropResult {
  Tensor data;   // float32 (C, ...) cropped to bbox
  Tensor mask;   // uint8 (X, Y, Z) cropped: 1 inside the hole-filled non-zero mask (nnU-Net seg >= 0), else 0
  BBox bbox;     // in the uncropped network-order grid
};
// Non-zero over all channels, scipy binary_fill_holes (6-connected background), half-open bbox (whole image if empty).
CropResult crop_to_nonzero(const Tensor& data);

struct IntensityProperties {  // plans foreground_intensity_properties_per_channel[c]
  double mean = 0, std = 0, percentile_00_5 = 0, percentile_99_5 = 0;
};
// One channel in place, per plans normalization_schemes[c]: "CTNormalization", "ZScoreNormalization",
// "RescaleTo01Normalization", "RGBTo01Normalization", "NoNormalization". Unknown names -> Unsupported.
// `mask` (same spatial shape, 1 = inside) is used only by ZScore with use_mask_for_norm.
void normalize_channel(float* x, int64_t n, const std::string& scheme, bool use_mask_for_norm, const uint8_t* mask,
                       const IntensityProperties& props);

}  // namespace kiln::seg
