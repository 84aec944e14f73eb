// Sliding-window inference of one network over a preprocessed volume, nnU-Net style
// (segmentation-pipeline.md 7-11): padding to the patch, tile placement, fp16 Gaussian weighting,
// mirroring test-time augmentation, fp16 accumulation, fold ensembling.
#pragma once
#include <functional>
#include <memory>

#include "kiln/session.h"
#include "pipeline/seg/volume.h"

namespace kiln::seg {

// compute_steps_for_sliding_window for one axis.
std::vector<int64_t> compute_steps(int64_t image, int64_t tile, double step_size);

// Where the tiles of one sliding window go (sections 7-8) for a volume of spatial `shape` (network order).
// `patch` has 3 values (3d configuration) or 2 (2d configuration: every index along axis 0 is its own 2D image,
// padding and steps apply to axes 1 and 2 only, tiles are enumerated slice, then axis 1, then axis 2).
struct TileLayout {
  Shape3 tile{};                // 3D extent of one tile: the patch, or (1, p0, p1) for a 2d configuration
  Shape3 padded{};              // spatial shape after zero padding up to the patch
  Shape3 pad_lo{};              // padding before the data per axis (the odd extra voxel goes after)
  std::vector<Shape3> starts;   // tile origins in the padded grid, in nnU-Net's enumeration order
  bool per_slice = false;       // 2d configuration
};
TileLayout plan_tiles(const Shape3& shape, const std::vector<int64_t>& patch, double step_size);

// The checkpoint's mirroring axes (axes of the patch, 0..patch_dims-1) as spatial axes 0..2 of the (C, X, Y, Z)
// volume: unchanged for 3d; shifted by one for 2d, whose image of slice s is volume[:, s] (nnU-Net flips the
// network input (1, C, p0, p1) along axes + 2).
std::vector<int> volume_mirror_axes(const std::vector<int>& patch_axes, size_t patch_dims);

// The fp16 Gaussian importance map (as uint16 half bits), shape = tile, peak 10 at tile//2, zeros replaced by
// the smallest non-zero value of the map.
Tensor gaussian_map_fp16(const Shape3& tile, double sigma_scale = 1.0 / 8, double value_scaling = 10.0);

struct SlidingWindowOptions {
  double step_size = 0.5;
  bool use_gaussian = true;
  std::vector<int> mirror_axes;  // axes of the patch: 0..2 (network order), 0..1 for the 2d variant; empty = none
  int max_batch = 8;             // network evaluations per Session::run (mirrored views batched)
  std::function<void(int done, int total)> progress;  // called after each tile
};

// One fold: returns fp16 logits (as Float16 tensor) (K, X, Y, Z) for data (C, X, Y, Z) float32, with the
// padding removed. The session's input must accept (N, C, patch...) float32.
Tensor predict_sliding_window(Session& net, const Tensor& data, const Shape3& patch, const SlidingWindowOptions& opt);

// A 2d configuration on a 3D volume: fp16 logits (K, X, Y, Z) for data (C, X, Y, Z), each slice data[:, s] predicted
// as a 2D image with (p0, p1) tiles and accumulated into logits[:, s] (sections 8-10). The session's input must
// accept (N, C, p0, p1) float32 and return (N, K, p0, p1). opt.mirror_axes are axes of the 2D patch (0, 1).
Tensor predict_sliding_window_2d(Session& net, const Tensor& data, const std::array<int64_t, 2>& patch,
                                 const SlidingWindowOptions& opt);

// Folds in order: fp16 sum then fp16 division by the number of folds.
Tensor average_folds_fp16(const std::vector<Tensor>& fold_logits);

}  // namespace kiln::seg
