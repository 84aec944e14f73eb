// Shared types of the nnU-Net segmentation pipeline (kiln::seg). Stage functions live in their own headers:
//   nifti.h (read/write images), model_folder.h (plans/dataset/checkpoint/postprocessing), pickle.h,
//   preprocess.h (transpose, crop, normalise), resample.h, sliding_window.h (tiles, Gaussian, mirroring,
//   fp16 accumulation, folds), export.h (logits -> segmentation/probabilities, un-crop), postprocess.h.
// Axis conventions follow ../shared/segmentation-pipeline.md: "reader order" = [k, j, i] of the NIfTI file;
// "network order" = reader order permuted by transpose_forward. Volumes are (C, X, Y, Z) row-major.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/status.h"
#include "kiln/tensor.h"

namespace kiln::seg {

using Spacing = std::array<double, 3>;  // per spatial axis, same order as the array axes
using Shape3 = std::array<int64_t, 3>;

// Half-open box per spatial axis: [lo[d], hi[d]).
struct BBox {
  Shape3 lo{0, 0, 0}, hi{0, 0, 0};
  Shape3 size() const { return {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]}; }
};

// Errors of the pipeline are kiln::Error with ErrorCode::InvalidArgument (bad input data/files),
// ErrorCode::InvalidModel (bad model folder) or ErrorCode::Unsupported (a plan option kiln does not implement).
[[noreturn]] inline void seg_fail(ErrorCode code, const std::string& msg) { throw Error(code, msg); }

inline Shape3 spatial_shape(const Tensor& cxyz) { return {cxyz.dim(1), cxyz.dim(2), cxyz.dim(3)}; }

}  // namespace kiln::seg
