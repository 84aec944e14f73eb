// Resampling exactly as nnU-Net's default resample_data_or_seg_to_shape (segmentation-pipeline.md 6).
#pragma once
#include <optional>

#include "pipeline/seg/volume.h"

namespace kiln::seg {

// round_half_even(old_spacing / new_spacing * shape) in double.
Shape3 compute_new_shape(const Shape3& shape, const Spacing& old_spacing, const Spacing& new_spacing);

struct SeparateZ {
  bool enabled = false;
  int axis = -1;
};
// determine_do_sep_z_and_axis with ANISO_THRESHOLD 3 (strict >), force_separate_z optional.
SeparateZ decide_separate_z(const Spacing& current, const Spacing& target, std::optional<bool> force_separate_z);

struct ResampleOptions {
  int order = 3;      // in-plane / isotropic spline order: 0, 1 or 3
  int order_z = 0;    // across slices when separate-z: 0 or 1
  std::optional<bool> force_separate_z;
};

// data: (C, X, Y, Z), float32 or float16. Returns a tensor of the same dtype and `new_shape`; computed in double,
// per channel, clipped to the input's min/max (per channel; per slice for the separate-z in-plane pass) as
// skimage.resize does. Unchanged shape returns the input as is.
Tensor resample_to_shape(const Tensor& data, const Shape3& new_shape, const Spacing& current_spacing,
                         const Spacing& new_spacing, const ResampleOptions& opt);

}  // namespace kiln::seg
