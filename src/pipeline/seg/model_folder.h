// An nnU-Net trained-model folder: plans.json, dataset.json, fold_X/{checkpoint_final.pth, model.onnx},
// crossval_results_*/postprocessing.pkl (segmentation-pipeline.md 1, 16).
#pragma once
#include <map>
#include <optional>

#include "pipeline/seg/preprocess.h"
#include "pipeline/seg/resample.h"

namespace kiln::seg {

struct PostprocessStep {               // remove_all_but_largest_component_from_segmentation
  std::vector<std::vector<int>> labels_or_regions;  // each entry: one label, or a region (several labels)
};

struct ModelConfig {
  std::string folder;
  std::string configuration;            // from fold 0's checkpoint init_args['configuration']
  std::vector<int> folds;
  std::vector<std::string> onnx_paths;  // per fold: fold_X/model.onnx
  // plans (configuration resolved through inherits_from)
  std::array<int, 3> transpose_forward{0, 1, 2}, transpose_backward{0, 1, 2};
  std::vector<int64_t> patch_size;      // 3 values (3d) or 2 (2d)
  std::vector<double> spacing;          // target spacing, network order (3 or 2 values)
  bool is_2d = false;
  std::vector<std::string> normalization_schemes;
  std::vector<bool> use_mask_for_norm;
  std::map<int, IntensityProperties> intensity_properties;  // by channel
  ResampleOptions resample_data, resample_probabilities;    // from resampling_fn_*_kwargs (functions validated)
  std::string image_reader_writer;      // NibabelIO, SimpleITKIO (both read via our NIfTI reader)
  // dataset
  int num_input_channels = 0;
  std::string file_ending = ".nii.gz";
  std::vector<int> label_values;        // output channel c -> label value (softmax case)
  bool has_regions = false;
  std::vector<std::vector<int>> regions;  // region-based: output channel c -> labels of region c
  std::vector<int> regions_class_order;
  // checkpoint
  std::vector<int> mirror_axes;         // inference_allowed_mirroring_axes (empty: no mirroring)
  // postprocessing (empty if none found or not requested)
  std::vector<PostprocessStep> postprocessing;
  int num_outputs() const { return has_regions ? (int)regions.size() : (int)label_values.size(); }
};

// Reads and validates everything; `folds` empty = auto-detect fold_* folders with a checkpoint.
// Refuses (ErrorCode::Unsupported, naming the field) resampling functions, normalisers, readers or
// architectures kiln does not implement; InvalidModel for missing/malformed files, naming them.
ModelConfig load_model_folder(const std::string& folder, const std::vector<int>& folds, const std::string& checkpoint_name = "checkpoint_final.pth");

// A case: channel files <case>_0000<ending>, <case>_0001<ending>, ...
struct CaseFiles {
  std::string id;
  std::vector<std::string> channels;
};
// `input` is a folder of cases or one channel file of a single case; errors name missing channel files.
std::vector<CaseFiles> find_cases(const std::string& input, const std::string& file_ending, int num_channels);

}  // namespace kiln::seg
