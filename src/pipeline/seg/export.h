// Logits back to the original image (segmentation-pipeline.md 12-14).
#pragma once
#include "pipeline/seg/model_folder.h"

namespace kiln::seg {

struct CaseGeometry {                 // what preprocessing remembers about a case
  Shape3 shape_before_cropping{};     // network order
  BBox bbox;                          // crop box in that grid
  Shape3 shape_after_cropping{};      // = bbox.size()
  Spacing original_spacing{};         // network order
};

struct ExportResult {
  Tensor segmentation;                // uint8 or uint16, reader order (k, j, i)
  Tensor probabilities;               // float32 (K, k, j, i) reader order; empty unless requested
};

// fp16 logits (K, X', Y', Z') on the preprocessed grid -> resample back (probabilities resampling options,
// current = plans spacing, new = original spacing; stored fp16) -> softmax/argmax or sigmoid regions with
// regions_class_order -> un-crop (background outside; probabilities: channel 0 = 1 outside) -> transpose back.
ExportResult export_prediction(const Tensor& logits_fp16, const ModelConfig& cfg, const CaseGeometry& geom,
                               bool want_probabilities);

}  // namespace kiln::seg
