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

// The fp16 Gaussian importance map (as uint16 half bits), shape = tile, peak 10 at tile//2, zeros replaced by
// the smallest non-zero value of the map.
Tensor gaussian_map_fp16(const Shape3& tile, double sigma_scale = 1.0 / 8, double value_scaling = 10.0);

struct SlidingWindowOptions {
  double step_size = 0.5;
  bool use_gaussian = true;
  std::vector<int> mirror_axes;  // spatial axes 0..2 (network order); empty = no mirroring
  int max_batch = 8;             // network evaluations per Session::run (mirrored views batched)
  std::function<void(int done, int total)> progress;  // called after each tile
};

// One fold: returns fp16 logits (as Float16 tensor) (K, X, Y, Z) for data (C, X, Y, Z) float32, with the
// padding removed. The session's input must accept (N, C, patch...) float32.
Tensor predict_sliding_window(Session& net, const Tensor& data, const Shape3& patch, const SlidingWindowOptions& opt);

// Folds in order: fp16 sum then fp16 division by the number of folds.
Tensor average_folds_fp16(const std::vector<Tensor>& fold_logits);

}  // namespace kiln::seg
