// Post-processing: keep only the largest 26-connected component of each label set (segmentation-pipeline.md 16).
#pragma once
#include "pipeline/seg/model_folder.h"

namespace kiln::seg {

// Connected components with full (26-)connectivity of a binary mask (k, j, i): labels 1..n, 0 = background.
// Returns n; `labels` gets int32 component ids.
int64_t connected_components_26(const uint8_t* mask, const Shape3& shape, std::vector<int32_t>* labels);

// Applies the steps in order to a label map (uint8/uint16, reader order) in place: for each step, mask = union
// of the step's labels/regions; all components of maximal size are kept, the rest of the mask set to 0.
void apply_postprocessing(Tensor& seg, const std::vector<PostprocessStep>& steps);

}  // namespace kiln::seg
